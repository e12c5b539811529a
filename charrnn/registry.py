"""The page's models: which sources a visitor may load, one load per model at a time, the most recently used kept.

The page is public: anyone can ask it to load anything. A local folder loads only from the app's own weights/ folder,
the folders listed in CHARRNN_MODEL_DIRS and the CHARRNN_MODEL folder, and anything else is refused with one message
that reads the same whether the path exists or not. Hub repo ids load as in the library, with the same size checks
(charrnn.loading). A load never holds up visitors who use a model already loaded: the download and the checks run
on the caller's thread and only the build runs on the compute thread; visitors asking for the same new model share
one load, and a failed load leaves the registry as it was.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from huggingface_hub import constants
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .compute import on_compute_thread
from .config import shown
from .loading import build_model, fetch_model
from .model import CharRNN, ModelLoadError
from .shipped_models import shipped_folder
from .vocab import show_vocab

ROOT = Path(__file__).resolve().parents[1]  # the app's folder: relative paths on the page are relative to it
MAX_VOCAB_SHOWN = 300


@dataclass(frozen=True)
class ModelKey:
    source: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.source + (f" @ {self.revision}" if self.revision else "")


class ModelRegistry:
    """Loaded models by ModelKey (source as typed, revision), at most `size` kept, the least recently used dropped.

    allowed_dirs: the local folders models may load from (and from below); None reads them at every load from
    the app's weights/, CHARRNN_MODEL_DIRS (separated by ':') and CHARRNN_MODEL when that is a folder.
    max_model_mb: the size limit of charrnn.loading (None: CHARRNN_MAX_MODEL_MB, else 200 MB).
    """

    def __init__(self, size: int = 4, device: str = "auto", *, allowed_dirs: list | None = None,
                 max_model_mb: float | None = None):
        self.size, self.device, self.max_model_mb = size, device, max_model_mb
        self.allowed_dirs = allowed_dirs
        self.models: OrderedDict[ModelKey, nn.Module] = OrderedDict()
        self.loading: dict[ModelKey, Future] = {}  # keys being loaded, each by the first visitor who asked
        self.lock = threading.Lock()  # guards the two dicts only; never held while loading

    def get(self, key: ModelKey) -> nn.Module:
        """The model for `key`, loaded on first use (ModelLoadError says why it cannot be)."""
        with self.lock:
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            future = self.loading.get(key)
            first = future is None
            if first:
                future = self.loading[key] = Future()
        if not first:
            return future.result()  # another visitor is loading it: share that load and its outcome
        try:
            model = self.load(key)
        except BaseException as e:
            with self.lock:
                del self.loading[key]
            future.set_exception(e)
            raise
        with self.lock:
            del self.loading[key]
            self.models[key] = model
            while len(self.models) > self.size:
                self.models.popitem(last=False)
        future.set_result(model)
        return model

    def load(self, key: ModelKey) -> nn.Module:
        source, local = self.resolve(key.source)
        with download_folder(local) as cache_dir:
            fetched = fetch_model(source, key.revision, local=local, max_model_mb=self.max_model_mb,
                                  cache_dir=cache_dir)
            return on_compute_thread(build_model)(fetched, self.device)

    def resolve(self, source: str) -> tuple[str, bool]:
        """(what to load, whether it is a local folder): an allowed folder with '..' and symlinks resolved, or a
        Hub repo id. A source of the form owner/name is a folder if the app's folder has an allowed one there,
        else a repo id; any other source must be an allowed folder."""
        repo_id = is_repo_id(source)
        folder = self.allowed_folder(ROOT / source)  # an absolute source replaces ROOT
        if folder is not None:
            return str(folder), True
        if repo_id:
            return source, False
        raise ModelLoadError(
            f"{shown(source)} is not a Hub repo id (owner/name) and not a model folder this page can load: "
            "it loads local folders only from its weights/ folder and from the folders in CHARRNN_MODEL_DIRS")

    def allowed_folder(self, path: Path) -> Path | None:
        """The real path of `path` if that is a folder inside an allowed folder, else None. Whether anything exists
        outside the allowed folders is never looked at."""
        try:
            real = Path(os.path.realpath(path))
        except (OSError, ValueError):  # a name too long, a NUL byte
            return None
        if not any(real.is_relative_to(folder) for folder in self.allowed()):
            return None
        return real if real.is_dir() else None

    def allowed(self) -> list[Path]:
        folders = self.allowed_dirs
        if folders is None:
            folders = [shipped_folder(), *os.environ.get("CHARRNN_MODEL_DIRS", "").split(os.pathsep)]
            model = os.environ.get("CHARRNN_MODEL", "")
            folders += [model] if model and os.path.isdir(model) else []
        return [Path(os.path.realpath(folder)) for folder in folders if str(folder).strip()]


def is_repo_id(source: str) -> bool:
    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


@contextmanager
def download_folder(local: bool):
    """Where a Hub model is downloaded to: a temporary folder, removed once the model is built (the page keeps
    models in memory; a Hub cache would keep every repo anyone ever asked for on disk), or the Hub cache when
    offline, where nothing can be downloaded."""
    if local or constants.is_offline_mode():
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="charrnn-download-") as folder:
        yield folder


# ---- describing a model on the page ----

def device_description(model: nn.Module) -> str:
    device = next(model.parameters()).device
    if device.type == "cuda":
        return f"GPU ({torch.cuda.get_device_name(device)})"
    return f"CPU ({torch.get_num_threads()} threads)"


def describe_model(key: ModelKey, model: nn.Module) -> str:
    """The Model panel's Markdown: what the model is, how it was trained (what of that is well formed), and where
    it runs. The training figures come from config.json as published: anything malformed is left out."""
    parameters = sum(p.numel() for p in model.parameters())
    kind = f"GRU {model.num_layers} × {model.hidden_size}" if isinstance(model, CharRNN) else type(model).__name__
    facts = [kind, f"{parameters / 1e6:.1f}M parameters", *training_facts(getattr(model, "training_info", None))]
    vocab = show_vocab(model.vocab[:MAX_VOCAB_SHOWN])[1:-1]
    more = len(model.vocab) - MAX_VOCAB_SHOWN
    return (f"**{markdown_text(str(key))}**: {', '.join(facts)}. Sampling on **{device_description(model)}**.  \n"
            f"Vocabulary ({len(model.vocab):,} characters): {code_span(vocab)}"
            + (f" and {more:,} more" if more > 0 else ""))


def training_facts(training) -> list[str]:
    """What config.json's "training" says about the run, each fact only when its value is well formed."""
    if not isinstance(training, dict):
        return []
    facts = []
    loss = training.get("val_loss")
    if isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss) and loss >= 0:
        facts.append(f"validation loss {loss:.3f} nats/char")
    steps = training.get("steps_done")
    if isinstance(steps, int) and not isinstance(steps, bool) and 0 < steps < 10**12:
        facts.append(f"{steps:,} training steps")
    data = training.get("data")
    if short_line(data):
        facts.append(f"data {markdown_text(os.path.basename(data) or data)}")
    hardware = training.get("hardware")
    if short_line(hardware):
        facts.append(f"trained on {markdown_text(hardware)}")
    return facts


def short_line(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100 and value.isprintable()


def markdown_text(text: str) -> str:
    """text shown as itself in Markdown: no emphasis, links, images or HTML from a repo id or a config."""
    return re.sub(r"([\\`*_\[\]<>|!#~])", r"\\\1", text)


def code_span(text: str) -> str:
    """text as inline code, whatever backticks it holds."""
    longest = max(map(len, re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"`{text}`"
