"""Gate inspection: the Trace of a run, with every layer's reset and update gates recomputed from its states."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import gru_update
from .sampling import DecodeSettings


@dataclass
class StepWeights:
    """The model's weights arranged for one decode step (and for the batched gate pass)."""

    input_proj: torch.Tensor  # [vocab, 3H]: layer 0's W_ih e(c) + b_ih for every character c
    w_ih: list  # per layer [3H, in]; layer 0's entry is unused (folded into input_proj)
    b_ih: list
    w_hh: list  # per layer [3H, H]
    b_hh: list
    head_w: torch.Tensor
    head_b: torch.Tensor

    @classmethod
    def of(cls, model) -> "StepWeights":
        gru = model.gru
        layers = range(model.num_layers)
        with torch.no_grad():
            input_proj = torch.addmm(gru.bias_ih_l0, model.embedding.weight, gru.weight_ih_l0.t())
        return cls(
            input_proj=input_proj.detach(),
            w_ih=[getattr(gru, f"weight_ih_l{k}").detach() for k in layers],
            b_ih=[getattr(gru, f"bias_ih_l{k}").detach() for k in layers],
            w_hh=[getattr(gru, f"weight_hh_l{k}").detach() for k in layers],
            b_hh=[getattr(gru, f"bias_hh_l{k}").detach() for k in layers],
            head_w=model.head.weight.detach(),
            head_b=model.head.bias.detach(),
        )

    def input_gates(self, layer: int, tokens: torch.Tensor, below: torch.Tensor | None) -> torch.Tensor:
        """W_ih x_t + b_ih for layer `layer`: a row lookup for layer 0, a matrix product above it."""
        if layer == 0:
            return self.input_proj.index_select(0, tokens)
        return torch.addmm(self.b_ih[layer], below, self.w_ih[layer].t())

    def hidden_gates(self, layer: int, h_prev: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_hh[layer], h_prev, self.w_hh[layer].t())


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


def recompute_gates(weights: StepWeights, tokens: torch.Tensor, hidden: torch.Tensor):
    """Reset and update gates of every layer at every step, from the recorded states alone.

    hidden is [layers, T, H], the states after each step from a zero initial state. One batched pass per layer:
    the inputs are the tokens (layer 0) or the layer below's states, the previous states are `hidden` shifted.
    """
    resets, updates = [], []
    for layer in range(hidden.shape[0]):
        h_prev = torch.cat([torch.zeros_like(hidden[layer, :1]), hidden[layer, :-1]])
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
        parts = {k: v.contiguous() for k, v in parts.items()}
    return Trace(text="".join(vocab[i] for i in parts["tokens"].tolist()), prompt_len=prompt_len, vocab=vocab,
                 settings=settings, device=str(device), **parts)


def saturation(gate: torch.Tensor, low: float = 0.1, high: float = 0.9):
    """Per unit, the fraction of steps left-saturated (< low) and right-saturated (> high); gate is [..., T, H].

    As in Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks", fig. 3.
    """
    return (gate < low).float().mean(-2), (gate > high).float().mean(-2)
