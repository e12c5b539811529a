"""Dose-response of a forced unit: the unit set to each of several values across its range, N samples written per
value (seeds 0 .. N-1), and a statistic of the generated text against the value, beside the same sweep of a control
unit of the same layer and kind. Spearman's rho of statistic against value says whether the unit pushes the text
one way (the line-position unit: longer or shorter lines?), the control whether a random unit does as much.

Every run of a sweep is a row of one decode loop (batched, batch-invariant: each run writes what it would alone).
"""

from __future__ import annotations

import random
from typing import Generator

import numpy as np

from ..decoding.interventions import Intervention
from ..decoding.loop import DecodeLoop, DecodeRequest
from ..decoding.sampling import DecodeSettings
from ..decoding.unit import KIND_RANGES
from . import signals
from .activations import run_steps

MAX_VALUES, MAX_SAMPLES, MAX_NEW_CHARS, MAX_PROMPT_CHARS = 11, 32, 500, 500
MAX_CHARS_PER_SWEEP = 60_000  # generated characters of the unit's sweep (the control's as many again)
ROWS = 16  # runs decoded together (memory: each holds its record, 18 KB a step for the shipped 3 x 512 GRU)
STEPS_PER_PIECE = 16


def mean_line_length(text: str) -> float:
    """The mean length of the text's lines (the last one too, even if unfinished)."""
    lines = text.split("\n")
    return sum(map(len, lines)) / len(lines)


def newlines_per_100(text: str) -> float:
    return 100 * text.count("\n") / max(1, len(text))


def capitals(text: str) -> float:
    return sum(c.isupper() for c in text) / max(1, len(text))


STATISTICS = {"mean line length": mean_line_length, "newlines per 100 characters": newlines_per_100,
              "fraction of capitals": capitals}


class DoseError(ValueError):
    """A sweep that cannot be run; the message says what is allowed."""


def spearman(x, y) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None when either side is constant."""
    rx, ry = ranks(np.asarray(x, dtype=float)), ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        ranked[tied] = ranked[tied].mean()
    return ranked


def regex_rates(texts: list[str], pattern: str) -> list[float]:
    """Matches of `pattern` per 100 characters of each text, all found in one child process with a time limit
    (charrnn.analysis.signals): the texts joined by a separator no model writes, matches across it left out."""
    joined, starts = "", []
    for text in texts:
        starts.append(len(joined))
        joined += text + "\n\x00\n"
    counts = [0] * len(texts)
    for start, end in signals.regex_spans(joined, pattern):
        i = int(np.searchsorted(starts, start, side="right")) - 1
        if end <= starts[i] + len(texts[i]):
            counts[i] += 1
    return [100 * n / max(1, len(text)) for n, text in zip(counts, texts)]


def measure(texts: list[str], statistic: str) -> list[float]:
    if statistic in STATISTICS:
        return [STATISTICS[statistic](text) for text in texts]
    return regex_rates(texts, statistic)


def check_sweep(model, prompt, layer, kind, unit, values, samples, max_new_chars) -> list[float]:
    """The values as floats, every argument checked (Intervention.check names what the model allows)."""
    if not model.kinds:
        raise DoseError(f"the {type(model).__name__} has no units to force")
    if not isinstance(prompt, str) or not 1 <= len(prompt) <= MAX_PROMPT_CHARS:
        given = len(prompt) if isinstance(prompt, str) else repr(prompt)[:20]
        raise DoseError(f"the prompt must have 1 to {MAX_PROMPT_CHARS} characters here, not {given}")
    if not isinstance(values, (list, tuple)) or not 1 <= len(values) <= MAX_VALUES:
        raise DoseError(f"values must be a list of 1 to {MAX_VALUES} numbers, not {values!r:.60}")
    for name, value, high in (("samples", samples, MAX_SAMPLES), ("max_new_chars", max_new_chars, MAX_NEW_CHARS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise DoseError(f"{name} must be a whole number from 1 to {high}, not {value!r}")
    if len(values) * samples * max_new_chars > MAX_CHARS_PER_SWEEP:
        raise DoseError(f"values x samples x max_new_chars is {len(values) * samples * max_new_chars:,}; at most "
                        f"{MAX_CHARS_PER_SWEEP:,} characters per sweep: fewer values, samples or characters")
    for value in values:
        Intervention(layer, kind, unit, value, 0).check(model.num_layers, model.hidden_size, model.kinds)
    return [float(v) for v in values]


def control_unit(model, unit: int) -> int:
    """Another unit of the same layer and kind, the same one every time for this unit."""
    others = [u for u in range(model.hidden_size) if u != unit]
    return random.Random(unit).choice(others)


def default_values(kind: str, count: int = 5) -> list[float]:
    low, high = KIND_RANGES[kind]
    return [float(v) for v in np.linspace(low, high, count)]


def dose_steps(model, prompt: str, max_new_chars: int, layer: int, kind: str, unit: int, values, samples: int,
               statistic: str = "mean line length", *, control: int | None = None, temperature: float = 0.8,
               top_k: int = 0, top_p: float = 0.95, from_step: int = 0) -> Generator[None, None, dict]:
    """dose_response as steps: every argument checked now; then the runs decoded STEPS_PER_PIECE steps a piece."""
    values = check_sweep(model, prompt, layer, kind, unit, values, samples, max_new_chars)
    control = control_unit(model, unit) if control is None else control
    Intervention(layer, kind, control, values[0], 0).check(model.num_layers, model.hidden_size, model.kinds)
    if statistic not in STATISTICS:
        signals.check_pattern(statistic)  # a regular expression
    ids = tuple(model.tokenizer.encode(prompt))
    requests = [DecodeRequest(ids, DecodeSettings(max_new_chars, temperature, top_k, top_p, seed),
                              Intervention(layer, kind, forced, value, from_step))
                for forced in (unit, control) for value in values for seed in range(samples)]

    def steps():
        texts = []
        for start in range(0, len(requests), ROWS):
            loop = DecodeLoop(model)
            rows = [loop.add(request) for request in requests[start : start + ROWS]]
            while not all(row.done for row in rows):
                for _ in range(STEPS_PER_PIECE):
                    loop.step()
                yield
            texts += [model.tokenizer.decode(row.tokens[len(ids):]) for row in rows]
        found = np.array(measure(texts, statistic)).reshape(2, len(values), samples)
        return {"prompt": prompt, "layer": layer, "kind": kind, "unit": unit, "control": control, "values": values,
                "samples": samples, "statistic": statistic, "max_new_chars": max_new_chars,
                "runs": {"unit": found[0].tolist(), "control": found[1].tolist()},
                "means": {"unit": found[0].mean(1).tolist(), "control": found[1].mean(1).tolist()},
                "rho": {name: spearman(np.repeat(values, samples), found[i].reshape(-1))
                        for i, name in enumerate(("unit", "control"))},
                "texts": {name: [texts[(i * len(values) + v) * samples : (i * len(values) + v + 1) * samples]
                                 for v in range(len(values))] for i, name in enumerate(("unit", "control"))}}

    return steps()


def dose_response(model, prompt: str, max_new_chars: int, layer: int, kind: str, unit: int, values, samples: int,
                  statistic: str = "mean line length", **kwargs) -> dict:
    """Force unit `unit` of layer `layer` (from 1) and `kind` to each of `values` from step `from_step` on, writing
    `samples` runs per value (seeds 0 .. samples-1) after `prompt`; the same for the control unit. `statistic`: a
    name of STATISTICS or a regular expression (its matches per 100 characters). Returns {"values", "runs":
    {"unit": [[statistic per seed] per value], "control": ...}, "means", "rho": {"unit", "control"} (Spearman,
    None when constant), "texts": {"unit": [[generated text per seed] per value], "control": ...}, ...}."""
    return run_steps(dose_steps(model, prompt, max_new_chars, layer, kind, unit, values, samples, statistic, **kwargs))
