"""The step's equations: the GRU cell (gru_update) and the model's weights arranged for stepping many rows at once
(StepWeights, with the StepScratch a step writes into). Decoding, interventions and the gate pass all go through
gru_update, so the equations live here once."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import Layout


def gru_update(gi: torch.Tensor, gh: torch.Tensor, h_prev: torch.Tensor, out: torch.Tensor | None = None,
               forces=()):
    """The GRU equations, exactly as torch.nn.GRU computes them.

    gi = W_ih x_t + b_ih and gh = W_hh h_{t-1} + b_hh, each [rows, 3H] in the order (r, z, n); a row is one
    request's step while decoding, or one step of a text when the gates are recomputed for all steps at once.
    Returns the reset gate r_t, the update gate z_t and the new state h_t = (1 - z_t) n_t + z_t h_{t-1}
    (written into `out` when given).

    `forces` (charrnn.decoding.interventions.Force) set chosen units of chosen rows: a forced reset or update gate
    replaces r_t or z_t before it is used; a forced hidden unit replaces h_t after the update, so the next
    layer and the next step see it.
    """
    hidden = h_prev.shape[-1]
    # split_with_sizes, not split: Tensor.split is a Python wrapper, and this runs three times per decode step
    gi_rz, gi_n = gi.split_with_sizes((2 * hidden, hidden), dim=-1)
    gh_rz, gh_n = gh.split_with_sizes((2 * hidden, hidden), dim=-1)
    reset_gate, update_gate = torch.add(gi_rz, gh_rz).sigmoid_().chunk(2, dim=-1)
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

    Matrices keep nn.GRU's [out, in] layout and are used through transposed views, as nn.GRU's own products
    are: the products then round like nn.GRU's, and the states stay within about 5e-6 of its states even
    after thousands of steps (a transposed copy drifts to about 1e-5).
    """

    input_proj: torch.Tensor  # [vocab, 3H]: layer 0's W_ih e(c) + b_ih for every character c
    w_ih: list  # per layer [3H, in]; layer 0's entry is None (folded into input_proj)
    b_ih: list
    w_hh: torch.Tensor  # [layers, 3H, H]
    b_hh: torch.Tensor  # [layers, 3H]
    head_w: torch.Tensor  # [vocab, H]
    head_b: torch.Tensor

    @classmethod
    def of(cls, model) -> "StepWeights":
        gru = model.gru
        layers = range(model.num_layers)

        def param(name):
            return getattr(gru, name).detach()

        with torch.no_grad():
            return cls(
                input_proj=torch.addmm(param("bias_ih_l0"), model.embedding.weight.detach(), param("weight_ih_l0").t()),
                w_ih=[None] + [param(f"weight_ih_l{k}") for k in layers[1:]],
                b_ih=[param(f"bias_ih_l{k}") for k in layers],
                w_hh=torch.stack([param(f"weight_hh_l{k}") for k in layers]),
                b_hh=torch.stack([param(f"bias_hh_l{k}") for k in layers]),
                head_w=model.head.weight.detach(),
                head_b=model.head.bias.detach(),
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(layers, hidden size, vocabulary size)"""
        vocab, hidden = self.head_w.shape
        return self.w_hh.shape[0], hidden, vocab

    # ---- one decode step for several rows ----

    def scratch(self, layout: Layout, rows: int, device) -> "StepScratch":
        return StepScratch.empty(self.shape, layout.padded_rows(rows), device)

    def step(self, layout: Layout, tokens: torch.Tensor, h: torch.Tensor, scratch: "StepScratch", forces=None,
             h_out: torch.Tensor | None = None, logits_out: torch.Tensor | None = None):
        """Read one character per row (tokens [R]) in state h [layers, R, H], R = layout.padded_rows(...): write
        every layer's new state into h_out [layers, R, H] and the next-character logits into logits_out [R, vocab]
        (by default scratch.h, updating the state in place, and scratch.logits). Each row's result depends on its
        own token and state only (the layout is batch-invariant). `forces` maps a 0-based layer to the Forces
        (charrnn.decoding.interventions) applied in it at this step."""
        h_out = scratch.h if h_out is None else h_out
        logits_out = scratch.logits if logits_out is None else logits_out
        layers = h.shape[0]
        layout.hidden_products(h, self.w_hh, self.b_hh, out=scratch.gh)
        for layer in range(layers):
            if layer == 0:
                gi = torch.index_select(self.input_proj, 0, tokens, out=scratch.gi)
            else:
                gi = layout.product(h_out[layer - 1], self.w_ih[layer], self.b_ih[layer], out=scratch.gi)
            gru_update(gi, scratch.gh[layer], h[layer], out=h_out[layer], forces=forces.get(layer, ()) if forces else ())
        layout.product(h_out[-1], self.head_w, self.head_b, out=logits_out)
        return h_out, logits_out

    def run_step(self, layout: Layout, tokens: torch.Tensor, h: torch.Tensor):
        """One step for len(tokens) rows, padded as the layout pads them; returns copies of (h, logits)."""
        rows = tokens.shape[0]
        padded = layout.padded_rows(rows)
        scratch = StepScratch.empty(self.shape, padded, tokens.device)
        tokens = torch.cat([tokens, tokens.new_zeros(padded - rows)])
        h = torch.cat([h, h.new_zeros(h.shape[0], padded - rows, h.shape[2])], dim=1)
        state, logits = self.step(layout, tokens, h, scratch)
        return state[:, :rows].clone(), logits[:rows].clone()

    # ---- every step of a recorded run at once (the gate pass) ----

    def input_gates(self, layer: int, tokens: torch.Tensor, below: torch.Tensor | None) -> torch.Tensor:
        """W_ih x_t + b_ih for layer `layer` at every step: a row lookup for layer 0, a product above it."""
        if layer == 0:
            return self.input_proj.index_select(0, tokens)
        return torch.addmm(self.b_ih[layer], below, self.w_ih[layer].t())

    def hidden_gates(self, layer: int, h_prev: torch.Tensor) -> torch.Tensor:
        """W_hh h_{t-1} + b_hh of one layer, for any number of steps at once (h_prev [T, H])."""
        return torch.addmm(self.b_hh[layer], h_prev, self.w_hh[layer].t())


@dataclass
class StepScratch:
    """What one decode step writes, for a fixed number of (padded) rows; reused step after step."""

    gh: torch.Tensor  # [layers, R, 3H]
    gi: torch.Tensor  # [R, 3H]
    h: torch.Tensor  # [layers, R, H]
    logits: torch.Tensor  # [R, vocab]

    @classmethod
    def empty(cls, shape: tuple[int, int, int], rows: int, device) -> "StepScratch":
        layers, hidden, vocab = shape
        return cls(torch.empty(layers, rows, 3 * hidden, device=device), torch.empty(rows, 3 * hidden, device=device),
                   torch.zeros(layers, rows, hidden, device=device), torch.empty(rows, vocab, device=device))
