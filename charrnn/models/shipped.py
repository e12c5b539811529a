"""Where the shipped models are: weights/NAME in a checkout, charrnn/shipped/NAME in an installed package.

pyproject.toml maps the checkout's weights/ folder to the package charrnn.shipped (setuptools package-dir), so
a wheel carries every file of each shipped folder without the repository moving or copying them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED_PACKAGE = "charrnn.shipped"
CHECKOUT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_MODEL_NAME = "tiny-shakespeare"
# The 3 x 512 GRU (the default), a GRU and an LSTM of 2 x 256 trained alike (to compare), the bigram baseline.
SHIPPED_NAMES = ("tiny-shakespeare", "gru-2x256", "lstm-2x256", "bigram")


def shipped_model(name: str = DEFAULT_MODEL_NAME) -> str:
    """The folder of the shipped model `name` (one of SHIPPED_NAMES), as a path string."""
    try:
        # Installed (or installed editable): the package's own copy. In a checkout there is no charrnn/shipped,
        # so the import fails and weights/ next to the package is the folder.
        folder = resources.files(SHIPPED_PACKAGE) / name
    except ModuleNotFoundError:
        folder = CHECKOUT_WEIGHTS / name
    return str(folder)


def shipped_folder() -> str:
    """The folder that holds every shipped model (the checkout's weights/, or the installed charrnn/shipped)."""
    return str(Path(shipped_model()).parent)
