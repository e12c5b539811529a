"""The Trace of a run: its text, every step's probabilities and what every layer computed (build_trace, from what
the decode loop recorded); and the gates of a text recomputed from its states in one batched pass per layer
(recompute_gates for a GRU, recompute_lstm for an LSTM: the analyses read states with torch's own GRU or LSTM)."""

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
    values: torch.Tensor  # [kinds, layers, T, hidden]: each kind of value every layer computed after each step
    kinds: tuple  # the cell's (charrnn.decoding.unit): GRU_KINDS or LSTM_KINDS
    vocab: str
    settings: DecodeSettings
    device: str
    intervention: object = None  # the charrnn.interventions.Intervention applied in this run, if any

    def of(self, kind: str) -> torch.Tensor:
        """[layers, T, hidden] of one kind of value (charrnn.decoding.unit.check_kind's spelling)."""
        if kind not in self.kinds:
            raise ValueError(f"kind must be one of {', '.join(self.kinds)} for this model, not {kind!r}")
        return self.values[self.kinds.index(kind)]

    # Each kind by its name, as the library's users read them (a GRU's hidden, reset_gate, update_gate; an LSTM's
    # hidden, cell, input_gate, forget_gate, output_gate).
    hidden = property(lambda self: self.of("hidden"))
    reset_gate = property(lambda self: self.of("reset"))
    update_gate = property(lambda self: self.of("update"))
    cell = property(lambda self: self.of("cell"))
    input_gate = property(lambda self: self.of("input"))
    forget_gate = property(lambda self: self.of("forget"))
    output_gate = property(lambda self: self.of("output"))

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
                values: torch.Tensor, kinds: tuple, logits: torch.Tensor, filtered: torch.Tensor,
                intervention=None) -> Trace:
    """Assemble the Trace from what the decode loop recorded: tokens [T], values [T, layers, kinds, H] (each layer's
    values of each kind as the step computed them, forced units included), logits and filtered [T, vocab]. The
    result's tensors are on the CPU."""
    device = tokens.device
    parts = dict(tokens=tokens, probs=torch.softmax(logits, -1), filtered=filtered,
                 values=values.permute(2, 1, 0, 3))  # [kinds, layers, T, H]
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
                 settings=settings, device=str(device), intervention=intervention, kinds=tuple(kinds), **parts)


def recompute_lstm(weights: StepWeights, tokens: torch.Tensor, hidden: torch.Tensor,
                   initial: torch.Tensor | None = None) -> torch.Tensor:
    """An LSTM's values of every layer at every step, from its recorded states h_t alone: [5 (h_t, c_t, i_t, f_t,
    o_t), layers, T, H]. `initial` [layers, 2, H] is the (h, c) before the first step (zero when None). The gates
    come in one batched pass per layer, as recompute_gates's; c_t = f_t c_{t-1} + i_t g_t then runs along the
    steps (elementwise only)."""
    layers, steps, size = hidden.shape
    out = torch.empty(5, layers, steps, size, dtype=hidden.dtype, device=hidden.device)
    out[0] = hidden
    for layer in range(layers):
        h0 = torch.zeros_like(hidden[layer, :1]) if initial is None else initial[layer, 0, None]
        c = torch.zeros_like(hidden[layer, 0]) if initial is None else initial[layer, 1]
        h_prev = torch.cat([h0, hidden[layer, :-1]])
        summed = (weights.input_gates(layer, tokens, hidden[layer - 1] if layer else None)
                  + weights.hidden_gates(layer, h_prev)).view(steps, 4, size)
        torch.sigmoid(summed[:, 0], out=out[2, layer])
        torch.sigmoid(summed[:, 1], out=out[3, layer])
        torch.sigmoid(summed[:, 3], out=out[4, layer])
        update = out[2, layer] * summed[:, 2].tanh()  # i_t g_t
        forget = out[3, layer]
        cells = out[1, layer]
        for t in range(steps):
            c = torch.addcmul(update[t], forget[t], c, out=cells[t])
    return out


def saturation(gate: torch.Tensor, low: float = 0.1, high: float = 0.9):
    """Per unit, the fraction of steps left-saturated (< low) and right-saturated (> high); gate is [..., T, H].

    As in Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks", fig. 3.
    """
    return (gate < low).float().mean(-2), (gate > high).float().mean(-2)
