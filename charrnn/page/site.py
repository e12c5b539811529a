"""What every visitor of the page shares: the loaded models, the decode server, the recent runs' traces and
the run the page opens with."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.atlas import AtlasError, atlas_for
from ..cache import BoundedCache
from ..models.loading import ModelLoadError
from ..serving.compute import on_compute_thread
from ..serving.registry import ModelRegistry
from ..serving.runs import Recipe, RunCache
from ..serving.server import WAIT_S, DecodeServer, ServerLimits
from . import inputs, views
from .share import ExportFolder

START_S = 10.0  # how long a click's figures' event waits for its text's event to start the run
MAX_PLACES = 10_000  # visitors' latest runs remembered (a few hundred bytes each), the least recent forgotten
EXAMPLES = [
    ["ROMEO:\n", 300, 0.8, 0, 0.95, 1],
    ["First Citizen:\nBefore we proceed any further, hear me speak.\n\n", 400, 1.0, 0, 1.0, 7],
    ["KING RICHARD III:\nNow is the winter of our discontent\n", 300, 0, 0, 1.0, 0],
    ["JULIET:\nO Romeo, Romeo! ", 300, 1.2, 5, 1.0, 42],
    ["To be, or not to be", 200, 0.5, 0, 0.9, 3],
]


def return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the system. By default its threshold for serving a block from
    mmap rises to 32 MB once such a block is freed, after which the records of every run (about 13 MB for
    2,000 characters) come from the heap and keep the server's memory at its highest point after they are gone.
    A fixed threshold keeps the server's size to what it holds."""
    try:
        import ctypes

        M_MMAP_THRESHOLD = -3
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


@dataclass(frozen=True)
class UnitSummary:
    """What the page shows of a model's units beside its runs, from the atlas in its folder: the units' memory
    timescales [layers, H] and means [kinds, layers, H] over the reference text; or, without an atlas, why not."""

    timescale: np.ndarray | None = None
    mean: torch.Tensor | None = None
    missing: str | None = None
    kinds: tuple = ()  # the first axis of `mean`


class Site:
    def __init__(self, default_model: str | None = None, device: str = "auto", limits: ServerLimits | None = None):
        return_freed_memory()
        self.models = ModelRegistry(device=device)
        self.server = DecodeServer(limits)
        self.runs = RunCache(self.server)
        self.default_key = inputs.model_key(default_model or views.default_model(), None)
        self.default_model = self.models.get(self.default_key)
        # The page opens with the first example already written, so its figures show what to expect; its trace
        # is kept for as long as the page runs (the first run also chooses the decode layout for this machine).
        prompt, *settings = EXAMPLES[0]
        self.opening = Recipe(self.default_key, prompt, inputs.check_inputs(self.default_model, prompt, *settings))
        self.opening_trace = self.runs.trace(self.opening, self.default_model)
        self.exports = ExportFolder()
        self.unit_summaries = BoundedCache(2 * self.models.size)  # ModelKey -> UnitSummary, read once per model
        self.being_written: dict[Recipe, object] = {}  # runs whose text is streaming -> their Job
        self.latest = BoundedCache(MAX_PLACES)  # (session, place) -> the latest run asked for there (begin)
        self.changed = threading.Condition()

    def model(self, key):
        return self.models.get(key)

    def unit_summary(self, key) -> UnitSummary:
        """A loaded model's UnitSummary, its atlas read once per model (only the summary is kept)."""
        summary = self.unit_summaries.get(key)
        return summary if summary is not None else self.unit_summaries.setdefault(key, self.read_unit_summary(key))

    def read_unit_summary(self, key) -> UnitSummary:
        source, local = self.models.resolve(key.source)
        if not local:
            return UnitSummary(missing="it came from the Hugging Face Hub, and an atlas comes only with a local model "
                                       "folder (reference.txt and atlas.safetensors, written by python -m charrnn atlas)")
        try:
            atlas = on_compute_thread(atlas_for)(self.model(key), source, build=False)
        except (AtlasError, ModelLoadError, OSError) as e:
            return UnitSummary(missing=f"it has no usable unit atlas ({e})")
        return UnitSummary(atlas.timescale, atlas.mean.clone(), kinds=atlas.kinds)

    def timescale(self, key) -> np.ndarray | None:
        """The memory timescales [layers, H] of a loaded model's units, None without an atlas."""
        return self.unit_summary(key).timescale

    # ---- each visitor's latest run, per place on the page ----

    def begin(self, place, runs) -> None:
        """`runs` (a Recipe, or a tuple of them) are now the latest a visitor asked for at `place` (a session and
        a part of the page, e.g. (session hash, "write")); None says there is none (another model was loaded). A
        run that is no longer the latest at its place stops being streamed and drawn (is_latest), and its job is
        let go (a job nobody holds leaves the decode loop at the next step)."""
        if place is not None:
            with self.changed:
                self.latest.put(place, runs)
                self.changed.notify_all()

    def is_latest(self, place, runs) -> bool:
        return place is None or self.latest.get(place) == runs

    def became_latest(self, place, runs, timeout: float) -> bool:
        """Whether `runs` is, or within `timeout` seconds becomes, the latest at `place`. The figures' event of a
        click can reach the server before its text's event begins the run: it waits for that, not for ever."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not self.is_latest(place, runs):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
        return True

    @contextmanager
    def writing(self, recipe: Recipe, job):
        """While a visitor's run streams, its job can be found by its recipe (written, below)."""
        with self.changed:
            self.being_written[recipe] = job
            self.changed.notify_all()
        try:
            yield job
        finally:
            with self.changed:
                if self.being_written.get(recipe) is job:
                    del self.being_written[recipe]
                self.changed.notify_all()

    def written(self, recipe: Recipe, start_timeout: float = START_S):
        """The trace of a run another event of the same click is writing, as soon as it is written: the figures
        start then, not a round trip through the browser later. None when no run with this recipe starts within
        `start_timeout` seconds (it was refused), it fails or is cancelled, or it is not written within WAIT_S.
        Runs with the same recipe are the same run (decoding is deterministic): any of them will do."""
        deadline = time.monotonic() + start_timeout
        with self.changed:
            while (job := self.being_written.get(recipe)) is None and not self.runs.has(recipe):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.changed.wait(remaining)
        if job is not None:
            if not job.wait(WAIT_S) or job.error is not None or job.row is None:
                return None
            self.runs.keep(recipe, job)
        # kept just now, or before: if it has been evicted meanwhile, RunCache.trace writes it again
        return self.runs.trace(recipe, self.model(recipe.model))

    def trace(self, recipe: Recipe | None):
        """The trace of a visitor's last run (the opening run before their first)."""
        if recipe is None or recipe == self.opening:
            return self.opening_trace
        return self.runs.trace(recipe, self.model(recipe.model))
