"""The page's models: which sources a visitor may load, one load per model at a time, the most recently used kept.

The page is public: anyone can ask it to load anything. A local folder loads only from the app's own weights/ folder,
the folders listed in CHARRNN_MODEL_DIRS and the CHARRNN_MODEL folder, and anything else is refused with one message
that reads the same whether the path exists or not. Hub repo ids load as in the library, with the same size checks
(charrnn.models.loading). A load never holds up visitors who use a model already loaded: the download and the checks run
on the caller's thread and only the build runs on the compute thread; visitors asking for the same new model share
one load, and a failed load leaves the registry as it was.
"""

from __future__ import annotations

import os
import tempfile
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn
from huggingface_hub import constants
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..cache import BoundedCache
from ..models.config import shown
from ..models.loading import ModelLoadError, build_model, fetch_model
from ..models.shipped import shipped_folder
from .compute import on_compute_thread

ROOT = Path(__file__).resolve().parents[2]  # the app's folder: relative paths on the page are relative to it


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
    max_model_mb: the size limit of charrnn.models.loading (None: CHARRNN_MAX_MODEL_MB, else 200 MB).
    """

    def __init__(self, size: int = 4, device: str = "auto", *, allowed_dirs: list | None = None,
                 max_model_mb: float | None = None):
        self.size, self.device, self.max_model_mb = size, device, max_model_mb
        self.allowed_dirs = allowed_dirs
        self.models: BoundedCache[ModelKey, nn.Module] = BoundedCache(size)
        self.loading: dict[ModelKey, Future] = {}  # keys being loaded, each by the first visitor who asked
        self.lock = threading.Lock()  # guards `loading` and the moment a load ends; never held while loading

    def get(self, key: ModelKey) -> nn.Module:
        """The model for `key`, loaded on first use (ModelLoadError says why it cannot be)."""
        with self.lock:
            model = self.models.get(key)
            if model is not None:
                return model
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
            self.models.put(key, model)
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
