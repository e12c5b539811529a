"""The step's equations: the GRU cell (gru_update) and the model's weights arranged for stepping many rows at once
(StepWeights, with the StepScratch a step writes into). Decoding, interventions and the gate pass all go through
gru_update, so the equations live here once.

A step records, for every layer and row, each kind of value the layer computes (charrnn.decoding.unit.KINDS:
the new state h_t, the reset gate r_t, the update gate z_t) as it computes them: a record [layers, kinds, rows, H],
its kind 0 the states the next step reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import Layout, Matrix


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
    kinds: int = 3  # values a layer records per unit and step: h_t, r_t, z_t

    @classmethod
    def of(cls, model) -> "StepWeights":
        gru = model.gru
        layers = range(model.num_layers)

        def param(name):
            return getattr(gru, name).detach()

        with torch.no_grad():
            w_hh = torch.stack([param(f"weight_hh_l{k}") for k in layers])
            b_hh = torch.stack([param(f"bias_hh_l{k}") for k in layers])
            return cls(
                input_proj=torch.addmm(param("bias_ih_l0"), model.embedding.weight.detach(), param("weight_ih_l0").t()),
                w_ih=[None] + [Matrix(param(f"weight_ih_l{k}"), param(f"bias_ih_l{k}")) for k in layers[1:]],
                w_hh=[Matrix(w_hh[k], b_hh[k]) for k in layers],
                stacked_hh=(w_hh, b_hh),
                head=Matrix(model.head.weight.detach(), model.head.bias.detach()),
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(layers, hidden size, vocabulary size)"""
        vocab, hidden = self.head.weight.shape
        return len(self.w_hh), hidden, vocab

    # ---- one decode step for several rows ----

    def scratch(self, layout: Layout, rows: int, device) -> "StepScratch":
        return StepScratch.empty(self.shape, self.kinds, layout.padded_rows(rows), device)

    def step(self, layout: Layout, tokens: torch.Tensor, h: torch.Tensor, scratch: "StepScratch", forces=None,
             record: torch.Tensor | None = None, logits_out: torch.Tensor | None = None):
        """Read one character per row (tokens [R]) in state h [layers, R, H], R = layout.padded_rows(...): write
        what every layer computes into `record` [layers, kinds, R, H] (its kind 0, the new states) and the
        next-character logits into logits_out [R, vocab] (by default scratch.record, updating the state scratch.h
        in place, and scratch.logits). Each row's result depends on its own token and state only (the layout is
        batch-invariant). `forces` maps a 0-based layer to the Forces (charrnn.decoding.interventions) applied in it
        at this step. Returns (the new states [layers, R, H], the logits)."""
        record = scratch.record if record is None else record
        logits_out = scratch.logits if logits_out is None else logits_out
        layers = h.shape[0]
        layout.hidden_products(h, self.w_hh, self.stacked_hh, out=scratch.gh)
        for layer in range(layers):
            if layer == 0:
                gi = torch.index_select(self.input_proj, 0, tokens, out=scratch.gi)
            else:
                gi = layout.product(record[layer - 1, 0], self.w_ih[layer], out=scratch.gi)
            gru_update(gi, scratch.gh[layer], h[layer], out=record[layer, 0], gates_out=record[layer, 1:],
                       forces=forces.get(layer, ()) if forces else ())
        layout.product(record[-1, 0], self.head, out=logits_out)
        return record[:, 0], logits_out

    def run_step(self, layout: Layout, tokens: torch.Tensor, h: torch.Tensor):
        """One step for len(tokens) rows, padded as the layout pads them; returns copies of (h, logits)."""
        rows = tokens.shape[0]
        scratch = self.scratch(layout, rows, tokens.device)
        padded = scratch.logits.shape[0]
        tokens = torch.cat([tokens, tokens.new_zeros(padded - rows)])
        h = torch.cat([h, h.new_zeros(h.shape[0], padded - rows, h.shape[2])], dim=1)
        state, logits = self.step(layout, tokens, h, scratch)
        return state[:, :rows].clone(), logits[:rows].clone()

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

    gh: torch.Tensor  # [layers, R, 3H]
    gi: torch.Tensor  # [R, 3H]
    record: torch.Tensor  # [layers, kinds, R, H]
    logits: torch.Tensor  # [R, vocab]

    @property
    def h(self) -> torch.Tensor:
        """The states of the last step it recorded, [layers, R, H]."""
        return self.record[:, 0]

    @classmethod
    def empty(cls, shape: tuple[int, int, int], kinds: int, rows: int, device) -> "StepScratch":
        layers, hidden, vocab = shape
        return cls(torch.empty(layers, rows, 3 * hidden, device=device), torch.empty(rows, 3 * hidden, device=device),
                   torch.zeros(layers, kinds, rows, hidden, device=device), torch.empty(rows, vocab, device=device))
