"""The package: a wheel built from the checkout carries the code and every file of the shipped models, its
dependencies are requirements.txt's, and its `charrnn` command works from a folder far from the checkout."""

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from charrnn import DecodeSettings

from conftest import ROOT, free_port

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SHIPPED_PATTERNS = PYPROJECT["tool"]["setuptools"]["package-data"]["charrnn.shipped"]
SHIPPED_FOLDERS = sorted({pattern.split("/")[0] for pattern in SHIPPED_PATTERNS})


def checkout_files(folder: Path) -> list[str]:
    """The files under `folder` (relative paths), leaving out Python's caches."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The wheel, built from a copy of what the build reads (so nothing is written into the checkout) and
    installed with pip --target into a folder of its own. No network: --no-index, --no-build-isolation."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "charrnn", source / "charrnn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for folder in SHIPPED_FOLDERS:  # only the shipped models: weights/ may hold local training runs too
        shutil.copytree(ROOT / "weights" / folder, source / "weights" / folder)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    # Paths are absolute: a bare name would be looked up on the package index.
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(work / "dist"),
                    str(source)], check=True, capture_output=True, timeout=300, cwd=work)
    wheel, = (work / "dist").glob("charrnn-*.whl")
    site = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300, cwd=work)
    elsewhere = work / "elsewhere"  # the working directory of every command: no checkout in sight
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("CHARRNN_MODEL", None)
    return {"wheel": wheel, "site": site, "command": site / "bin" / "charrnn", "cwd": elsewhere, "env": env}


def run_installed(built, *args, timeout=300):
    return subprocess.run([str(built["command"]), *args], capture_output=True, text=True, env=built["env"],
                          cwd=built["cwd"], timeout=timeout)


def test_the_wheel_carries_the_code_and_every_file_of_each_shipped_model(built):
    assert {"tiny-shakespeare", "gru-2x256", "lstm-2x256", "bigram"} <= set(SHIPPED_FOLDERS)
    with zipfile.ZipFile(built["wheel"]) as wheel:
        names = set(wheel.namelist())
    for path in checkout_files(ROOT / "charrnn"):
        assert f"charrnn/{path}" in names, path
    shipped = {n for n in names if n.startswith("charrnn/shipped/")}
    assert shipped == {f"charrnn/shipped/{folder}/{path}" for folder in SHIPPED_FOLDERS
                       for path in checkout_files(ROOT / "weights" / folder)}
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(built["wheel"]) as wheel:
        assert "charrnn = charrnn.cli:main" in wheel.read(entry_points).decode()


def test_the_package_depends_on_what_requirements_txt_lists(built):
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    listed = {str(Requirement(line)) for line in lines if line}
    with zipfile.ZipFile(built["wheel"]) as wheel:
        metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    declared = {str(Requirement(r)) for r in Parser().parsestr(metadata).get_all("Requires-Dist")}
    assert declared == listed and "gradio<7,>=6.31" in declared


def test_the_installed_command_samples_what_the_library_writes(built, shipped):
    where = subprocess.run([sys.executable, "-c", "import charrnn, charrnn.page.views as p; "
                            "print(charrnn.__file__); print(p.SHIPPED_MODEL)"],
                           capture_output=True, text=True, env=built["env"], cwd=built["cwd"], timeout=300)
    module, model = where.stdout.split()
    assert Path(module).is_relative_to(built["site"])
    assert Path(model) == built["site"] / "charrnn" / "shipped" / "tiny-shakespeare"

    result = run_installed(built, "sample", "--prompt", "JULIET:", "--temperature", "0.9", "--top-p", "0.9",
                           "--seed", "5", "--max-new-chars", "80", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout == shipped.generate("JULIET:", DecodeSettings(80, 0.9, 0, 0.9, 5)).text + "\n"

    usage = run_installed(built, "--help")
    assert usage.returncode == 0 and usage.stdout.startswith("usage: charrnn ")
    for command in ("train", "train-bigram", "sample", "evaluate", "push", "convert", "app"):
        assert command in usage.stdout
    app = run_installed(built, "app", "--help")
    assert app.returncode == 0
    for flag in ("--model", "--host", "--port", "--share"):
        assert flag in app.stdout


def test_the_installed_app_starts_with_the_packaged_model(built):
    port = free_port()
    app = subprocess.Popen([str(built["command"]), "app", "--host", "127.0.0.1", "--port", str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=built["env"],
                           cwd=built["cwd"])
    try:
        config, deadline = None, time.monotonic() + 240
        while config is None and app.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    config = json.loads(response.read())
            except OSError:
                time.sleep(1)
        assert config is not None, f"the page did not start (exit {app.poll()})"
        # The page opens on the model shipped inside the installed package (its description names the folder).
        assert str(built["site"] / "charrnn" / "shipped" / "tiny-shakespeare") in json.dumps(config)
    finally:
        app.terminate()
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
