"""A run's recipe, and the traces of recent runs shared by every visitor.

A run is fully determined by its recipe: the model, the prompt, the settings (seed included), an intervention
and any forced characters; decoding it again gives the same text and the same trace, bit for bit (the decode
loop is batch-invariant and draws from the seed alone). So the page keeps each visitor's recipe (a few hundred
bytes) between events, not the trace (about 37 MB for 2,000 characters of a 3 x 512 GRU), and asks RunCache for
the trace when a figure needs it: a recent run's trace is still there; an older one is written again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cache import BoundedCache
from ..decoding.interventions import Intervention
from ..decoding.loop import DecodeRequest, step_weights
from ..decoding.sampling import DecodeSettings
from ..decoding.trace import Trace
from .compute import on_compute_thread


@dataclass(frozen=True)
class Recipe:
    model: object  # the page's model key (hashable)
    prompt: str
    settings: DecodeSettings
    intervention: Intervention | None = None
    forced: tuple[tuple[int, int], ...] = ()

    def request(self, model) -> DecodeRequest:
        return DecodeRequest(tuple(model.tokenizer.encode(self.prompt)), self.settings, self.intervention, self.forced)


def nbytes(value) -> int:
    return sum(t.numel() * t.element_size() for t in vars(value).values() if isinstance(t, torch.Tensor))


class RunCache:
    """Recipe -> what makes its trace (a finished Job of the decode server, or the Trace once built), most
    recent first, at most `max_bytes` in all (always at least the newest run)."""

    def __init__(self, server, max_bytes: int = 64 * 2**20):
        self.server, self.max_bytes = server, max_bytes
        self.entries: BoundedCache[Recipe, object] = BoundedCache(max_weight=max_bytes, weigh=size)

    def has(self, recipe: Recipe) -> bool:
        return recipe in self.entries

    def clear(self) -> None:
        self.entries.clear()

    def keep(self, recipe: Recipe, job) -> None:
        """Remember a finished job's run (its records; the gates are computed when first asked for). A run kept
        already stays as it is (perhaps with its Trace built): the same recipe writes the same run."""
        self.entries.setdefault(recipe, job)

    def text(self, recipe: Recipe) -> str | None:
        """The text of a run kept here (written before, by anyone), None if it is not kept."""
        entry = self.entries.get(recipe)
        if entry is None or isinstance(entry, Trace):
            return None if entry is None else entry.text
        return entry.text if entry.done.is_set() and entry.error is None else None

    def trace(self, recipe: Recipe, model) -> Trace:
        """The run's Trace: from the cache, or written again through the decode server."""
        entry = self.entries.get(recipe)
        if entry is None:
            entry = self.server.submit(model, recipe.request(model))
        if not isinstance(entry, Trace):
            entry = self.entries.put(recipe, build(entry))
        return entry


def size(entry) -> int:
    if isinstance(entry, Trace):
        return nbytes(entry)
    row = entry.row
    return nbytes(row) if row is not None and not isinstance(row, Trace) else 0


def build(job) -> Trace:
    """The Trace of a finished server job (built on the compute thread)."""
    row = job.result()
    if isinstance(row, Trace):
        return row
    return on_compute_thread(row.trace)(job.model, step_weights(job.model))
