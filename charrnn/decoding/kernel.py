"""The step's equations: the GRU cell (gru_update) and the LSTM cell (lstm_update), and the model's weights arranged
for stepping many rows at once (StepWeights, with the StepScratch a step writes into). Decoding, interventions and
the gate pass all go through these two functions, so the equations live here once.

A step records, for every layer and row, each kind of value the layer computes (charrnn.decoding.unit: a GRU's
h_t, r_t, z_t; an LSTM's h_t, c_t, i_t, f_t, o_t) as it computes them: a record [layers, kinds, rows, H], whose
first STATE_KINDS kinds (h_t; an LSTM's h_t and c_t) are the state the next step reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import Layout, Matrix
from .unit import GRU_KINDS, LSTM_KINDS

STATE_KINDS = {"gru": 1, "lstm": 2}  # the record's first kinds that are the cell's state
KINDS_OF = {"gru": GRU_KINDS, "lstm": LSTM_KINDS}


def gru_update(gi: torch.Tensor, gh: torch.Tensor, h_prev: torch.Tensor, out: torch.Tensor | None = None,
               forces=(), gates_out: torch.Tensor | None = None):
    """The GRU equations, exactly as torch.nn.GRU computes them.

    gi = W_ih x_t + b_ih and gh = W_hh h_{t-1} + b_hh, each [rows, 3H] in the order (r, z, n); a row is one
    request's step while decoding, or one step of a text when the gates are recomputed for all steps at once.
    Returns the reset gate r_t, the update gate z_t and the new state h_t = (1 - z_t) n_t + z_t h_{t-1}
    (h_t written into `out` [rows, H] and (r_t, z_t) into `gates_out` [2, rows, H] when given).

    `forces` (charrnn.decoding.interventions.Force) set chosen units of chosen rows: a forced reset or update gate
    replaces r_t or z_t before it is used; a forced hidden unit replaces h_t after the update, so the next
    layer and the next step see it.
    """
    rows, hidden = h_prev.shape[-2], h_prev.shape[-1]
    # split_with_sizes, not split: Tensor.split is a Python wrapper, and this runs three times per decode step
    gi_rz, gi_n = gi.split_with_sizes((2 * hidden, hidden), dim=-1)
    gh_rz, gh_n = gh.split_with_sizes((2 * hidden, hidden), dim=-1)
    if gates_out is None:
        reset_gate, update_gate = torch.add(gi_rz, gh_rz).sigmoid_().chunk(2, dim=-1)
    else:
        torch.add(gi_rz.view(rows, 2, hidden).transpose(0, 1), gh_rz.view(rows, 2, hidden).transpose(0, 1),
                  out=gates_out).sigmoid_()
        reset_gate, update_gate = gates_out.unbind()
    for force in forces:
        if force.kind != "hidden":
            (reset_gate if force.kind == "reset" else update_gate).index_put_((force.rows, force.units), force.values)
    candidate = torch.addcmul(gi_n, reset_gate, gh_n).tanh_()
    h = torch.lerp(candidate, h_prev, update_gate, out=out)
    for force in forces:
        if force.kind == "hidden":
            h.index_put_((force.rows, force.units), force.values)
    return reset_gate, update_gate, h


def lstm_update(gi: torch.Tensor, gh: torch.Tensor, c_prev: torch.Tensor, out: torch.Tensor | None = None,
                forces=()):
    """The LSTM equations, exactly as torch.nn.LSTM computes them.

    gi = W_ih x_t + b_ih and gh = W_hh h_{t-1} + b_hh, each [rows, 4H] in nn.LSTM's order (i, f, g, o):
    i_t = sigmoid(.), f_t = sigmoid(.), g_t = tanh(.), o_t = sigmoid(.), c_t = f_t c_{t-1} + i_t g_t and
    h_t = o_t tanh(c_t). Writes (h_t, c_t, i_t, f_t, o_t) into `out` [5, rows, H] (a fresh tensor when None) and
    returns it. A forced gate replaces i_t, f_t or o_t before it is used; a forced cell unit replaces c_t before
    h_t is computed from it (the next step sees it too); a forced hidden unit replaces h_t after the update.
    """
    rows, hidden = c_prev.shape[-2], c_prev.shape[-1]
    out = torch.empty(5, rows, hidden, dtype=gi.dtype, device=gi.device) if out is None else out
    summed = torch.add(gi, gh).view(rows, 4, hidden)
    h, c, input_gate, forget_gate, output_gate = out.unbind()
    torch.sigmoid(summed[:, 0], out=input_gate)
    torch.sigmoid(summed[:, 1], out=forget_gate)
    torch.sigmoid(summed[:, 3], out=output_gate)
    candidate = summed[:, 2].tanh()
    gates = {"input": input_gate, "forget": forget_gate, "output": output_gate}
    for force in forces:
        if force.kind in gates:
            gates[force.kind].index_put_((force.rows, force.units), force.values)
    torch.addcmul(torch.mul(forget_gate, c_prev), input_gate, candidate, out=c)
    for force in forces:
        if force.kind == "cell":
            c.index_put_((force.rows, force.units), force.values)
    torch.mul(output_gate, c.tanh(), out=h)
    for force in forces:
        if force.kind == "hidden":
            h.index_put_((force.rows, force.units), force.values)
    return out


def cell_step(cell: str, gi, gh, state: torch.Tensor, record: torch.Tensor, forces=()) -> None:
    """One layer's step of the cell: state [STATE_KINDS, rows, H] read, record [kinds, rows, H] written."""
    if cell == "gru":
        gru_update(gi, gh, state[0], out=record[0], gates_out=record[1:], forces=forces)
    else:
        lstm_update(gi, gh, state[1], out=record, forces=forces)


@dataclass
class StepWeights:
    """The model's weights arranged for decoding and for the batched gate pass.

    Matrices keep nn.GRU's [out, in] layout (charrnn.decoding.layout.Matrix) and the BLAS kernels use them through
    transposed views, as nn.GRU's own products are: the products then round like nn.GRU's, and the states stay
    within about 5e-6 of its states even after thousands of steps (a transposed copy drifts to about 1e-5).
    """

    input_proj: torch.Tensor  # [vocab, 3H]: layer 0's W_ih e(c) + b_ih for every character c
    w_ih: list  # per layer a Matrix [3H, in]; layer 0's entry is None (folded into input_proj)
    w_hh: list  # per layer a Matrix [3H, H]
    stacked_hh: tuple  # (every layer's W_hh [layers, 3H, H], b_hh [layers, 3H]), for the "stacked" layouts
    head: Matrix  # [vocab, H]
    cell: str = "gru"

    @property
    def kind_names(self) -> tuple:
        """What a layer records per unit and step: a GRU's h_t, r_t, z_t; an LSTM's h_t, c_t, i_t, f_t, o_t."""
        return KINDS_OF[self.cell]

    @property
    def kinds(self) -> int:
        return len(self.kind_names)

    @property
    def state_kinds(self) -> int:
        return STATE_KINDS[self.cell]

    @classmethod
    def of(cls, model) -> "StepWeights":
        rnn = model.rnn
        layers = range(model.num_layers)

        def param(name):
            return getattr(rnn, name).detach()

        with torch.no_grad():
            w_hh = torch.stack([param(f"weight_hh_l{k}") for k in layers])
            b_hh = torch.stack([param(f"bias_hh_l{k}") for k in layers])
            return cls(
                input_proj=torch.addmm(param("bias_ih_l0"), model.embedding.weight.detach(), param("weight_ih_l0").t()),
                w_ih=[None] + [Matrix(param(f"weight_ih_l{k}"), param(f"bias_ih_l{k}")) for k in layers[1:]],
                w_hh=[Matrix(w_hh[k], b_hh[k]) for k in layers],
                stacked_hh=(w_hh, b_hh),
                head=Matrix(model.head.weight.detach(), model.head.bias.detach()),
                cell=model.CELL,
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(layers, hidden size, vocabulary size)"""
        vocab, hidden = self.head.weight.shape
        return len(self.w_hh), hidden, vocab

    # ---- one decode step for several rows ----

    def scratch(self, layout: Layout, rows: int, device) -> "StepScratch":
        layers, hidden, vocab = self.shape
        padded = layout.padded_rows(rows)
        gates = self.input_proj.shape[1]
        return StepScratch(torch.empty(layers, padded, gates, device=device), torch.empty(padded, gates, device=device),
                           torch.zeros(layers, self.kinds, padded, hidden, device=device),
                           torch.empty(padded, vocab, device=device), self.state_kinds)

    def step(self, layout: Layout, tokens: torch.Tensor, state: torch.Tensor, scratch: "StepScratch", forces=None,
             record: torch.Tensor | None = None, logits_out: torch.Tensor | None = None):
        """Read one character per row (tokens [R]) in `state` [layers, state_kinds, R, H] (h_{t-1}; an LSTM's
        h_{t-1} and c_{t-1}), R = layout.padded_rows(...): write what every layer computes into `record`
        [layers, kinds, R, H] (its first state_kinds kinds, the new state) and the next-character logits into
        logits_out [R, vocab] (by default scratch.record, updating scratch.state in place, and scratch.logits).
        Each row's result depends on its own token and state only (the layout is batch-invariant). `forces` maps a
        0-based layer to the Forces (charrnn.decoding.interventions) applied in it at this step. Returns (the new
        state, the logits)."""
        record = scratch.record if record is None else record
        logits_out = scratch.logits if logits_out is None else logits_out
        layers = state.shape[0]
        layout.hidden_products(state[:, 0], self.w_hh, self.stacked_hh, out=scratch.gh)
        for layer in range(layers):
            if layer == 0:
                gi = torch.index_select(self.input_proj, 0, tokens, out=scratch.gi)
            else:
                gi = layout.product(record[layer - 1, 0], self.w_ih[layer], out=scratch.gi)
            cell_step(self.cell, gi, scratch.gh[layer], state[layer], record[layer],
                      forces.get(layer, ()) if forces else ())
        layout.product(record[-1, 0], self.head, out=logits_out)
        return record[:, : self.state_kinds], logits_out

    def run_step(self, layout: Layout, tokens: torch.Tensor, state: torch.Tensor):
        """One step for len(tokens) rows (state [layers, state_kinds, rows, H]), padded as the layout pads them;
        returns copies of (the new state, the logits)."""
        rows = tokens.shape[0]
        scratch = self.scratch(layout, rows, tokens.device)
        padded = scratch.logits.shape[0]
        tokens = torch.cat([tokens, tokens.new_zeros(padded - rows)])
        state = torch.cat([state, state.new_zeros(*state.shape[:2], padded - rows, state.shape[3])], dim=2)
        state, logits = self.step(layout, tokens, state, scratch)
        return state[:, :, :rows].clone(), logits[:rows].clone()

    # ---- every step of a recorded run at once (the gate pass) ----

    def input_gates(self, layer: int, tokens: torch.Tensor, below: torch.Tensor | None) -> torch.Tensor:
        """W_ih x_t + b_ih for layer `layer` at every step: a row lookup for layer 0, a product above it."""
        if layer == 0:
            return self.input_proj.index_select(0, tokens)
        return torch.addmm(self.w_ih[layer].bias, below, self.w_ih[layer].weight.t())

    def hidden_gates(self, layer: int, h_prev: torch.Tensor) -> torch.Tensor:
        """W_hh h_{t-1} + b_hh of one layer, for any number of steps at once (h_prev [T, H])."""
        return torch.addmm(self.w_hh[layer].bias, h_prev, self.w_hh[layer].weight.t())


@dataclass
class StepScratch:
    """What one decode step writes, for a fixed number of (padded) rows; reused step after step."""

    gh: torch.Tensor  # [layers, R, gates * H]
    gi: torch.Tensor  # [R, gates * H]
    record: torch.Tensor  # [layers, kinds, R, H]
    logits: torch.Tensor  # [R, vocab]
    state_kinds: int = 1

    @property
    def state(self) -> torch.Tensor:
        """The state the last step recorded, [layers, state_kinds, R, H]."""
        return self.record[:, : self.state_kinds]
