"""Interventions: force one unit of one layer (its hidden state, or a GRU's reset or update gate, or an LSTM's cell state
or input, forget or output gate) from a step on.

Finding a unit that correlates with something is a hypothesis; forcing it and watching the text change tests
it. An Intervention is applied inside the one decode loop (through the `forces` of charrnn.decoding.kernel's
gru_update), with the run's own random draws, so the original and the intervened run differ by the intervention
alone.

Steps count the characters the model reads, prompt first, from 0: step t reads character t of
prompt + generated, and the first generated character is chosen after step len(prompt) - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .unit import GRU_KINDS, KIND_NAMES, KIND_RANGES, Unit, UnitError

REACH = {"hidden": "what the tanh can reach", "cell": "the range charrnn shows and forces an LSTM's cell state in"}


class InterventionError(UnitError):
    """An intervention that cannot be applied to this model; the message says what is allowed."""


@dataclass(frozen=True)
class Intervention:
    """Set unit `unit` of layer `layer` (1-based) to `value` at every step t >= from_step.

    kind "hidden": h_t[unit] is set right after the layer's update (the next layer and the next step see it);
    "update" / "reset": z_t[unit] / r_t[unit] is replaced before it is used.
    """

    layer: int
    kind: str
    unit: int
    value: float
    from_step: int = 0

    def check(self, num_layers: int, hidden_size: int, kinds=GRU_KINDS) -> "Intervention":
        """Self, or InterventionError naming what is wrong and what is allowed for this model (its cell's kinds)."""
        try:
            self.target.check(num_layers, hidden_size, kinds)
        except UnitError as e:
            raise InterventionError(str(e)) from None
        if isinstance(self.from_step, bool) or not isinstance(self.from_step, int) or self.from_step < 0:
            raise InterventionError(f"from_step must be a whole number >= 0, not {self.from_step!r}")
        low, high = KIND_RANGES[self.kind]
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value) \
                or not low <= self.value <= high:
            raise InterventionError(f"a forced {KIND_NAMES[self.kind]} must be a number from {low:g} to {high:g} "
                                    f"({REACH.get(self.kind, 'what the sigmoid can reach')}), not {self.value!r}")
        return self

    @property
    def target(self) -> Unit:
        return Unit(self.layer, self.kind, self.unit)

    def __str__(self) -> str:
        return f"{self.target} = {self.value:g} from step {self.from_step}"


@dataclass
class Force:
    """Units of one kind to set in one layer at one step: value[i] into (row[i], unit[i]) of the gate or state,
    a row being a request in a decode step or a step of the text in the gate pass."""

    kind: str
    rows: torch.Tensor
    units: torch.Tensor
    values: torch.Tensor


def step_forces(rows: list[tuple[int, Intervention]], positions: list[int], device) -> dict[int, list[Force]]:
    """The forces of one decode step: `rows` are (row index, intervention) of the rows that have one,
    `positions[i]` the step row i reads now. Keyed by 0-based layer."""
    grouped: dict[tuple[int, str], list[tuple[int, int, float]]] = {}
    for row, intervention in rows:
        if positions[row] >= intervention.from_step:
            grouped.setdefault((intervention.layer - 1, intervention.kind), []).append(
                (row, intervention.unit, float(intervention.value)))
    forces: dict[int, list[Force]] = {}
    for (layer, kind), items in grouped.items():
        row_ids, units, values = zip(*items)
        forces.setdefault(layer, []).append(Force(kind, torch.tensor(row_ids, device=device),
                                                  torch.tensor(units, device=device),
                                                  torch.tensor(values, device=device)))
    return forces


def run_forces(intervention: Intervention | None, steps: int, device) -> dict[int, list[Force]]:
    """The forces of a whole recorded run (rows = steps), for recomputing its gates in one pass."""
    if intervention is None or intervention.from_step >= steps:
        return {}
    rows = torch.arange(intervention.from_step, steps, device=device)
    return {intervention.layer - 1: [Force(intervention.kind, rows, torch.full_like(rows, intervention.unit),
                                           torch.full((len(rows),), float(intervention.value), device=device))]}
