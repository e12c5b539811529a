import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from charrnn import CharRNN

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SHIPPED = ROOT / "weights" / "tiny-shakespeare"
SHAKESPEARE_VOCAB = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The kernel this machine chooses for decoding is kept in a file that every process reads (charrnn.decoding.layout):
# the tests' own, so that a run starts from a fresh choice and its CLI and page subprocesses share it.
os.environ.setdefault("CHARRNN_CACHE_DIR", tempfile.mkdtemp(prefix="charrnn-tests-cache-"))


@pytest.fixture(scope="session")
def shipped() -> CharRNN:
    return CharRNN.from_pretrained(SHIPPED, device="cpu")


def make_tiny(seed: int = 0, hidden_size: int = 16, num_layers: int = 2) -> CharRNN:
    """A small randomly initialised model over the Shakespeare vocabulary, stored in float32."""
    torch.manual_seed(seed)
    return CharRNN(SHAKESPEARE_VOCAB, embedding_dim=8, hidden_size=hidden_size, num_layers=num_layers,
                   dropout=0.1, save_dtype="float32").eval()


@pytest.fixture
def tiny() -> CharRNN:
    return make_tiny()


def run_python(code: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (huggingface_hub reads HF_* variables when it is imported)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=ROOT)


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "charrnn", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def evaluate_on_validation(model_dir) -> dict:
    """`charrnn evaluate` of a model folder on the corpus's validation part, checked to be that part."""
    import json

    result = run_cli("evaluate", "--model", str(model_dir), "--text", str(CORPUS), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["part"] == "val" and measured["chars"] == 111_540 and measured["window"] == 256
    return measured


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_url():
    """The playground, launched once on a loopback port for the HTTP and browser tests."""
    import app

    _, url, _ = app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                                quiet=True, **app.LAUNCH)
    yield url.rstrip("/")
    app.demo.close()


@pytest.fixture
def client(app_url):
    """A gradio_client session of its own on the launched page."""
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    yield client
    client.close()


ARTIFACTS = ROOT / "artifacts"  # screenshots the browser tests leave (ignored by git)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's package) driven by Playwright, one for every browser test."""
    from playwright.sync_api import sync_playwright

    from bench.browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, "report_" + report.when, report)
    return report


PAGE_STATE = """() => {
  const text = s => (document.querySelector(s) || {}).innerText;
  const plots = Object.fromEntries(['probabilities', 'heatmap-1', 'heatmap-2', 'heatmap-3', 'saturation'].map(id => {
    const p = document.querySelector(`#${id} .js-plotly-plot`);
    return [id, !p ? 'none' : !p._fullLayout ? 'not drawn' : p.charrnnBars ? `${p.charrnnBars.steps} steps`
      : p.data && p.data[0] && p.data[0].x ? `${p.data[0].x.length} columns` : 'drawn'];
  }));
  return {text: (document.querySelector('#generated-text textarea') || {}).value, status: text('#status'),
          toasts: Array.from(document.querySelectorAll('.toast-body')).map(t => t.innerText), plots,
          generating: Array.from(document.querySelectorAll('.generating')).map(e => e.id || e.className),
          draws: window.Plotly && window.Plotly.charrnnDrawOnce};
}"""


@pytest.fixture
def open_page(browser, app_url, request):
    """open_page(query="") -> a page at the app's address with that query, once its first plot is drawn; the
    console's errors and the page's uncaught errors collect in page.errors. When the test fails, each page's
    state (text, status line, messages) is printed and its screenshot left in artifacts/."""
    pages = []

    def open_at(query=""):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.errors = []
        page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        pages.append(page)
        page.goto(app_url + "/" + query)
        page.wait_for_selector("#probabilities .js-plotly-plot", timeout=60_000)
        return page

    yield open_at
    report = getattr(request.node, "report_call", None)
    for number, page in enumerate(pages):
        if report is not None and report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / f"failed-{request.node.name}-{number}.png"
            try:
                page.screenshot(path=str(shot), full_page=True)
                print(f"page {number} ({page.url}): {page.evaluate(PAGE_STATE)}; errors {page.errors}; {shot}")
            except Exception as e:  # noqa: BLE001 - a page that crashed: say so and close the others
                print(f"page {number} ({page.url}): its state cannot be read ({e})")
        page.close()


@pytest.fixture
def page(open_page):
    return open_page()


@pytest.fixture(scope="session")
def shipped_lstm():
    """The shipped 2 x 256 LSTM (weights/lstm-2x256)."""
    from charrnn.models import CharLSTM

    return CharLSTM.from_pretrained(ROOT / "weights" / "lstm-2x256", device="cpu")
