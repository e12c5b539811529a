"""Gate inspection: the Trace of a run, with every layer's reset and update gates recomputed from its states."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import Layout
from .interventions import run_forces
from .model import gru_update
from .sampling import DecodeSettings


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
        (charrnn.interventions) applied in it at this step."""
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


@dataclass
class Trace:
    """Everything about one run, step t being "after reading text[t]" (so probs[t] predicts text[t+1])."""

    text: str
    prompt_len: int
    tokens: torch.Tensor  # [T] token ids of text
    probs: torch.Tensor  # [T, vocab] softmax at temperature 1
    filtered: torch.Tensor  # [T, vocab] after temperature/top-k/top-p: what was sampled from
    reset_gate: torch.Tensor  # [layers, T, hidden]
    update_gate: torch.Tensor  # [layers, T, hidden]
    hidden: torch.Tensor  # [layers, T, hidden]
    vocab: str
    settings: DecodeSettings
    device: str
    intervention: object = None  # the charrnn.interventions.Intervention applied in this run, if any

    @property
    def generated(self) -> str:
        return self.text[self.prompt_len:]

    def surprisal(self) -> torch.Tensor:
        """-log p(text[t] | text[:t]) in nats under the raw distribution, for t >= 1 ([T - 1])."""
        p = self.probs[:-1].gather(1, self.tokens[1:, None])[:, 0]
        return -torch.log(p.clamp_min(1e-30))


def recompute_gates(weights: StepWeights, tokens: torch.Tensor, hidden: torch.Tensor,
                    initial: torch.Tensor | None = None, intervention=None):
    """Reset and update gates of every layer at every step, from the recorded states alone.

    hidden is [layers, T, H], the states after each step; `initial` [layers, H] the states before the first
    step (zero when None, as at the start of a text; a later piece of a long text passes the state it starts
    from). One batched pass per layer: the inputs are the tokens (layer 0) or the layer below's states, the
    previous states are `hidden` shifted. A run made with an intervention gets its forced gates back (the same
    forces, one row per step).
    """
    if hidden.shape[0] == 0:  # a model with no recurrent layers (the bigram) has no gates
        return hidden.clone(), hidden.clone()
    forces = run_forces(intervention, hidden.shape[1], hidden.device)
    resets, updates = [], []
    for layer in range(hidden.shape[0]):
        first = torch.zeros_like(hidden[layer, :1]) if initial is None else initial[layer, None]
        h_prev = torch.cat([first, hidden[layer, :-1]])
        gi = weights.input_gates(layer, tokens, hidden[layer - 1] if layer else None)
        reset_gate, update_gate, _ = gru_update(gi, weights.hidden_gates(layer, h_prev), h_prev,
                                                forces=forces.get(layer, ()))
        resets.append(reset_gate)
        updates.append(update_gate)
    return torch.stack(resets), torch.stack(updates)


def build_trace(weights: StepWeights, *, vocab: str, prompt_len: int, settings: DecodeSettings,
                tokens: torch.Tensor, hidden: torch.Tensor, logits: torch.Tensor, filtered: torch.Tensor,
                intervention=None) -> Trace:
    """Assemble the Trace from what the decode loop recorded (tokens [T], hidden [T, layers, H], logits and
    filtered [T, vocab]); the result's tensors are on the CPU."""
    device = tokens.device
    hidden = hidden.transpose(0, 1)
    reset_gate, update_gate = recompute_gates(weights, tokens, hidden, intervention=intervention)
    parts = dict(tokens=tokens, probs=torch.softmax(logits, -1), filtered=filtered,
                 reset_gate=reset_gate, update_gate=update_gate, hidden=hidden)
    if device.type == "cuda":
        # Pinned, asynchronous copies and one wait for all of them: no synchronising copy per tensor.
        host = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True) for k, v in parts.items()}
        for k, v in parts.items():
            host[k].copy_(v, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        done.synchronize()
        parts = host
    else:
        parts = {k: v.clone(memory_format=torch.contiguous_format) for k, v in parts.items()}
    return Trace(text="".join(vocab[i] for i in parts["tokens"].tolist()), prompt_len=prompt_len, vocab=vocab,
                 settings=settings, device=str(device), intervention=intervention, **parts)


def saturation(gate: torch.Tensor, low: float = 0.1, high: float = 0.9):
    """Per unit, the fraction of steps left-saturated (< low) and right-saturated (> high); gate is [..., T, H].

    As in Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks", fig. 3.
    """
    return (gate < low).float().mean(-2), (gate > high).float().mean(-2)
