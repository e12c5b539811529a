"""Serving many visitors from one decode loop per model, on the compute thread (continuous batching).

A teacher's class presses Generate in the same second: each request becomes a row of the model's DecodeLoop
and joins it at the next step, so one step (bound by reading the weights) writes a character for every
visitor. Rows leave when done or cancelled (a visitor who closed the tab frees the row at the next step). A
request's text is what it would be alone: the loop is batch-invariant (charrnn.decoding.loop).

Bounded for a public page: at most `max_rows` rows decode at once and their runs hold at most `max_steps`
positions of records in all; up to `max_waiting` more wait for a row; beyond that a request is refused at once
with ServerBusy. On CUDA a model's requests decode one after another through the CUDA-graph path (batching
on the GPU was not built: no GPU was at hand to check its invariance).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass

import torch

from ..decoding.loop import DecodeLoop, DecodeRequest, Row, check_request
from ..decoding.loop import stream as decode_alone
from .compute import compute_thread


class ServerBusy(RuntimeError):
    """Too many requests at once; the message says to try again."""


class JobCancelled(RuntimeError):
    """The request was cancelled before it finished."""


class JobTimeout(RuntimeError):
    """A wait for a run took longer than its bound; the message says so."""


WAIT_S = 300.0  # the longest anyone waits for a run: a 4,000-step run behind a full server takes well under that


class Job:
    """A request on its way through the server, held by every visitor who asked for it: the same request is the
    same run (decoding is deterministic and batch-invariant), so visitors asking for it while it waits or is being
    written share it, and it is written once."""

    def __init__(self, model, request: DecodeRequest):
        self.model, self.request = model, request
        self.prompt_len = len(request.ids)
        self.tokens: list[int] = list(request.ids)  # grows as the loop writes (read by the visitor's thread)
        self.row: Row | None = None
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.cancelled = False
        self.holders = 1
        self.holding = threading.Lock()

    def share(self) -> bool:
        """One more visitor holds the job; False when it is cancelled already (the visitor needs a job of its own)."""
        with self.holding:
            if self.cancelled:
                return False
            self.holders += 1
            return True

    @property
    def text(self) -> str:
        return self.model.tokenizer.decode(self.tokens[:])

    @property
    def written(self) -> int:
        return len(self.tokens) - self.prompt_len

    def cancel(self) -> None:
        """This visitor lets go: once nobody holds the job, its row is freed at the next step (or never taken)."""
        with self.holding:
            self.holders -= 1
            if self.holders <= 0 and not self.done.is_set():
                self.cancelled = True

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def result(self, timeout: float = WAIT_S) -> Row:
        """The finished Row (its records make the trace), or the error that ended the job; JobTimeout when it is not
        finished within `timeout` seconds."""
        if not self.done.wait(timeout):
            raise JobTimeout(f"The run was not written within {timeout:g} s (the server is very busy); try again")
        if self.error is not None:
            raise self.error
        return self.row


@dataclass
class ServerLimits:
    max_rows: int = 32
    max_waiting: int = 64
    # positions recorded by all running rows together: each holds every layer's h_t, r_t and z_t as the step computed
    # them (18 KB for a 3 x 512 GRU, so about 440 MB at most)
    max_steps: int = 24_000


class DecodeServer:
    def __init__(self, limits: ServerLimits | None = None):
        self.limits = limits or ServerLimits()
        self.waiting: deque[Job] = deque()
        self.running: OrderedDict[Job, None] = OrderedDict()
        self.loops: dict[int, DecodeLoop] = {}  # by id(model)
        self.counts: Counter = Counter()  # jobs written (rows that joined a loop), shared, finished, cancelled, failed
        self.unfinished: dict[tuple, Job] = {}  # (id(model), request) -> its job, while it waits or is written
        self.lock = threading.Lock()
        self.thread = compute_thread()
        self.thread.add_background(self.pump)

    def close(self) -> None:
        """Stop taking work (the compute thread forgets this server's steps)."""
        self.thread.remove_background(self.pump)

    def submit(self, model, request: DecodeRequest) -> Job:
        """Queue a request; ServerBusy if too many wait already. Bad requests raise ValueError here."""
        check_request(model, request)
        steps = len(request.ids) + request.settings.max_new_chars
        if steps > self.limits.max_steps:
            raise ValueError(f"a run of {steps:,} characters is longer than this server allows "
                             f"({self.limits.max_steps:,}); ask for fewer characters")
        with self.lock:
            shared = self.unfinished.get((id(model), request))
            if shared is not None and shared.share():
                self.counts["shared"] += 1
                return shared
            if len(self.waiting) >= self.limits.max_waiting:
                raise ServerBusy(f"The server is busy: {len(self.running)} runs are being written and "
                                 f"{len(self.waiting)} are waiting. Try again in a few seconds.")
            job = self.unfinished[id(model), request] = Job(model, request)
            self.waiting.append(job)
        self.thread.wake()
        return job

    @property
    def load(self) -> dict:
        return {"running": len(self.running), "waiting": len(self.waiting)}

    # ---- on the compute thread ----

    def pump(self) -> bool:
        """One step of every model's loop, after admitting waiting jobs and dropping cancelled ones. Returns
        whether there is more to do."""
        self.drop_cancelled()
        self.admit()
        for key, loop in list(self.loops.items()):
            if not loop.rows:
                del self.loops[key]
                continue
            try:
                with torch.inference_mode():
                    finished = loop.step()
            except Exception as e:  # noqa: BLE001 - every job of the loop learns why; the server stays up
                for job in [j for j in self.running if j.row in loop.rows]:
                    self.finish(job, error=e)
                del self.loops[key]
                continue
            for job in self.running:
                if job.row is not None and len(job.tokens) < len(job.row.tokens):
                    job.tokens.extend(job.row.tokens[len(job.tokens) :])
            for job in [j for j in self.running if j.row in finished]:
                self.finish(job)
        return bool(self.running or self.waiting)

    def drop_cancelled(self) -> None:
        for job in [j for j in self.running if j.cancelled]:
            self.loops[id(job.model)].remove(job.row)
            self.finish(job, error=JobCancelled("cancelled"))
        with self.lock:
            dropped = [j for j in self.waiting if j.cancelled]
            for job in dropped:
                self.waiting.remove(job)
        for job in dropped:
            self.finish(job, error=JobCancelled("cancelled"))

    def admit(self) -> None:
        steps = sum(j.row.length for j in self.running)
        while True:
            with self.lock:
                if not self.waiting or len(self.running) >= self.limits.max_rows:
                    return
                job = self.waiting[0]
                length = len(job.request.ids) + job.request.settings.max_new_chars
                if self.running and steps + length > self.limits.max_steps:
                    return  # it waits until running rows free their records
                self.waiting.popleft()
            if job.model.device.type == "cuda":
                self.run_alone(job)
                continue
            loop = self.loops.get(id(job.model))
            if loop is None:
                loop = self.loops[id(job.model)] = DecodeLoop(job.model)
            job.row = loop.add(job.request)
            self.running[job] = None
            self.counts["written"] += 1
            steps += job.row.length

    def run_alone(self, job: Job) -> None:
        """A CUDA request: the library's own path (CUDA graphs), start to end."""
        self.counts["written"] += 1
        try:
            request = job.request
            *_, last = decode_alone(job.model, job.model.tokenizer.decode(request.ids), request.settings,
                                    intervention=request.intervention, forced=request.forced)
            job.tokens[:] = last.trace.tokens.tolist()
            job.row = last.trace  # a finished CUDA job hands over its Trace instead of a Row
        except Exception as e:  # noqa: BLE001
            self.finish(job, error=e)
            return
        self.finish(job)

    def finish(self, job: Job, error: BaseException | None = None) -> None:
        job.error = error
        self.running.pop(job, None)
        with self.lock:
            if self.unfinished.get((id(job.model), job.request)) is job:
                del self.unfinished[id(job.model), job.request]
        self.counts["finished" if error is None else "cancelled" if isinstance(error, JobCancelled) else "failed"] += 1
        job.done.set()
