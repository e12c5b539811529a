"""The page's inputs, checked: the decoding settings and prompt, the model asked for, a text to analyse, units to
pin, a unit to force and the value to force it to, a character to branch on.

Anyone can send anything to the page's endpoints, so each check says what was wrong and what is allowed, as an
InputError, which the page turns into a gr.Error (the previous results stay).
"""

from __future__ import annotations

import math
from typing import Callable

from ..decoding.interventions import Intervention, InterventionError
from ..decoding.sampling import MAX_SEED, DecodeSettings
from ..decoding.unit import KIND_NAMES, KIND_RANGES, KINDS, Unit, UnitError
from ..decoding.unit import check_kind as unit_check_kind
from ..serving.registry import ModelKey
from ..vocab import WHITESPACE_SYMBOLS, UnknownCharactersError, show_char, show_vocab

MAX_NEW_CHARS = 2000  # the page's caps; the library has none
MAX_PROMPT_CHARS = 2000  # a run records every step it reads: the prompt is bounded like what is written
MAX_TEMPERATURE = 5.0
# The page's sliders (a link's values must fit them too: Gradio refuses a slider value outside its range).
PAGE_MAX_TEMPERATURE, PAGE_MIN_TOP_P = 2.0, 0.01
MAX_PINNED = 32
MAX_SOURCE_CHARS, MAX_REVISION_CHARS = 500, 200
MAX_VALUE_CHARS = 100
ZERO, MEAN = "zero", "mean"
SYMBOL_CHARS = {symbol: c for c, symbol in WHITESPACE_SYMBOLS.items()}  # "␣" -> " ": what the page shows, typed back


class InputError(ValueError):
    """Something the person typed or chose cannot be used; the message says what is allowed."""


def model_key(source: str | None, revision: str | None) -> ModelKey:
    source, revision = (source or "").strip(), (revision or "").strip() or None
    if not source:
        raise InputError("Model: give a Hugging Face Hub repo id (owner/name) or a local folder")
    if len(source) > MAX_SOURCE_CHARS or len(revision or "") > MAX_REVISION_CHARS:
        raise InputError(f"Model: the repo id or folder may have up to {MAX_SOURCE_CHARS} characters and the "
                         f"revision up to {MAX_REVISION_CHARS}")
    return ModelKey(source, revision)


def whole_number(name: str, value, low: int, high: int) -> int:
    if isinstance(value, str):
        value = value.strip()
        try:
            value = int(value) if value.lstrip("+-").isdigit() else float(value)  # int(): seeds up to 2**63 - 1
        except ValueError:
            raise InputError(f"{name} must be a whole number from {low:,} to {high:,}, not {value!r}") from None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value != int(value) or not low <= value <= high:
        raise InputError(f"{name} must be a whole number from {low:,} to {high:,}, not {value!r}")
    return int(value)


def number(name: str, value, low: float, high: float, low_open: bool = False) -> float:
    given = value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    bad = (value is None or isinstance(value, bool) or not isinstance(value, (int, float))
           or not math.isfinite(value) or value > high or (value <= low if low_open else value < low))
    if bad:
        interval = f"{'above' if low_open else 'from'} {low:g} {'up to' if low_open else 'to'} {high:g}"
        raise InputError(f"{name} must be a number {interval}, not {given!r}")
    return float(value)


def check_prompt(model, prompt) -> str:
    if not isinstance(prompt, str) or not prompt:
        raise InputError("The prompt is empty: type at least one character for the model to start from")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"The prompt is {len(prompt):,} characters long; the page takes at most "
                         f"{MAX_PROMPT_CHARS:,} (the library has no limit)")
    check_known(model, prompt)
    return prompt


def check_inputs(model, prompt, max_new_chars, temperature, top_k, top_p, seed) -> DecodeSettings:
    """The page's inputs as DecodeSettings, or InputError naming what is wrong and what is allowed."""
    check_prompt(model, prompt)
    return DecodeSettings(
        max_new_chars=whole_number("Number of characters", max_new_chars, 1, MAX_NEW_CHARS),
        temperature=number("Temperature", temperature, 0, MAX_TEMPERATURE),
        top_k=whole_number("Top-k", top_k, 0, len(model.vocab)),
        top_p=number("Top-p", top_p, 0, 1, low_open=True),
        seed=whole_number("Seed", seed, 0, MAX_SEED),
    )


def check_known(model, text: str) -> None:
    """InputError naming the characters of `text` outside the model's vocabulary, and those allowed."""
    unknown = model.tokenizer.unknown(text)
    if unknown:
        raise InputError(str(UnknownCharactersError(unknown, model.vocab)).replace(
            " (or drop unknown characters instead)", ": remove or replace them"))


def pinned_units(text, hidden: int) -> tuple[int, ...]:
    """ "99, 337" -> (99, 337): the units to pin on top of the heatmaps, or InputError saying what is allowed."""
    text = (text or "").strip()
    if len(text) > 400:
        raise InputError(f"Pinned units: at most {MAX_PINNED} unit numbers, separated by commas or spaces")
    parts = [p for p in text.replace(",", " ").split() if p]
    if len(parts) > MAX_PINNED:
        raise InputError(f"Pinned units: at most {MAX_PINNED}, not {len(parts)}")
    return tuple(dict.fromkeys(whole_number("Pinned unit", p, 0, hidden - 1) for p in parts))


def check_text(model, text, limit: int, what: str) -> str:
    """A text to analyse: not empty, at most `limit` characters, every one in the model's vocabulary."""
    if not isinstance(text, str) or not text:
        raise InputError(f"The text is empty: type or paste the text to {what}")
    if len(text) > limit:
        raise InputError(f"The text has {len(text):,} characters; at most {limit:,} here: use a shorter text")
    check_known(model, text)
    return text


def unit_name(layer: int, kind: str, unit: int) -> str:
    return str(Unit(layer, kind, unit))


def parse_unit_name(name) -> Unit:
    """The Unit a name like "L3 hidden 99" names (layer from 1); InputError otherwise."""
    try:
        return Unit.parse(name)
    except UnitError as e:
        raise InputError(str(e)) from None


def check_kind(kind, kinds=KINDS) -> str:
    """The kind in its canonical spelling (charrnn.decoding.unit.check_kind), one of the model's `kinds`, or
    InputError describing each of them."""
    try:
        return unit_check_kind(kind, kinds)
    except UnitError:
        allowed = ", ".join(f"{k} ({KIND_NAMES[k]})" for k in kinds)
        raise InputError(f"Kind must be one of {allowed}, not {kind[:40] if isinstance(kind, str) else kind!r}") \
            from None


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
    layer = whole_number("Layer", layer, 1, model.num_layers)
    kind = check_kind(kind, model.kinds)
    unit = whole_number("Unit", unit, 0, model.hidden_size - 1)
    from_step = whole_number("From step", from_step, 0, steps - 1)
    value = forced_value(value, kind, lambda: mean(layer, kind, unit))
    try:
        return Intervention(layer, kind, unit, value, from_step).check(model.num_layers, model.hidden_size,
                                                                       model.kinds)
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
    return whole_number("Step (0 = the first character written)", step, 0, max_new_chars - 1)
