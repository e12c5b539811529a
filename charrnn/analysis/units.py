"""Finding units: every unit of every layer and kind, ranked by how closely it follows a signal over a text.

A unit is (layer, kind, index): its hidden state h_t, reset gate r_t or update gate z_t at one position of one layer.
Its series is its value after each character of a text read in one pass from the zero state
(charrnn.analysis.activations); a signal is one number per character (charrnn.analysis.signals). The ranking is by the
Pearson correlation r of the two series over the text. Also here: an order of a layer's units that puts alike units next
to each other (for readable heatmaps), their row labels, and the memory timescale 1 / (1 - mean z_t).
"""

from __future__ import annotations

from typing import Generator

import numpy as np
import torch

from ..decoding.unit import GRU_KINDS, Unit
from . import activations, signals
from .activations import Activations, run_steps

MAX_FIND_CHARS = 10_000  # the page's limit: a pass over 10,000 characters takes about 5 s on the 2-core machines
TOP_UNITS = 20


class Moments:
    """Count, mean, variance, minimum and maximum of every column of a matrix that arrives a few rows at a time.

    Sums are taken about each column's first value, which keeps sum(x^2) - n mean^2 from cancelling; one piece's
    sums in float32 (a few thousand terms each), the running sums in float64."""

    def __init__(self):
        self.n = 0
        self.shift = self.s1 = self.s2 = self.low = self.high = None

    def add(self, x: torch.Tensor) -> torch.Tensor:
        """x [Tc, columns] (float32); returns x minus the shift, for further sums."""
        if self.shift is None:
            self.shift = x[0].clone()
            self.s1 = torch.zeros(x.shape[1], dtype=torch.float64)
            self.s2 = torch.zeros(x.shape[1], dtype=torch.float64)
            self.low, self.high = x[0].clone(), x[0].clone()
        d = x - self.shift
        self.s1 += d.sum(0, dtype=torch.float64)
        self.s2 += (d * d).sum(0, dtype=torch.float64)
        self.low = torch.minimum(self.low, x.amin(0))
        self.high = torch.maximum(self.high, x.amax(0))
        self.n += x.shape[0]
        return d

    @property
    def mean(self) -> torch.Tensor:
        return self.shift.double() + self.s1 / self.n

    @property
    def var(self) -> torch.Tensor:
        return (self.s2 / self.n - (self.s1 / self.n) ** 2).clamp_min(0)

    @property
    def constant(self) -> torch.Tensor:
        return self.high == self.low


def mean_squares(y: torch.Tensor) -> torch.Tensor:
    """[S] the mean of each row's squares, in float64 a few thousand values at a time (no float64 copy of y)."""
    out = torch.zeros(y.shape[0], dtype=torch.float64)
    for part in y.split(8192, dim=1):
        out += (part.double() ** 2).sum(dim=1)
    return out / max(1, y.shape[1])


class Correlation:
    """Pearson r between every unit's series and each of several signals, gathered one piece of text at a time.

    The signals are centred over the whole text first, so sum(x * y) needs no correction. A series with the same
    value at every character (max == min) has no correlation: its r is NaN.
    """

    def __init__(self, signal_values: np.ndarray):
        y = np.atleast_2d(np.asarray(signal_values))
        if y.dtype != np.float32:  # float32 signals stay so: hundreds of them over a long text take half the memory
            y = y.astype(np.float64)
        mean = y.mean(axis=1, keepdims=True, dtype=np.float64).astype(y.dtype)
        self.y = torch.from_numpy(y - mean)  # [S, T]
        self.y_var = mean_squares(self.y)  # [S]
        self.moments = Moments()
        self.sxy = None

    def add_columns(self, x: torch.Tensor, start: int) -> None:
        """x [Tc, units]: every unit's values at offsets start .. start + Tc - 1, one column per unit."""
        d = self.moments.add(x.float())
        if self.sxy is None:
            self.sxy = torch.zeros(self.y.shape[0], x.shape[1], dtype=torch.float64)
        self.sxy += (self.y[:, start : start + x.shape[0]].float() @ d).double()

    def r(self) -> np.ndarray:
        """[S, units] correlations, a column per unit as add_columns gave them (NaN for constant series)."""
        m = self.moments
        if m.n != self.y.shape[1]:
            raise ValueError(f"the signal has {self.y.shape[1]} values but {m.n} characters were read")
        r = (self.sxy / m.n / torch.sqrt(m.var[None] * self.y_var[:, None])).clamp(-1, 1)
        r[:, m.constant] = float("nan")
        return r.numpy()


def ranked(r: np.ndarray, top: int, kinds: tuple = GRU_KINDS) -> list[dict]:
    """The `top` units [kinds, layers, H] with the largest |r|, best first (ties: kind, layer, unit order); units
    whose r is undefined are left out."""
    flat = r.reshape(-1)
    kept = np.flatnonzero(~np.isnan(flat))
    order = kept[np.argsort(-np.abs(flat[kept]), kind="stable")][:top]
    _, layers, hidden = r.shape
    return [{"layer": int(i // hidden % layers) + 1, "kind": kinds[i // (hidden * layers)], "unit": int(i % hidden),
             "r": float(flat[i])} for i in order]


def find_units(model, text: str, pattern: str, *, top: int = TOP_UNITS, max_chars: int | None = MAX_FIND_CHARS,
               values: Activations | None = None, timeout: float = signals.REGEX_TIMEOUT_S,
               chunk_size: int = activations.CHUNK_SIZE) -> dict:
    """Rank every unit of every layer and kind by the Pearson correlation between its value after each character of
    `text` (one pass from the zero state) and the signal `pattern` gives over the same characters.

    `pattern`: a built-in signal's name (charrnn.analysis.signals.BUILTIN: "line position", "word position", "vowel",
    ...) or a regular expression (re.MULTILINE; 1 inside a match, 0 elsewhere). `values`: the text's activations when
    the caller has them already (e.g. Activations.of_trace(trace)), to skip the pass.

    Returns {"signal", "description", "chars", "units": [{"layer", "kind", "unit", "r"}, ...] (the `top` best by
    |r|, layers from 1), "undefined": how many units were left out because their series is constant (r undefined)}.
    Raises a ValueError subclass that says what was wrong for an empty or too long text, characters outside the
    vocabulary, an invalid or runaway regular expression, or a signal that is constant over the text.
    """
    return run_steps(find_units_steps(model, text, pattern, top=top, max_chars=max_chars, values=values,
                                      timeout=timeout, chunk_size=chunk_size))


def find_units_steps(model, text: str, pattern: str, *, top: int = TOP_UNITS, max_chars: int | None = MAX_FIND_CHARS,
                     values: Activations | None = None, timeout: float = signals.REGEX_TIMEOUT_S,
                     chunk_size: int = activations.CHUNK_SIZE) -> Generator[None, None, dict]:
    """find_units as steps (charrnn.serving.compute): the input is checked and the signal computed now, with no torch
    work
    (a bad input raises here); the generator returned reads one piece of `chunk_size` characters per step and
    returns find_units' result."""
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a whole number >= 1, not {top!r}")
    activations.encode(model, text, max_chars)  # the text's problems first, before any work
    name, signal_values = signals.signal(text, pattern, timeout=timeout)
    if values is not None and len(values) != len(text):
        raise ValueError(f"the activations given cover {len(values)} characters, the text has {len(text)}")
    description = signals.BUILTIN[pattern].description if pattern in signals.BUILTIN else (
        f"1 inside matches of the regular expression {pattern}, 0 elsewhere")

    def steps():
        pieces = [values] if values is not None else activations.chunks(model, text, max_chars=max_chars,
                                                                          chunk_size=chunk_size)
        correlation = Correlation(signal_values)
        for piece in pieces:
            correlation.add_columns(piece.columns(), piece.start)
            yield
        r = correlation.r()[0].reshape(len(model.kinds), model.num_layers, model.hidden_size)
        return {"signal": name, "description": description, "chars": len(text), "units": ranked(r, top, model.kinds),
                "undefined": int(np.isnan(r).sum())}

    return steps()


def timescales(mean_update: np.ndarray | torch.Tensor) -> np.ndarray:
    """The memory timescale 1 / (1 - mean z_t) of each unit position, from its mean update gate. In torch.nn.GRU a
    z_t near 1 keeps the old state, so a value survives each step with probability about z: about 1 / (1 - z)
    steps in all."""
    mean_update = np.asarray(mean_update, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 1.0 / (1.0 - mean_update)


def order_units(text: str, values: torch.Tensor, *, min_r: float = 0.3) -> dict:
    """An order of one layer's units (values [T, H], one kind, over `text`) that puts alike units together.

    First the units that follow a built-in signal over this text (|r| >= min_r with the signal they follow best),
    grouped by signal in the order of charrnn.analysis.signals.BUILTIN, positive r before negative, strongest first. Then
    the rest as a chain: starting from the most variable, each next unit is the one most correlated with the one
    before. Units that never change come last. Returns {"units": [...], "signal": [a "line position +0.95"
    note, or "", per unit in that order]}.
    """
    x = values.double().numpy()
    steps, hidden = x.shape
    if steps != len(text):
        raise ValueError(f"the values cover {steps} characters, the text has {len(text)}")
    std = x.std(axis=0)
    moving = std > 0
    z = np.zeros_like(x)
    z[:, moving] = (x[:, moving] - x[:, moving].mean(axis=0)) / std[moving]
    found = signals.varying(text)
    units, notes, placed = [], [], np.zeros(hidden, dtype=bool)
    if found and steps > 1:
        y = np.stack(list(found.values()))
        y = (y - y.mean(axis=1, keepdims=True)) / y.std(axis=1, keepdims=True)
        r = y @ z / steps  # [signals, H]
        best = np.abs(r).argmax(axis=0)
        best_r = r[best, np.arange(hidden)]
        for s, name in enumerate(found):
            for sign in (1, -1):
                group = np.flatnonzero((best == s) & (sign * best_r >= min_r) & moving)
                for u in group[np.argsort(-np.abs(best_r[group]), kind="stable")]:
                    units.append(int(u))
                    notes.append(f"{name} {best_r[u]:+.2f}")
                    placed[u] = True
    rest = list(np.flatnonzero(~placed & moving))
    if rest:
        similarity = z[:, rest].T @ z[:, rest] / steps
        current = int(np.argmax(std[rest]))
        left = np.ones(len(rest), dtype=bool)
        while True:
            left[current] = False
            units.append(int(rest[current]))
            notes.append("")
            if not left.any():
                break
            current = int(np.flatnonzero(left)[np.argmax(similarity[current, left])])
    constant = [int(u) for u in np.flatnonzero(~moving)]
    return {"units": units + constant, "signal": notes + [""] * len(constant)}


def format_timescale(tau: float) -> str:
    return "∞" if not np.isfinite(tau) else f"{tau:.1f}" if tau < 10 else f"{tau:,.0f}"


def unit_labels(layer: int, kind: str, units, timescale=None) -> list[str]:
    """Row labels such as "L3 reset 99 (τ 12)": each unit's name (layer from 1) and its timescale when given
    (timescale [H] of that layer, e.g. atlas.timescale[layer - 1])."""
    names = [str(Unit(layer, kind, int(u))) for u in units]
    if timescale is None:
        return names
    return [f"{name} (τ {format_timescale(float(timescale[u]))})" for name, u in zip(names, units)]
