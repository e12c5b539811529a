"""How a decode step's matrix products are laid out, chosen per machine by measuring.

A decode step reads one character for each of R rows (one row per request being served) and multiplies the
rows by each weight matrix. Two things matter:

- Speed. At one row the step is bound by reading the weights, and which product kernel is fastest differs
  from CPU to CPU (a layout tuned on one 2-core machine ran at 2.3x the naive loop there and 1.1x on another).
- Batch invariance. A row's result must not depend on how many other rows share the step, so that a request
  writes the same text alone (`CharRNN.generate`, the CLI) and in the page's batch. A matrix product can
  round differently for a different number of rows (on one Xeon, MKL's one-row product differs from its
  2..15-row products, which agree with each other, and 16 rows differ again), so a layout computes the rows in
  groups of at most `group` rows, each padded to at least `min_rows` rows.

A candidate is eligible only where a probe row's bits, at every row count and position tried, equal those of
the reference layout (every product on exactly two rows, which cannot vary with the batch). So whichever
eligible layout wins on a machine, the same request writes the same text there: the choice changes the speed,
never the result. `choose_layout` times the eligible candidates on the real step and keeps the fastest, once
per process and model shape; `CHARRNN_LAYOUT` (e.g. "addmm/8/2") forces one.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, replace

import torch

LAYOUT_ENV = "CHARRNN_LAYOUT"


@dataclass(frozen=True)
class Layout:
    """Rows go through each product in groups of at most `group` rows, each group padded to at least
    `min_rows` rows (min_rows == group: every group has the same shape); "addmm" runs one product per group,
    "bmm" one batched product for all groups (only with equal groups), "stacked" is "addmm" but for the
    previous-state products of all layers in one batched product per group. `threads` > 0 runs the steps with that
    many OpenMP threads (on a busy 2-core machine one thread can be several times faster than two, whose
    barriers wait for a core); 0 keeps the process's setting."""

    method: str = "addmm"
    group: int = 8
    min_rows: int = 2
    threads: int = 0

    def __post_init__(self):
        if self.method not in ("addmm", "bmm", "stacked"):
            raise ValueError(f"layout method must be 'addmm', 'bmm' or 'stacked', not {self.method!r}")
        if not 1 <= self.min_rows <= self.group:
            raise ValueError(f"layout needs 1 <= min_rows <= group, not {self.min_rows} and {self.group}")
        if self.method == "bmm" and self.min_rows != self.group:
            raise ValueError("a 'bmm' layout pads every group to the same size: min_rows must equal group")

    def __str__(self) -> str:
        return f"{self.method}/{self.group}/{self.min_rows}" + (f"/{self.threads}t" if self.threads else "")

    @classmethod
    def parse(cls, text: str) -> "Layout":
        try:
            method, group, min_rows, *threads = text.split("/")
            if len(threads) > 1:
                raise ValueError("too many parts")
            return cls(method, int(group), int(min_rows), int(threads[0].rstrip("t")) if threads else 0)
        except ValueError as e:
            raise ValueError(f"{LAYOUT_ENV} must look like 'addmm/8/2' or 'addmm/8/2/1t' "
                             f"(method/group/min_rows[/threads]): {e}") from None

    def threads_set(self):
        """A context that runs the enclosed steps with this layout's thread count and restores the process's after
        (nothing to do, and nothing done, when they are the same: the usual case, once per step)."""
        if not self.threads or self.threads == torch.get_num_threads():
            return NO_CHANGE
        return ThreadCount(self.threads)

    def padded_rows(self, rows: int) -> int:
        """How many rows the step computes for `rows` real ones (the rest are padding, discarded)."""
        full, last = divmod(rows, self.group)
        if last == 0 and full:
            return rows
        return full * self.group + max(last, self.min_rows)

    def hidden_products(self, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, out: torch.Tensor) -> None:
        """out[l] = h[l] @ w_hh[l].T + b_hh[l] for every layer l (h [layers, rows, H], w_hh [layers, 3H, H]): in
        a step they depend only on the previous states. "stacked" runs all layers in one batched product per
        group of rows (one parallel region instead of one per layer); the others one product per layer."""
        if self.method != "stacked":
            for layer in range(h.shape[0]):
                self.product(h[layer], w_hh[layer], b_hh[layer], out=out[layer])
            return
        rows = h.shape[1]
        for start in range(0, rows, self.group):
            end = min(rows, start + self.group)
            if start == 0 and end == rows:
                torch.baddbmm(b_hh[:, None], h, w_hh.transpose(1, 2), out=out)
            else:
                out[:, start:end] = torch.baddbmm(b_hh[:, None], h[:, start:end], w_hh.transpose(1, 2))

    def product(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out = x @ weight.T + bias for x [padded_rows, in], weight [out, in] (nn.Linear's layout, used through a
        transposed view as nn.GRU's own products are, which keeps the states within 1e-5 of nn.GRU's)."""
        rows = x.shape[0]
        if self.method == "bmm":
            groups = rows // self.group
            return torch.baddbmm(bias.expand(groups, 1, -1), x.view(groups, self.group, -1),
                                 weight.t().expand(groups, -1, -1), out=out.view(groups, self.group, -1)).view(rows, -1)
        if rows <= self.group:  # one group: no slicing (a step alone runs this path)
            return torch.addmm(bias, x, weight.t(), out=out)
        for start in range(0, rows, self.group):
            end = min(rows, start + self.group)
            torch.addmm(bias, x[start:end], weight.t(), out=out[start:end])
        return out


NO_CHANGE = contextlib.nullcontext()


class ThreadCount:
    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


REFERENCE = Layout("addmm", 2, 2)


def candidates(device: torch.device) -> list[Layout]:
    if device.type == "cuda":
        # The GPU serves one request at a time through its CUDA graphs: one row, one product per weight.
        return [Layout("addmm", 1, 1)]
    found = base_candidates()
    if torch.get_num_threads() > 1:
        found += [replace(layout, threads=1) for layout in found]
    return found


def base_candidates() -> list[Layout]:
    """The CPU layouts, each at the process's thread count."""
    found = [Layout("addmm", group, min_rows) for group in (16, 15, 8, 4) for min_rows in (1, 2)]
    found += [REFERENCE, Layout("addmm", 1, 1)]
    found += [Layout("bmm", group, group) for group in (8, 2)]
    found += [Layout("stacked", group, 2) for group in (15, 8)]
    return found


_chosen: dict[tuple, tuple[Layout, dict]] = {}
_choose_lock = threading.Lock()


def choose_layout(weights, device: torch.device) -> tuple[Layout, dict]:
    """The layout for steps of this model shape on this device, and the measurements behind the choice."""
    key = (str(device), weights.shape)
    with _choose_lock:
        if key not in _chosen:
            forced = os.environ.get(LAYOUT_ENV)
            if forced:
                _chosen[key] = (Layout.parse(forced), {"forced_by": LAYOUT_ENV})
            else:
                _chosen[key] = tune(weights, device)
        return _chosen[key]


def tune(weights, device: torch.device, rounds: int = 3, burst: int = 16, batch: int = 24) -> tuple[Layout, dict]:
    """Time each batch-invariant candidate on the real step, alone and with `batch` rows, and keep the one with
    the smallest time alone + per-row time in a batch (a visitor alone and a classroom both count).

    The candidates take turns in short bursts and each keeps its fastest burst: on a shared machine the
    other tenants' load then falls on all of them alike, and the minimum is the least disturbed."""
    options = candidates(device) if weights.shape[0] else [REFERENCE]  # a model with no layers has no products
    if len(options) == 1:
        return options[0], {"candidates": {str(options[0]): "only candidate"}}
    report = {}
    eligible = []
    for layout in options:
        if same_bits(weights, layout, REFERENCE, device):
            eligible.append(layout)
        else:
            report[str(layout)] = f"rounds differently from {REFERENCE} at some row count here"
    runs = {(layout, rows): StepTimer(weights, layout, device, rows) for layout in eligible for rows in (1, batch)}
    best_time = {key: float("inf") for key in runs}
    for _ in range(rounds):
        for key, timer in runs.items():
            best_time[key] = min(best_time[key], timer.seconds_per_step(burst if key[1] == 1 else burst // 4))
    scores = {}
    for layout in eligible:
        alone, per_row = best_time[layout, 1], best_time[layout, batch] / batch
        scores[layout] = alone + per_row
        report[str(layout)] = {"us_per_step_alone": round(alone * 1e6, 1),
                               f"us_per_row_at_{batch}": round(per_row * 1e6, 1)}
    best = min(eligible, key=scores.get)
    twin = replace(best, threads=0 if best.threads else 1)
    return best, {"candidates": report, "twin": str(twin) if twin in eligible else None}


def random_rows(weights, rows: int, device, seed: int):
    layers, hidden, vocab = weights.shape
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (rows,), generator=generator).to(device)
    h = (torch.rand(layers, rows, hidden, generator=generator) * 2 - 1).to(device)
    return tokens, h


@torch.inference_mode()
def same_bits(weights, layout: Layout, reference: Layout, device, checks=(1, 2, 3, 8, 9, 16, 17, 33)) -> bool:
    """True if a probe row's new state and logits under `layout` are bit for bit those under `reference` alone,
    at every row count in `checks` and at every position (first, middle, last) among the rows."""
    tokens, h = random_rows(weights, max(checks), device, seed=0)
    with reference.threads_set():
        expected = weights.run_step(reference, tokens[:1], h[:, :1])
    with layout.threads_set():
        for rows in checks:
            for position in sorted({0, rows // 2, rows - 1}):
                order = torch.arange(rows, device=device).roll(position)  # the probe (row 0) lands at `position`
                state, logits = weights.run_step(layout, tokens[order], h[:, order])
                if not (torch.equal(state[:, position], expected[0][:, 0])
                        and torch.equal(logits[position], expected[1][0])):
                    return False
    return True


class StepTimer:
    """Times steps of `rows` rows with one layout, on random states (the inputs do not change the time)."""

    def __init__(self, weights, layout: Layout, device, rows: int):
        self.weights, self.layout, self.device = weights, layout, device
        self.tokens, self.h = random_rows(weights, layout.padded_rows(rows), device, seed=1)
        self.scratch = weights.scratch(layout, rows, device)
        self.seconds_per_step(3)  # warm up

    @torch.inference_mode()
    def seconds_per_step(self, steps: int) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        with self.layout.threads_set():
            start = time.perf_counter()
            for _ in range(steps):
                self.weights.step(self.layout, self.tokens, self.h, self.scratch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return (time.perf_counter() - start) / steps


class ThreadSwitch:
    """The chosen layout and, where it has one, its twin on the other thread count (the same bits: the tuner
    found both eligible), whichever is faster now.

    The tuner measures once, but a shared machine changes: when another tenant holds a core, two OpenMP threads
    wait for each other at every product and one thread is several times faster; when the machine is quiet,
    two are faster. Every `every` steps the loop runs `trial` steps with the other one; if those were faster
    than the `trial` steps just before them by more than `margin`, it switches. The text never changes.
    """

    def __init__(self, layout: Layout, twin: Layout | None, every: int = 512, trial: int = 16, margin: float = 0.15):
        self.options = [layout] + ([twin] if twin else [])
        self.current, self.every, self.trial, self.margin = 0, every, trial, margin
        self.steps, self.recent, self.tried = 0, [], []

    @property
    def layout(self) -> Layout:
        trying = len(self.options) > 1 and self.steps % self.every >= self.every - self.trial
        return self.options[1 - self.current if trying else self.current]

    def record(self, seconds: float) -> None:
        if len(self.options) > 1:
            phase = self.steps % self.every
            if phase >= self.every - self.trial:
                self.tried.append(seconds)
            elif phase >= self.every - 2 * self.trial:
                self.recent.append(seconds)
            if phase == self.every - 1:
                if self.recent and self.tried and sum(self.tried) < (1 - self.margin) * sum(self.recent):
                    self.current = 1 - self.current
                self.recent, self.tried = [], []
        self.steps += 1


def thread_switch(weights, device: torch.device) -> ThreadSwitch:
    layout, report = choose_layout(weights, device)
    twin = report.get("twin")
    return ThreadSwitch(layout, Layout.parse(twin) if twin else None)
