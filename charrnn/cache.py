"""BoundedCache: the one least-recently-used cache of the package, safe to share between threads.

The page is public and long-lived, so everything it keeps per key (loaded models, their unit atlases, recent runs,
captured CUDA graphs) is bounded: by a number of entries, by a total weight (bytes), or both.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Callable, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Mapping[K, V]):
    """At most `size` entries and at most `max_weight` in all (each entry weighs `weigh(value)`), the least recently
    used dropped first; the newest entry always stays, however heavy. Reads and writes hold a lock for a moment only
    (never while a value is made). A read-only Mapping besides (iterating goes over a snapshot, oldest first)."""

    def __init__(self, size: int | None = None, *, max_weight: float | None = None,
                 weigh: Callable[[V], float] | None = None):
        self.size, self.max_weight, self.weigh = size, max_weight, weigh
        self.entries: OrderedDict[K, V] = OrderedDict()
        self.lock = threading.Lock()

    def __getitem__(self, key: K) -> V:
        """The value for `key`, now the most recently used (KeyError if there is none)."""
        with self.lock:
            value = self.entries[key]
            self.entries.move_to_end(key)
            return value

    def __iter__(self):
        with self.lock:
            return iter(list(self.entries))

    def put(self, key: K, value: V) -> V:
        with self.lock:
            self.entries[key] = value
            self.entries.move_to_end(key)
            self._shrink()
        return value

    def setdefault(self, key: K, value: V) -> V:
        """The value kept for `key`: the one there already, else `value` (so callers racing to make one share the
        first)."""
        with self.lock:
            kept = self.entries.setdefault(key, value)
            self.entries.move_to_end(key)
            self._shrink()
        return kept

    def pop(self, key: K, default=None):
        with self.lock:
            return self.entries.pop(key, default)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()

    def __contains__(self, key) -> bool:  # without marking the entry used
        with self.lock:
            return key in self.entries

    def __len__(self) -> int:
        with self.lock:
            return len(self.entries)

    def _shrink(self) -> None:
        while len(self.entries) > 1 and (
                (self.size is not None and len(self.entries) > self.size)
                or (self.max_weight is not None and sum(map(self.weigh, self.entries.values())) > self.max_weight)):
            self.entries.popitem(last=False)
