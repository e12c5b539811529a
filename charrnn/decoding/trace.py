"""The Trace of a run: its text, every step's probabilities and what every layer computed (build_trace, from what
the decode loop recorded); and the gates of a text recomputed from its states in one batched pass per layer
(recompute_gates, for the analyses, which read states with torch's own GRU)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .interventions import run_forces
from .kernel import StepWeights, gru_update
from .sampling import DecodeSettings


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


def build_trace(*, vocab: str, prompt_len: int, settings: DecodeSettings, tokens: torch.Tensor,
                values: torch.Tensor, logits: torch.Tensor, filtered: torch.Tensor, intervention=None) -> Trace:
    """Assemble the Trace from what the decode loop recorded: tokens [T], values [T, layers, kinds, H] (each layer's
    h_t, r_t and z_t as the step computed them, forced units included), logits and filtered [T, vocab]. The
    result's tensors are on the CPU."""
    device = tokens.device
    hidden, reset_gate, update_gate = values.permute(2, 1, 0, 3)  # each [layers, T, H]
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
