"""The fields of a config.json that define a model, checked one by one before anything is built from them.

config.json comes from whoever published the model. Only the fields that the model's shape depends on are checked
here; informational ones (training figures, notes) pass through untouched and are shown only where well formed.
"""

from __future__ import annotations

import inspect
import math

from ..vocab import Vocab

MAX_VOCAB_CHARS = 10_000  # a character vocabulary; the largest scripts have a few thousand


class ConfigError(ValueError):
    """A field of config.json that defines the model cannot be built from; the message says which and why."""


def shown(value) -> str:
    """A value quoted for a message, cut short (it came from a file anyone can write)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def constructor_arguments(model_class, config: dict) -> dict:
    """The arguments config.json gives model_class's constructor: its value for each parameter it names, the
    constructor's default for the others. Keys the constructor does not take are left out, as the Hub mixin does."""
    arguments = {}
    for name, parameter in inspect.signature(model_class.__init__).parameters.items():
        if name == "self" or parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            continue
        if name in config:
            arguments[name] = config[name]
        elif parameter.default is not parameter.empty:
            arguments[name] = parameter.default
    return arguments


def vocab(value) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"'vocab' must be a string of the model's characters, not {shown(value)}")
    if len(value) > MAX_VOCAB_CHARS:
        raise ConfigError(f"'vocab' has {len(value):,} characters; at most {MAX_VOCAB_CHARS:,} are allowed")
    try:
        Vocab(value)
    except ValueError as e:
        raise ConfigError(f"'vocab' is not a vocabulary: {e}") from None
    return value


def whole_number(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"'{name}' must be a whole number from {low:,} to {high:,}, not {shown(value)}")
    return value


def fraction(name: str, value) -> float:
    """A number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value < 1:
        raise ConfigError(f"'{name}' must be a number from 0 up to (not including) 1, not {shown(value)}")
    return float(value)


def one_of(name: str, value, allowed) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"'{name}' must be one of {', '.join(map(repr, allowed))}, not {shown(value)}")
    return value
