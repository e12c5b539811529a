"""Gate inspection: the Trace of a run, with every layer's reset and update gates recomputed from its states."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import gru_update
from .sampling import DecodeSettings


@dataclass
class StepWeights:
    """The model's weights arranged for decoding and for the batched gate pass.

    Matrices keep nn.GRU's [out, in] layout and are used through transposed views, as nn.GRU's own products
    are: the products then round like nn.GRU's, and the states stay within about 5e-6 of its states even
    after thousands of steps (a transposed copy runs faster on the CPU but drifts to about 1e-5). The
    previous-state matrices of all layers are stacked so one batched product serves every layer in a step.
    """

    input_proj: torch.Tensor  # [vocab, 3H]: layer 0's W_ih e(c) + b_ih for every character c
    w_ih: list  # per layer [3H, in]; layer 0's entry is None (folded into input_proj)
    b_ih: list
    w_hh: torch.Tensor  # [layers, 3H, H]
    b_hh: torch.Tensor  # [layers, 1, 3H]
    head_w: torch.Tensor  # [vocab, H]
    head_b: torch.Tensor
    # One step's products are split into this many row blocks and run as one batched product, so that every
    # CPU core reads its share of the weights (a batch-1 step is bound by memory bandwidth, and one product
    # alone runs on one core). On CUDA a single kernel per product is faster: 1.
    parts: int = 1

    @classmethod
    def of(cls, model) -> "StepWeights":
        gru = model.gru
        layers = range(model.num_layers)
        parts = torch.get_num_threads() if model.device.type == "cpu" else 1
        while (3 * model.hidden_size) % parts:
            parts -= 1

        def param(name):
            return getattr(gru, name).detach()

        with torch.no_grad():
            return cls(
                input_proj=torch.addmm(param("bias_ih_l0"), model.embedding.weight.detach(), param("weight_ih_l0").t()),
                w_ih=[None] + [param(f"weight_ih_l{k}") for k in layers[1:]],
                b_ih=[param(f"bias_ih_l{k}") for k in layers],
                w_hh=torch.stack([param(f"weight_hh_l{k}") for k in layers]),
                b_hh=torch.stack([param(f"bias_hh_l{k}")[None] for k in layers]),
                head_w=model.head.weight.detach(),
                head_b=model.head.bias.detach(),
                parts=parts,
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(layers, hidden size, vocabulary size)"""
        vocab, hidden = self.head_w.shape
        return self.w_hh.shape[0], hidden, vocab

    def input_gates(self, layer: int, tokens: torch.Tensor, below: torch.Tensor | None) -> torch.Tensor:
        """W_ih x_t + b_ih for layer `layer`: a row lookup for layer 0, a matrix product above it (for one step
        or, in the gate pass, for every step at once)."""
        if layer == 0:
            return self.input_proj.index_select(0, tokens)
        if below.shape[0] == 1 and self.parts > 1:  # one decode step on the CPU
            return self.blocked_products(self.b_ih[layer][None, None], below[None], self.w_ih[layer][None])[0]
        return torch.addmm(self.b_ih[layer], below, self.w_ih[layer].t())

    def blocked_products(self, bias: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """x @ weight.T + bias for a batch ([batch, 1, in] @ [batch, out, in]) of one-row products, each split
        into `parts` row blocks of the weight so the cores share the work; [batch, 1, out]."""
        batch, _, width = x.shape
        out = weight.shape[1]
        rows = out // self.parts
        x = x[:, None].expand(batch, self.parts, 1, width).reshape(batch * self.parts, 1, width)
        blocks = weight.reshape(batch * self.parts, rows, width).transpose(1, 2)
        return torch.baddbmm(bias.reshape(batch * self.parts, 1, rows), x, blocks).view(batch, 1, out)

    def hidden_gates(self, layer: int, h_prev: torch.Tensor) -> torch.Tensor:
        """W_hh h_{t-1} + b_hh of one layer, for any number of steps at once (h_prev [T, H])."""
        return torch.addmm(self.b_hh[layer, 0], h_prev, self.w_hh[layer].t())

    def every_layer_hidden_gates(self, h: torch.Tensor) -> torch.Tensor:
        """W_hh h_{t-1} + b_hh of all layers in one batched product (h [layers, 1, H]): in a decode step these
        depend only on the previous states, and one batched product is about twice as fast on the CPU as one
        product per layer."""
        return self.blocked_products(self.b_hh, h, self.w_hh)

    def logits(self, h_top: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.addmm(self.head_b, h_top, self.head_w.t(), out=out)


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

    @property
    def generated(self) -> str:
        return self.text[self.prompt_len:]

    def surprisal(self) -> torch.Tensor:
        """-log p(text[t] | text[:t]) in nats under the raw distribution, for t >= 1 ([T - 1])."""
        p = self.probs[:-1].gather(1, self.tokens[1:, None])[:, 0]
        return -torch.log(p.clamp_min(1e-30))


def recompute_gates(weights: StepWeights, tokens: torch.Tensor, hidden: torch.Tensor,
                    initial: torch.Tensor | None = None):
    """Reset and update gates of every layer at every step, from the recorded states alone.

    hidden is [layers, T, H], the states after each step; `initial` [layers, H] the states before the first
    step (zero when None, as at the start of a text; a later piece of a long text passes the state it starts
    from). One batched pass per layer: the inputs are the tokens (layer 0) or the layer below's states, the
    previous states are `hidden` shifted.
    """
    resets, updates = [], []
    for layer in range(hidden.shape[0]):
        first = torch.zeros_like(hidden[layer, :1]) if initial is None else initial[layer, None]
        h_prev = torch.cat([first, hidden[layer, :-1]])
        gi = weights.input_gates(layer, tokens, hidden[layer - 1] if layer else None)
        reset_gate, update_gate, _ = gru_update(gi, weights.hidden_gates(layer, h_prev), h_prev)
        resets.append(reset_gate)
        updates.append(update_gate)
    return torch.stack(resets), torch.stack(updates)


def build_trace(weights: StepWeights, *, vocab: str, prompt_len: int, settings: DecodeSettings,
                tokens: torch.Tensor, hidden: torch.Tensor, logits: torch.Tensor, filtered: torch.Tensor) -> Trace:
    """Assemble the Trace from what the decode loop recorded (tokens [T], hidden [T, layers, H], logits and
    filtered [T, vocab]); the result's tensors are on the CPU."""
    device = tokens.device
    hidden = hidden.transpose(0, 1)
    reset_gate, update_gate = recompute_gates(weights, tokens, hidden)
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
                 settings=settings, device=str(device), **parts)


def saturation(gate: torch.Tensor, low: float = 0.1, high: float = 0.9):
    """Per unit, the fraction of steps left-saturated (< low) and right-saturated (> high); gate is [..., T, H].

    As in Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks", fig. 3.
    """
    return (gate < low).float().mean(-2), (gate > high).float().mean(-2)
