"""Select and match, as in LSTMVis (Strobelt et al. 2017): the hidden units that are on over a selected span of a
text and off just around it, then the places in the model's reference text where those units do the same.

Selection. A hidden unit (any layer) is *on* at an offset when its h_t > threshold. Given a span [start, end) of a
text, read from the zero state, a unit is selected when it is on at every offset of the span and off at every
offset of the `pad` characters before and after it (those that exist). Its score is the margin by which it
clears the threshold on both sides, min(min over the span - threshold, threshold - max around it); selected
units have score > 0 (or = 0 when a unit around the span sits exactly at the threshold), best first.

Match. Over the first MATCH_CHARS characters of the reference text (hidden states read once per model and kept
as int8 codes round(127 h): 3 x 20,000 x 512 bytes = 31 MB for the shipped model; "on" there means
code > 127 * threshold), every window of the span's length L is scored by how well the selected units (the
listed ones, at most `top` of them, m in all) repeat the selection's pattern: the fraction of the
m x (L + pads) (unit, offset) pairs that agree with "on over the L offsets, off over the pad offsets around them
that exist". The best windows that do not overlap one another are returned, best first (ties: earliest).
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import Generator

import numpy as np
import torch

from . import activations
from .activations import Activations, run_steps
from .atlas import MARK_CLOSE, MARK_OPEN
from .units import MAX_FIND_CHARS, TOP_UNITS

MATCH_CHARS = 20_000
THRESHOLD = 0.3
PAD = 3
MAX_SPAN = 400
CONTEXT = 24  # characters shown on each side of a match


class SelectionError(ValueError):
    """A selection cannot be used (out of the text, too long, or no unit follows it); the message says why."""


@dataclass
class MatchIndex:
    """The hidden states of every layer over the start of a reference text, as int8 codes round(127 h)."""

    text: str
    codes: torch.Tensor  # [layers, T, H] int8

    @property
    def nbytes(self) -> int:
        return self.codes.numel() * self.codes.element_size()


def build_match_index(model, reference_text: str, chars: int = MATCH_CHARS, *,
                      chunk_size: int = activations.CHUNK_SIZE) -> MatchIndex:
    """Read the first `chars` characters of the reference text (hidden states only: 20,000 characters take about
    15 s on the shared 2-core machines for the shipped model) and keep their states as int8 codes."""
    return run_steps(match_index_steps(model, reference_text, chars, chunk_size=chunk_size))


def match_index_steps(model, reference_text: str, chars: int = MATCH_CHARS, *, chunk_size: int = activations.CHUNK_SIZE,
                      progress=None) -> Generator[None, None, MatchIndex]:
    """build_match_index as steps (charrnn.serving.compute): one piece of `chunk_size` characters per step, then
    `progress(done, total)` (characters read) when given."""
    text = reference_text[:chars]
    activations.encode(model, text)

    def steps():
        codes = []
        for piece in activations.chunks(model, text, gates=False, chunk_size=chunk_size):
            codes.append(torch.round(piece.hidden * 127).to(torch.int8))
            if progress is not None:
                progress(piece.start + len(piece), len(text))
            yield
        return MatchIndex(text, torch.cat(codes, dim=1))

    return steps()


_indexes: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def match_index(model, reference_text: str, chars: int = MATCH_CHARS) -> MatchIndex:
    """build_match_index, kept for as long as the model lives (one index per model: the last text asked for)."""
    key = (hashlib.sha256(reference_text[:chars].encode()).hexdigest(), chars)
    held = _indexes.get(model)
    if held is None or held[0] != key:
        held = (key, build_match_index(model, reference_text, chars))
        _indexes[model] = held
    return held[1]


def check_threshold(threshold: float) -> None:
    if not isinstance(threshold, (int, float)) or not -1 < threshold < 1:
        raise SelectionError(f"threshold must be between -1 and 1 (hidden states lie in between), not {threshold!r}")


def select_units(model, text: str, start: int, end: int, *, threshold: float = THRESHOLD, pad: int = PAD,
                 top: int = TOP_UNITS, values: Activations | None = None,
                 max_chars: int | None = MAX_FIND_CHARS, chunk_size: int = activations.CHUNK_SIZE) -> dict:
    """The hidden units on (> threshold) over text[start:end] and off (<= threshold) over the `pad` characters
    around it, best margin first (see the module's docstring). `values`: activations the caller has of a part of the
    text, text[values.start : values.start + len(values)], that covers the span and the characters around it (e.g.
    Activations.of_trace(trace)); otherwise text[:end + pad] is read, from the zero state. Returns {"start", "end",
    "selected_text", "threshold", "pad", "selected" (how many units), "units": [{"layer", "unit", "min_inside",
    "max_around", "score"}, ...] (at most `top`, layers from 1)}."""
    return run_steps(select_units_steps(model, text, start, end, threshold=threshold, pad=pad, top=top,
                                        values=values, max_chars=max_chars, chunk_size=chunk_size))


def select_units_steps(model, text: str, start: int, end: int, *, threshold: float = THRESHOLD, pad: int = PAD,
                       top: int = TOP_UNITS, values: Activations | None = None, max_chars: int | None = MAX_FIND_CHARS,
                       chunk_size: int = activations.CHUNK_SIZE) -> Generator[None, None, dict]:
    """select_units as steps (charrnn.serving.compute): the selection is checked now (a bad one raises here); the
    generator
    returned reads text[:end + pad] one piece per step, keeping only the states around the span, and returns
    select_units' result."""
    check_threshold(threshold)
    if not isinstance(pad, int) or pad < 0:
        raise SelectionError(f"pad must be a whole number >= 0, not {pad!r}")
    activations.encode(model, text, max_chars)
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
        raise SelectionError(f"the selection [{start}, {end}) is not a non-empty span of the text's {len(text)} "
                             "characters")
    if end - start > MAX_SPAN:
        raise SelectionError(f"the selection has {end - start} characters; select at most {MAX_SPAN}")
    first, last = max(0, start - pad), min(len(text), end + pad)  # the span and the characters around it
    if values is not None and not values.start <= first < last <= values.start + len(values):
        raise SelectionError(f"the activations given cover [{values.start}, {values.start + len(values)}), not the "
                             f"selection and the characters around it, [{first}, {last})")

    def steps():
        if values is not None:
            hidden = values.hidden[:, first - values.start : last - values.start]
        else:
            kept = []
            for piece in activations.chunks(model, text[:last], gates=False, chunk_size=chunk_size):
                if piece.start + len(piece) > first:
                    kept.append(piece.hidden[:, max(0, first - piece.start) :])
                yield
            hidden = torch.cat(kept, dim=1)
        return selection(hidden, text, start, end, first, threshold, pad, top)

    return steps()


def selection(hidden: torch.Tensor, text: str, start: int, end: int, first: int, threshold: float, pad: int,
              top: int) -> dict:
    """select_units' result from the hidden states [layers, last - first, H] at offsets first .. last - 1."""
    hidden = hidden.double()
    inside = hidden[:, start - first : end - first].amin(dim=1)  # [layers, H]
    around = torch.cat([hidden[:, : start - first], hidden[:, end - first :]], dim=1)
    if around.shape[1]:
        max_around = around.amax(dim=1)
        score = torch.minimum(inside - threshold, threshold - max_around)
    else:
        max_around = torch.full_like(inside, float("nan"))
        score = inside - threshold
    selected = (inside > threshold) & ~(max_around > threshold)
    flat = torch.where(selected, score, -torch.inf).reshape(-1)
    order = flat.argsort(descending=True, stable=True)[: int(selected.sum())][:top].tolist()
    hidden_size = hidden.shape[2]
    rows = [{"layer": i // hidden_size + 1, "unit": i % hidden_size, "min_inside": float(inside.reshape(-1)[i]),
             "max_around": None if not around.shape[1] else float(max_around.reshape(-1)[i]),
             "score": float(flat[i])} for i in order]
    return {"start": start, "end": end, "selected_text": text[start:end], "threshold": threshold, "pad": pad,
            "selected": int(selected.sum()), "units": rows}


def window_scores(on_count: np.ndarray, units: int, length: int, pad: int) -> np.ndarray:
    """For every window start a (0 .. T - length), the fraction of (unit, offset) pairs that agree with the pattern:
    on over [a, a + length), off over the pad offsets before and after that exist. on_count[t]: units on at t."""
    steps = len(on_count)
    csum = np.concatenate([[0], np.cumsum(on_count)])
    a = np.arange(steps - length + 1)
    on = csum[a + length] - csum[a]
    left, right = np.maximum(0, a - pad), np.minimum(steps, a + length + pad)
    off_positions = (a - left) + (right - a - length)
    off_on = (csum[a] - csum[left]) + (csum[right] - csum[a + length])
    return (on + units * off_positions - off_on) / (units * (length + off_positions))


def match(index: MatchIndex, selection: dict, *, top: int = 10) -> dict:
    """The `top` best non-overlapping places in the index's text where the selection's units repeat its pattern
    (see the module's docstring). Returns {"searched_chars", "units", "matches": [{"offset", "end", "score",
    "context" (the match marked ⟦...⟧), "before", "match", "after", "on_fraction" (per character of before + match
    + after: the fraction of the units on there)}, ...]}."""
    units = [(row["layer"] - 1, row["unit"]) for row in selection["units"]]
    if not units:
        raise SelectionError(
            f"no hidden unit is on (> {selection['threshold']:g}) over all of {selection['selected_text']!r} and off "
            f"over the {selection['pad']} characters around it: lower the threshold, shorten the pad, or select "
            "another span")
    length = selection["end"] - selection["start"]
    steps = index.codes.shape[1]
    if length > steps:
        raise SelectionError(f"the selection is longer ({length}) than the text searched ({steps} characters)")
    layers, hidden = zip(*units)
    codes = index.codes[list(layers), :, list(hidden)]  # [m, T]
    on = (codes.float() > 127 * selection["threshold"]).numpy()
    on_count = on.sum(axis=0)
    scores = window_scores(on_count, len(units), length, selection["pad"])
    picked = []
    for a in np.lexsort((np.arange(len(scores)), -scores)):
        if all(abs(int(a) - b) >= length for b in picked):
            picked.append(int(a))
            if len(picked) == top:
                break
    text, fraction = index.text, on_count / len(units)
    rows = []
    for a in picked:
        first, last = max(0, a - CONTEXT), min(len(text), a + length + CONTEXT)
        rows.append({"offset": a, "end": a + length, "score": float(scores[a]),
                     "context": f"{text[first:a]}{MARK_OPEN}{text[a : a + length]}{MARK_CLOSE}{text[a + length : last]}",
                     "before": text[first:a], "match": text[a : a + length], "after": text[a + length : last],
                     "on_fraction": [round(float(f), 4) for f in fraction[first:last]]})
    return {"searched_chars": steps, "units": len(units), "matches": rows}


def select_and_match(model, text: str, start: int, end: int, reference_text: str, *, threshold: float = THRESHOLD,
                     pad: int = PAD, top_units: int = TOP_UNITS, top_matches: int = 10,
                     values: Activations | None = None) -> dict:
    """select_units, then match over the start of the model's reference text (index built once per model);
    SelectionError when no unit follows the selection."""
    selection = select_units(model, text, start, end, threshold=threshold, pad=pad, top=top_units, values=values)
    return {"selection": selection, **match(match_index(model, reference_text), selection, top=top_matches)}
