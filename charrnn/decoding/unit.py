"""A unit: one position of one layer, and the kind of value read there (its hidden state or one of its gates).

Every part of charrnn names a unit the same way: `Unit(layer, kind, index)` with layers counted from 1, written
and read as "L3 hidden 99". The kinds are the values a layer's step computes (a GRU's GRU_KINDS, an LSTM's
LSTM_KINDS; KIND_NAMES), each within the range its nonlinearity reaches (KIND_RANGES).
"""

from __future__ import annotations

import re
from typing import NamedTuple

GRU_KINDS = ("hidden", "reset", "update")  # h_t, r_t, z_t
LSTM_KINDS = ("hidden", "cell", "input", "forget", "output")  # h_t, c_t, i_t, f_t, o_t
KINDS = GRU_KINDS  # the shipped model's
ALL_KINDS = ("hidden", "reset", "update", "cell", "input", "forget", "output")
KIND_NAMES = {"hidden": "hidden state h_t", "reset": "reset gate r_t", "update": "update gate z_t",
              "cell": "cell state c_t", "input": "input gate i_t", "forget": "forget gate f_t",
              "output": "output gate o_t"}
# What tanh and sigmoid reach; an LSTM's cell state is unbounded, and shown (and forced) within +-20 (the shipped
# LSTM's passes 20 at 0.2 % of its units and steps over the first 3,000
# characters of its reference text, 10 at 1.3 %).
KIND_RANGES = {"hidden": (-1.0, 1.0), "reset": (0.0, 1.0), "update": (0.0, 1.0), "cell": (-20.0, 20.0),
               "input": (0.0, 1.0), "forget": (0.0, 1.0), "output": (0.0, 1.0)}
# The gate whose mean m over a text gives a unit's memory timescale 1 / (1 - m): near 1 it keeps the old state.
MEMORY_GATE = {GRU_KINDS: "update", LSTM_KINDS: "forget"}


def gates_of(kinds) -> tuple:
    """The gates among a cell's kinds (its states left out)."""
    return tuple(kind for kind in kinds if kind not in ("hidden", "cell"))

# "L3 hidden 99"; "L3 hidden u99" and "L3 u99 hidden" (older names) are read too.
NAME = re.compile(r"^\s*L(\d{1,4})\s+(?:([a-z]+)\s+u?(\d{1,6})|u(\d{1,6})\s+([a-z]+))\s*$", re.IGNORECASE)
MAX_NAME_CHARS = 40


class UnitError(ValueError):
    """A unit that cannot be named or found in this model; the message says what is allowed."""


def either(words) -> str:
    """("hidden", "reset", "update") -> "hidden, reset or update"."""
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else "".join(words)


def check_kind(kind, kinds=KINDS) -> str:
    """The kind, in its canonical spelling (case and surrounding spaces do not matter), or UnitError naming the
    allowed ones."""
    if isinstance(kind, str) and kind.strip().lower() in kinds:
        return kind.strip().lower()
    raise UnitError(f"kind must be one of {', '.join(kinds)}, not {kind[:40] if isinstance(kind, str) else kind!r}")


class Unit(NamedTuple):
    """(layer from 1, kind, index): a tuple, so `layer, kind, index = unit` reads it back."""

    layer: int
    kind: str
    index: int

    def __str__(self) -> str:
        return f"L{self.layer} {self.kind} {self.index}"

    @classmethod
    def parse(cls, name, kinds=ALL_KINDS) -> "Unit":
        """The unit a name like "L3 hidden 99" names, or UnitError."""
        match = NAME.match(name) if isinstance(name, str) and len(name) <= MAX_NAME_CHARS else None
        if match is None:
            raise UnitError(f"A unit is named like 'L3 hidden 99' (layer from 1, then {either(kinds)}, "
                            f"then the unit's index), not {str(name)[:MAX_NAME_CHARS]!r}")
        layer, kind, index, index_after, kind_after = match.groups()
        return cls(int(layer), check_kind(kind or kind_after, kinds), int(index or index_after))

    def check(self, layers: int, hidden_size: int, kinds=KINDS) -> "Unit":
        """Self, or UnitError naming what is allowed for a model of `layers` layers of `hidden_size` units (its
        kind spelled as `kinds` spell it)."""
        if self.kind not in kinds:
            raise UnitError(f"kind must be one of {', '.join(kinds)}, not {self.kind!r}")
        for name, value, low, high in (("layer", self.layer, 1, layers), ("unit", self.index, 0, hidden_size - 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise UnitError(f"{name} must be a whole number from {low} to {high} for this model "
                                f"({layers} layers of {hidden_size} units), not {value!r}")
        return self

    @property
    def described(self) -> str:
        """What the unit's value is, in words: "hidden state h_t"."""
        return KIND_NAMES[self.kind]

    @property
    def value_range(self) -> tuple[float, float]:
        return KIND_RANGES[self.kind]
