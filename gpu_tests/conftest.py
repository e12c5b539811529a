"""Tests that need a CUDA GPU: run them with `python -m pytest gpu_tests` on a machine that has one.

They are kept out of the default test run (tests/) so that a CPU-only CI neither runs nor skips them; here
they fail loudly if CUDA is missing rather than pass vacuously.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        raise pytest.UsageError("gpu_tests need a CUDA GPU; the CPU test suite is tests/")


@pytest.fixture(scope="session")
def cpu_model():
    from charrnn import CharRNN

    return CharRNN.from_pretrained(ROOT / "weights" / "tiny-shakespeare", device="cpu")


@pytest.fixture(scope="session")
def cuda_model():
    from charrnn import CharRNN

    return CharRNN.from_pretrained(ROOT / "weights" / "tiny-shakespeare", device="cuda")
