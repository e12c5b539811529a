"""The compute thread: the one thread that runs all of the page's torch work.

With OpenMP (libgomp, as in the CPU wheels) every thread that runs a parallel op keeps its own team of worker
threads; once there are more of those than cores, libgomp stops spin-waiting between parallel regions and every
decode step waits for its workers to wake up. Gradio serves each request on a pool thread: decoding there ran
2.2x slower on the 2-core machine (0.70 s against 0.30 s for 300 characters) until all of it went through
this one thread.

The thread runs two kinds of work: tasks (a function call whose result someone waits for, e.g. building a
figure) and background work (the decode server's steps, which go on while it has rows). It alternates them,
one task then one round of background work, so neither starves the other.

A long job (a pass over a long text, an atlas) would hold the thread, and every visitor's writing with it, for
its whole duration. Such jobs are written as generators that do one piece of the work per step (yielding in
between) and return their result; run_in_pieces runs each step as a task of its own and, while the decode
server is writing, rests after each piece so that long jobs take at most a quarter of the thread.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Generator, TypeVar

T = TypeVar("T")
PIECES_SHARE = 0.25  # of the thread's time, for long jobs while background work (someone's writing) goes on

_local = threading.local()


class ComputeThread:
    def __init__(self):
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.background: list[Callable[[], bool]] = []
        self.background_busy = False  # whether the last round of background work had more to do
        self.thread = threading.Thread(target=self.run, name="charrnn-compute", daemon=True)
        self.thread.start()

    def submit(self, fn, *args, **kwargs) -> Future:
        future: Future = Future()
        self.tasks.put((future, fn, args, kwargs))
        return future

    def add_background(self, work: Callable[[], bool]) -> None:
        """`work()` runs between tasks for as long as it returns True (it has more to do); call wake() when
        it has new work."""
        self.tasks.put((None, self.background.append, (work,), {}))

    def remove_background(self, work: Callable[[], bool]) -> None:
        self.tasks.put((None, lambda: work in self.background and self.background.remove(work), (), {}))

    def wake(self) -> None:
        self.tasks.put((None, None, (), {}))

    def run(self) -> None:
        _local.is_compute_thread = True
        busy = False
        while True:
            try:
                future, fn, args, kwargs = self.tasks.get(block=not busy)
            except queue.Empty:
                fn = None
            else:
                if fn is not None and (future is None or future.set_running_or_notify_cancel()):
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as e:  # noqa: BLE001 - handed to whoever waits for it
                        if future is not None:
                            future.set_exception(e)
                    else:
                        if future is not None:
                            future.set_result(result)
            busy = False
            for work in self.background:
                busy = work() or busy
            self.background_busy = busy


_thread: ComputeThread | None = None
_thread_lock = threading.Lock()


def compute_thread() -> ComputeThread:
    global _thread
    with _thread_lock:
        if _thread is None:
            _thread = ComputeThread()
        return _thread


def is_compute_thread() -> bool:
    return getattr(_local, "is_compute_thread", False)


def on_compute_thread(fn):
    """fn, run on the page's one compute thread (directly when already there)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if is_compute_thread():
            return fn(*args, **kwargs)
        return compute_thread().submit(fn, *args, **kwargs).result()

    return run


_one_job_at_a_time = threading.Lock()


def run_in_pieces(steps: Generator[object, None, T]) -> T:
    """Run a long job written as steps on the compute thread, each step a task of its own, so the decode server
    steps and other tasks run between the pieces. While the server is writing, each piece of t seconds is followed
    by a rest of t * (1 - PIECES_SHARE) / PIECES_SHARE here, and long jobs take turns piece by piece, so all of
    them together take at most PIECES_SHARE of the thread; when nobody is writing they run at full speed.
    Returns the job's result (or raises its error). On the compute thread itself it simply runs the steps."""
    thread = None if is_compute_thread() else compute_thread()

    def piece():
        began = time.perf_counter()
        try:
            next(steps)
        except StopIteration as done:
            return True, done.value, 0.0
        return False, None, time.perf_counter() - began

    while True:
        if thread is None:
            finished, value, _ = piece()
        else:
            with _one_job_at_a_time:
                finished, value, seconds = thread.submit(piece).result()
                if not finished and thread.background_busy:
                    time.sleep(seconds * (1 - PIECES_SHARE) / PIECES_SHARE)
        if finished:
            return value
