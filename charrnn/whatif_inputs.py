"""The What-if tab's inputs, checked: a unit to force and the value to force it to, a character to branch on.

Anyone can send anything to the page's endpoints, so each check says what was wrong and what is allowed
(charrnn.playground.InputError, which the page turns into a gr.Error).
"""

from __future__ import annotations

import math
import re
from typing import Callable

from .interventions import KIND_NAMES, KIND_RANGES, KINDS, Intervention, InterventionError
from .playground import InputError, whole_number
from .vocab import WHITESPACE_SYMBOLS, show_char, show_vocab

# How the Units tab names a unit ("L3 hidden 99"); "L3 hidden u99" and "L3 u99 hidden" are read too.
UNIT_NAME = re.compile(r"^\s*L(\d{1,4})\s+(?:(hidden|reset|update)\s+u?(\d{1,6})|u(\d{1,6})\s+(hidden|reset|update))"
                       r"\s*$", re.IGNORECASE)
MAX_VALUE_CHARS = 100
ZERO, MEAN = "zero", "mean"
SYMBOL_CHARS = {symbol: c for c, symbol in WHITESPACE_SYMBOLS.items()}  # "␣" -> " ": what the page shows, typed back


def unit_name(layer: int, kind: str, unit: int) -> str:
    return f"L{layer} {kind} {unit}"


def parse_unit_name(name: str) -> tuple[int, str, int]:
    """(layer from 1, kind, unit) of a name like "L3 hidden 99"; InputError otherwise."""
    match = UNIT_NAME.match(name or "") if isinstance(name, str) and len(name) <= 40 else None
    if match is None:
        raise InputError(f"A unit is named like 'L3 hidden 99' (layer from 1, then hidden, reset or update, then the "
                         f"unit's index), not {str(name)[:40]!r}")
    layer, kind, unit, unit_after, kind_after = match.groups()
    return int(layer), (kind or kind_after).lower(), int(unit or unit_after)


def check_kind(kind) -> str:
    if isinstance(kind, str) and kind.strip().lower() in KINDS:
        return kind.strip().lower()
    allowed = ", ".join(f"{k} ({KIND_NAMES[k]})" for k in KINDS)
    raise InputError(f"Kind must be one of {allowed}, not {kind[:40] if isinstance(kind, str) else kind!r}")


def forced_value(value, kind: str, mean: Callable[[], float]) -> float:
    """The value to force: a number, "zero", or "mean" (the unit's mean over the model's reference text, asked of
    `mean`, which raises InputError when the model has none)."""
    low, high = KIND_RANGES[kind]
    allowed = (f'Value must be a number from {low:g} to {high:g} (what the {KIND_NAMES[kind]} can reach), "zero", or '
               '"mean" (the unit\'s mean over the model\'s reference text)')
    if isinstance(value, str):
        word = value.strip().lower()
        if len(word) > MAX_VALUE_CHARS:
            raise InputError(f"{allowed}; got a text of {len(value):,} characters")
        if word in (ZERO, "0"):
            return 0.0
        if word == MEAN or word.startswith("mean "):
            return mean()
        try:
            value = float(word)
        except ValueError:
            raise InputError(f"{allowed}, not {value!r}") from None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{allowed}, not {value!r}")
    return float(value)


def check_intervention(model, layer, kind, unit, value, from_step, steps: int,
                       mean: Callable[[int, str, int], float]) -> Intervention:
    """The Intervention the inputs ask for on `model`, for a run of `steps` characters (prompt included);
    `mean(layer, kind, unit)` gives a unit's mean over the reference text, or raises InputError."""
    layer = whole_number(layer, "Layer", 1, model.num_layers)
    kind = check_kind(kind)
    unit = whole_number(unit, "Unit", 0, model.hidden_size - 1)
    from_step = whole_number(from_step, "From step", 0, steps - 1)
    value = forced_value(value, kind, lambda: mean(layer, kind, unit))
    try:
        return Intervention(layer, kind, unit, value, from_step).check(model.num_layers, model.hidden_size)
    except InterventionError as e:
        raise InputError(f"Value: {e}") from None


def branch_char(model, char) -> str:
    """The one character to write at a branch: itself, or what a whitespace symbol (␣ ↵ ⇥) stands for."""
    if not isinstance(char, str) or not char:
        raise InputError("Character: give exactly one character to write there (␣ for a space, ↵ for a newline)")
    char = SYMBOL_CHARS.get(char, char)
    if len(char) != 1:
        raise InputError(f"Character: give exactly one character to write there (␣ for a space, ↵ for a newline), "
                         f"not {char[:20]!r}{'…' if len(char) > 20 else ''} ({len(char):,} characters)")
    if model.tokenizer.unknown(char):
        raise InputError(f"Character: {show_char(char)} is not in the model's vocabulary; allowed are the "
                         f"{len(model.vocab)} characters {show_vocab(model.vocab)}")
    return char


def branch_step(step, max_new_chars: int) -> int:
    return whole_number(step, "Step (0 = the first character written)", 0, max_new_chars - 1)
