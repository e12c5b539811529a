"""How a decode step's matrix products are computed: the kernel and how rows go through it, chosen per machine by
measuring.

A decode step reads one character for each of R rows (one row per request being served) and multiplies the rows
by each weight matrix (five 3H x H matrices and the head for the shipped 3 x 512 GRU). Two things matter:

- Speed. At one row the step is bound by reading the weights, and which kernel reads them at the machine's pace
  differs from CPU to CPU: torch's x86 wheels do float32 products in MKL, whose kernels for these shapes ran an
  order of magnitude slower on an AMD EPYC than numpy's OpenBLAS or oneDNN on the same machine, while on the
  Intel Xeons MKL is near the floor. So the tuner measures kernel families, not only layouts of one BLAS:
  torch's BLAS ("addmm", "bmm", "stacked"), oneDNN with the weights prepacked ("onednn"), numpy's OpenBLAS one
  row at a time ("gemv", through zero-copy views of the weights) and torch's own vectorised multiply-and-sum
  ("reduce", one row at a time).
- Batch invariance. A row's result must not depend on how many other rows share the step, so that a request
  writes the same text alone (`CharRNN.generate`, the CLI) and in the page's batch. A matrix product can round
  differently for a different number of rows (on one Xeon, MKL's one-row product differs from its 2..15-row
  products, which agree with each other, and 16 rows differ again), so the BLAS layouts compute the rows in groups
  of at most `group` rows, each padded to at least `min_rows` rows. A per-row kernel is invariant by construction.

A candidate is eligible only where a probe row's bits, at every row count and position tried, equal its bits
alone under the same layout (`batch_invariant`). Different kernels round differently, so the choice decides the
bits a machine writes: it is made once per machine and model shape and kept in a file (KEPT_FILE, in
CHARRNN_CACHE_DIR or ~/.cache/charrnn), so every process on the machine (the page, the library, the CLI) writes
the same text for the same request. `CHARRNN_LAYOUT` (e.g. "addmm/8/2", "gemv", "onednn/2/1t") forces one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

LAYOUT_ENV = "CHARRNN_LAYOUT"
CACHE_ENV = "CHARRNN_CACHE_DIR"
KEPT_FILE = "layouts.json"
KEPT_VERSION = 1  # bump when the kernels change how they round: choices kept by an older charrnn are measured again
BLAS = ("addmm", "bmm", "stacked")  # torch's BLAS (MKL in the x86 wheels), rows in groups
PER_ROW = ("gemv", "reduce")  # one row at a time: invariant by construction
METHODS = BLAS + ("onednn",) + PER_ROW
LIBRARY = {"addmm": "torch BLAS (MKL)", "bmm": "torch BLAS (MKL)", "stacked": "torch BLAS (MKL)",
           "onednn": "oneDNN, prepacked", "gemv": "numpy's OpenBLAS sgemv", "reduce": "torch multiply-and-sum"}


@dataclass(frozen=True)
class Layout:
    """A kernel and how rows go through it.

    "addmm" runs one torch product per group of at most `group` rows, each padded to at least `min_rows` rows;
    "bmm" one batched product for all groups (equal groups only); "stacked" is "addmm" but for the previous-state
    products of all layers in one batched product per group. "onednn" runs all rows in one oneDNN product with
    the weights prepacked for `group` rows (no padding). "gemv" and "reduce" compute one row at a time (group and
    min_rows 1). `threads` > 0 runs the steps with that many threads (torch's, or OpenBLAS's for "gemv": on a busy
    2-core machine one thread can be several times faster than two, whose barriers wait for a core); 0 keeps the
    process's setting."""

    method: str = "addmm"
    group: int = 8
    min_rows: int = 2
    threads: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"layout method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 1 <= self.min_rows <= self.group:
            raise ValueError(f"layout needs 1 <= min_rows <= group, not {self.min_rows} and {self.group}")
        if self.method == "bmm" and self.min_rows != self.group:
            raise ValueError("a 'bmm' layout pads every group to the same size: min_rows must equal group")
        if self.method in PER_ROW and (self.group, self.min_rows) != (1, 1):
            raise ValueError(f"a {self.method!r} layout computes one row at a time: group and min_rows are 1")

    def __str__(self) -> str:
        shape = "" if self.method in PER_ROW else f"/{self.group}" if self.method == "onednn" else \
            f"/{self.group}/{self.min_rows}"
        return f"{self.method}{shape}" + (f"/{self.threads}t" if self.threads else "")

    @classmethod
    def parse(cls, text: str) -> "Layout":
        try:
            parts = text.strip().split("/")
            threads = int(parts.pop().rstrip("t")) if parts[-1].endswith("t") else 0
            method, *numbers = parts
            numbers = [int(n) for n in numbers]
            if method in PER_ROW:
                if numbers:
                    raise ValueError("a per-row kernel takes no group")
                return cls(method, 1, 1, threads)
            if method == "onednn":
                group, = numbers
                return cls(method, group, 1, threads)
            group, min_rows = numbers
            return cls(method, group, min_rows, threads)
        except ValueError as e:
            raise ValueError(f"{LAYOUT_ENV} must look like 'addmm/8/2', 'onednn/2', 'gemv' or any of them with "
                             f"'/1t' (method/group/min_rows[/threads]): {e}") from None

    @property
    def library(self) -> str:
        return LIBRARY[self.method]

    def threads_set(self):
        """A context that runs the enclosed steps with this layout's thread count and restores the process's after
        (nothing to do, and nothing done, when they are the same: the usual case, once per step)."""
        if not self.threads:
            return NO_CHANGE
        if self.method == "gemv":
            return OPENBLAS_THREADS.at(self.threads)
        return NO_CHANGE if self.threads == torch.get_num_threads() else ThreadCount(self.threads)

    def padded_rows(self, rows: int) -> int:
        """How many rows the step computes for `rows` real ones (the rest are padding, discarded)."""
        if self.method not in BLAS:
            return rows
        full, last = divmod(rows, self.group)
        if last == 0 and full:
            return rows
        return full * self.group + max(last, self.min_rows)

    def hidden_products(self, h: torch.Tensor, w_hh: list["Matrix"], stacked: tuple, out: torch.Tensor) -> None:
        """out[l] = h[l] @ w_hh[l].T + b_hh[l] for every layer l (h [layers, rows, H]): in a step they depend only on
        the previous states. "stacked" runs all layers in one batched product per group of rows (one parallel region
        instead of one per layer), from `stacked` = (every layer's weight [layers, 3H, H], bias [layers, 3H]); the
        others one product per layer."""
        if self.method != "stacked":
            for layer in range(h.shape[0]):
                self.product(h[layer], w_hh[layer], out=out[layer])
            return
        weight, bias = stacked
        rows = h.shape[1]
        for start in range(0, rows, self.group):
            end = min(rows, start + self.group)
            if start == 0 and end == rows:
                torch.baddbmm(bias[:, None], h, weight.transpose(1, 2), out=out)
            else:
                out[:, start:end] = torch.baddbmm(bias[:, None], h[:, start:end], weight.transpose(1, 2))

    def product(self, x: torch.Tensor, matrix: "Matrix", out: torch.Tensor) -> torch.Tensor:
        """out = x @ weight.T + bias for x [padded_rows, in] and a Matrix's weight [out, in] (nn.Linear's layout:
        the BLAS kernels use it through a transposed view, as nn.GRU's own products do, which keeps the states
        within 1e-5 of nn.GRU's)."""
        return PRODUCTS[self.method](self, x, matrix, out)


@dataclass(eq=False)
class Matrix:
    """A weight [out, in] and its bias as a step's products use them, with each kernel's own form of the weight
    made once and kept with it (oneDNN's prepacked copy, numpy's view)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __post_init__(self):
        self.forms: dict = {}
        self.lock = threading.Lock()

    def form(self, key: tuple, make):
        found = self.forms.get(key)
        if found is None:
            with self.lock:
                found = self.forms.get(key)
                if found is None:
                    found = self.forms[key] = make()
        return found


def blas_product(layout: Layout, x, matrix: Matrix, out):
    rows, weight, bias = x.shape[0], matrix.weight, matrix.bias
    if layout.method == "bmm":
        groups = rows // layout.group
        return torch.baddbmm(bias.expand(groups, 1, -1), x.view(groups, layout.group, -1),
                             weight.t().expand(groups, -1, -1), out=out.view(groups, layout.group, -1)).view(rows, -1)
    if rows <= layout.group:  # one group: no slicing (a step alone runs this path)
        return torch.addmm(bias, x, weight.t(), out=out)
    for start in range(0, rows, layout.group):
        end = min(rows, start + layout.group)
        torch.addmm(bias, x[start:end], weight.t(), out=out[start:end])
    return out


def onednn_product(layout: Layout, x, matrix: Matrix, out):
    packed = matrix.form(("onednn", layout.group),
                         lambda: torch.ops.mkldnn._reorder_linear_weight(matrix.weight, layout.group))
    return out.copy_(torch.ops.mkldnn._linear_pointwise(x, packed, matrix.bias, "none", [], ""))


def gemv_product(layout: Layout, x, matrix: Matrix, out):
    weight = matrix.form(("numpy",), matrix.weight.numpy)
    x_rows, out_rows = x.numpy(), out.numpy()
    for row in range(x.shape[0]):
        np.dot(weight, x_rows[row], out=out_rows[row])
    return out.add_(matrix.bias)


def reduce_product(layout: Layout, x, matrix: Matrix, out):
    for row in range(x.shape[0]):  # the product's own temporary: loops on other threads may share the weights
        torch.sum(matrix.weight * x[row], -1, out=out[row])
    return out.add_(matrix.bias)


PRODUCTS = {"addmm": blas_product, "bmm": blas_product, "stacked": blas_product, "onednn": onednn_product,
            "gemv": gemv_product, "reduce": reduce_product}


def onednn_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    except (AttributeError, RuntimeError):
        return False


# ---- threads ----

NO_CHANGE = contextlib.nullcontext()


class ThreadCount:
    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


class OpenBlasThreads:
    """numpy's OpenBLAS thread pool, beside torch's (two libraries, two pools: each is told how many to use).
    threadpoolctl finds the library whatever its symbols are called (numpy's wheels rename them)."""

    def __init__(self):
        self.controller = None
        self.current = None

    def library(self):
        if self.controller is None:
            found = ThreadpoolController().select(internal_api="openblas").lib_controllers
            numpy_blas = [c for c in found if "numpy" in str(c.filepath)] or found
            self.controller = numpy_blas[0] if numpy_blas else False
        return self.controller

    def get(self) -> int:
        library = self.library()
        return library.num_threads if library else 1

    def set(self, threads: int) -> None:
        library = self.library()
        if library and threads != self.current:
            library.set_num_threads(threads)
            self.current = threads

    @contextlib.contextmanager
    def at(self, threads: int):
        before = self.get()
        if before == threads:
            yield
            return
        self.set(threads)
        try:
            yield
        finally:
            self.set(before)


OPENBLAS_THREADS = OpenBlasThreads()


# ---- the candidates, and which are eligible ----

def candidates(device: torch.device) -> list[Layout]:
    if device.type == "cuda":
        # The GPU serves one request at a time through its CUDA graphs: one row, one product per weight.
        return [Layout("addmm", 1, 1)]
    found = base_candidates()
    if torch.get_num_threads() > 1:
        found += [replace(layout, threads=1) for layout in found]
    return found


def base_candidates() -> list[Layout]:
    """The CPU layouts of every kernel family here, each at the process's thread count."""
    found = [Layout("addmm", group, min_rows) for group in (16, 15, 8, 4) for min_rows in (1, 2)]
    found += [REFERENCE, Layout("addmm", 1, 1)]
    found += [Layout("bmm", group, group) for group in (8, 2)]
    found += [Layout("stacked", group, 2) for group in (15, 8)]
    if onednn_available():
        found += [Layout("onednn", group, 1) for group in (2, 8, 32)]
    found += [Layout("gemv", 1, 1), Layout("reduce", 1, 1)]
    return found


REFERENCE = Layout("addmm", 2, 2)  # every product on exactly two rows: torch's BLAS cannot vary with the batch


def random_rows(weights, rows: int, device, seed: int):
    """Tokens [rows] and states [layers, state_kinds, rows, H] to step from."""
    layers, hidden, vocab = weights.shape
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (rows,), generator=generator).to(device)
    state = (torch.rand(layers, weights.state_kinds, rows, hidden, generator=generator) * 2 - 1).to(device)
    return tokens, state


CHECKS = (1, 2, 3, 8, 9, 16, 17, 33)


@torch.inference_mode()
def probe(weights, layout: Layout, device, checks=CHECKS):
    """The probe row's (new state, logits) at every row count in `checks` and at every position (first, middle,
    last) among the rows, under `layout`."""
    tokens, h = random_rows(weights, max(checks), device, seed=0)
    results = []
    with layout.threads_set():
        for rows in checks:
            for position in sorted({0, rows // 2, rows - 1}):
                order = torch.arange(rows, device=device).roll(position)  # the probe (row 0) lands at `position`
                state, logits = weights.run_step(layout, tokens[order], h[:, :, order])
                results.append((state[:, :, position], logits[position]))
    return results


def batch_invariant(weights, layout: Layout, device, checks=CHECKS) -> bool:
    """True if the probe row's bits under `layout` are the same at every row count and position in `checks`."""
    (state, logits), *rest = probe(weights, layout, device, checks)
    return all(torch.equal(s, state) and torch.equal(lg, logits) for s, lg in rest)


def same_bits(weights, layout: Layout, other: Layout, device, checks=CHECKS) -> bool:
    """True if a probe row's new state and logits under `layout` are bit for bit those under `other` alone, at
    every row count in `checks` and at every position among the rows."""
    (state, logits), *_ = probe(weights, other, device, (1,))
    return all(torch.equal(s, state) and torch.equal(lg, logits) for s, lg in probe(weights, layout, device, checks))


# ---- choosing, once per machine ----

_chosen: dict[tuple, tuple[Layout, dict]] = {}
_choose_lock = threading.Lock()


def choose_layout(weights, device: torch.device) -> tuple[Layout, dict]:
    """The layout for steps of this model shape on this device, and the measurements behind the choice: forced by
    CHARRNN_LAYOUT, else the one this machine chose before (kept in KEPT_FILE), else measured now and kept."""
    key = (str(device), weights.shape)
    with _choose_lock:
        if key not in _chosen:
            forced = os.environ.get(LAYOUT_ENV)
            if forced:
                _chosen[key] = forced_layout(Layout.parse(forced), weights, device)
            elif device.type == "cuda" or not weights.shape[0]:
                _chosen[key] = tune(weights, device)
            else:
                _chosen[key] = kept_or_tuned(weights, device)
        return _chosen[key]


def forced_layout(layout: Layout, weights, device) -> tuple[Layout, dict]:
    """A layout CHARRNN_LAYOUT asks for, if it is batch-invariant here; ValueError otherwise."""
    if not batch_invariant(weights, layout, device):
        raise ValueError(f"{LAYOUT_ENV} asks for {layout}, whose rows' bits depend on the batch on this machine: a "
                         "request would write another text beside others than alone. Leave it unset to let charrnn "
                         "choose among the layouts that do not")
    return layout, {"forced_by": LAYOUT_ENV, "candidates": {str(layout): "forced"}, "twin": None,
                    "library": layout.library}


def machine() -> dict:
    """What decides which kernel is fastest and how each rounds: the CPU, the cores given to this process and the
    libraries' versions."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                     model)
        flags = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("flags")), "")
    except OSError:
        pass
    return {"cpu": model, "flags": hashlib.sha256(flags.encode()).hexdigest()[:12],
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
            "kept_version": KEPT_VERSION}


def kept_file() -> Path:
    folder = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                         os.path.expanduser("~/.cache"), "charrnn")
    return Path(folder) / KEPT_FILE


@contextlib.contextmanager
def kept_choices():
    """The choices kept on this machine, as a dict to read and change, written back at the end; other processes
    wait meanwhile (a lock file), so that two processes starting together choose once. Without a writable folder,
    an empty dict that nothing keeps."""
    path = kept_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "w")
    except OSError:
        yield {}
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            choices = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            choices = {}
        before = dict(choices)
        yield choices
        if choices != before:
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(choices, indent=1))
            temporary.replace(path)


def kept_or_tuned(weights, device) -> tuple[Layout, dict]:
    key = json.dumps({**machine(), "shape": list(weights.shape)}, sort_keys=True)
    with kept_choices() as choices:
        kept = choices.get(key)
        if kept is not None:
            layout = Layout.parse(kept["layout"])
            if batch_invariant(weights, layout, device):
                return layout, {**kept["report"], "kept_in": str(kept_file())}
        layout, report = tune(weights, device)
        choices[key] = {"layout": str(layout), "report": report, "chosen_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        return layout, report


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
        if batch_invariant(weights, layout, device):
            eligible.append(layout)
        else:
            report[str(layout)] = "a row's bits depend on the batch here"
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
                               f"us_per_row_at_{batch}": round(per_row * 1e6, 1), "library": layout.library}
    best = min(eligible, key=scores.get)
    twin = replace(best, threads=0 if best.threads else 1)
    twin_ok = twin in eligible and same_bits(weights, twin, best, device)
    return best, {"candidates": report, "twin": str(twin) if twin_ok else None, "library": best.library}


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

    The tuner measures once, but a shared machine changes: when another tenant holds a core, two threads wait
    for each other at every product and one thread is several times faster; when the machine is quiet, two are
    faster. Every `every` steps the loop runs `trial` steps with the other one; if those were faster than the
    `trial` steps just before them by more than `margin`, it switches. The text never changes.
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
