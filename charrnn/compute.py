"""The compute thread: the one thread that runs all of the page's torch work."""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

# The page runs all of its torch work on one thread. With OpenMP (libgomp, as in the CPU wheels) every thread
# that runs a parallel op keeps its own team of worker threads; once there are more of those than cores, libgomp
# stops spin-waiting between parallel regions and every decode step waits for its workers to wake up. Gradio
# serves each request on a pool thread: decoding there ran 2.2x slower on the 2-core machine (0.70 s against
# 0.30 s for 300 characters) until all of it went through this one thread.
_compute = threading.local()
_compute_executor: ThreadPoolExecutor | None = None
_compute_lock = threading.Lock()


def _mark_compute_thread() -> None:
    _compute.is_it = True


def _forget_compute_thread() -> None:  # a forked child (a ZeroGPU worker) has no copy of the thread
    global _compute_executor
    _compute_executor = None


os.register_at_fork(after_in_child=_forget_compute_thread)


def on_compute_thread(fn):
    """fn, run on the page's one compute thread (directly when already there)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        global _compute_executor
        if getattr(_compute, "is_it", False):
            return fn(*args, **kwargs)
        with _compute_lock:
            if _compute_executor is None:
                _compute_executor = ThreadPoolExecutor(1, "charrnn-compute", initializer=_mark_compute_thread)
            executor = _compute_executor
        return executor.submit(fn, *args, **kwargs).result()

    return run
