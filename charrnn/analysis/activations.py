"""One pass over a text: every layer's states and gates after each character.

"The value at offset i" is a unit's value after the model has read text[i], in one pass from the zero state
with the state carried through the whole text. The states come from torch's own GRU or LSTM, one layer at a time over
a whole piece of the text (far faster than stepping); the gates are then recomputed from those states in bulk
(`charrnn.decoding.trace.recompute_gates`, `recompute_lstm`). Long texts are read in pieces that carry the state, so memory stays bounded:
all values of the 111,540-character reference text would take about 2 GB, one 1,024-character piece 19 MB.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generator, Iterator, TypeVar

import torch

from ..decoding.kernel import StepWeights
from ..decoding.trace import Trace, recompute_gates, recompute_lstm
from ..decoding.unit import ALL_KINDS

CHUNK_SIZE = 1024
T = TypeVar("T")


class TextError(ValueError):
    """A text cannot be read for analysis (empty, or longer than allowed); the message says what is allowed."""


@dataclass
class Activations:
    """Every layer's values after reading each character of text[start : start + T]: `values` [kinds, layers, T, H],
    one row for each of `kinds` (a GRU's hidden, reset, update; an LSTM's hidden, cell, input, forget, output; or
    the states alone, read without gates)."""

    start: int
    tokens: torch.Tensor  # [T]
    values: torch.Tensor
    kinds: tuple

    @classmethod
    def of_trace(cls, trace: Trace) -> "Activations":
        """The same values as recorded by a run (the page's trace), with no second pass."""
        return cls(0, trace.tokens, trace.values, trace.kinds)

    def __len__(self) -> int:
        return self.values.shape[2]

    def of(self, kind: str) -> torch.Tensor:
        if kind not in self.kinds:
            raise ValueError(f"kind must be one of {', '.join(self.kinds)} here, not {kind!r}" if kind in ALL_KINDS
                             else f"kind must be one of {', '.join(self.kinds)}, not {kind!r}")
        return self.values[self.kinds.index(kind)]

    @property
    def hidden(self) -> torch.Tensor:
        return self.of("hidden")

    def get(self, kind: str) -> torch.Tensor | None:
        """The kind's values, None where these activations were read without it."""
        return self.values[self.kinds.index(kind)] if kind in self.kinds else None

    reset = property(lambda self: self.get("reset"))
    update = property(lambda self: self.get("update"))

    def stacked(self) -> torch.Tensor:
        """[kinds, layers, T, H] in the order of `kinds`."""
        return self.values

    def columns(self) -> torch.Tensor:
        """[T, kinds * layers * H]: one column per unit, in (kind, layer, unit) order (as stacked() flattened)."""
        return self.values.permute(2, 0, 1, 3).reshape(len(self), -1)


def run_steps(steps: Generator[object, None, T]) -> T:
    """Run an analysis written as steps (a generator that does one piece of the work per step, as the *_steps
    functions here return, and returns its result) to the end, here. The page runs the same steps in pieces on its
    compute thread instead (charrnn.serving.compute.run_in_pieces)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def encode(model, text: str, max_chars: int | None = None) -> torch.Tensor:
    """The token ids of a text to analyse; an empty text, one over `max_chars` characters, or one with characters
    outside the vocabulary (charrnn.UnknownCharactersError) is refused with a message that says why."""
    if not isinstance(text, str) or not text:
        raise TextError("the text is empty: give at least one character to read")
    if max_chars is not None and len(text) > max_chars:
        raise TextError(f"the text has {len(text):,} characters; at most {max_chars:,} can be analysed here "
                        "(use a shorter text)")
    return model.tokenizer.encode_tensor(text)


@contextmanager
def one_thread():
    """Run torch on one thread. Each step of the recurrence is a small matrix-vector product; split over several
    OpenMP threads it waits at a barrier every step, and once another process holds a core those waits cost
    milliseconds (measured on the 2-core machine with one core busy: 6.1 ms per 512-unit layer step on two
    threads, 0.13 ms on one). The bulk work after it (gates, statistics) also ran about 2x faster on one thread
    there. Torch's thread count is global: it is restored before anything else runs (never held across a yield)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def full_float32():
    """cuDNN may run a float32 GRU in TF32 (10-bit mantissas) unless told not to: keep the states float32-exact on
    a GPU. (No effect on the CPU.)"""
    allowed = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = allowed


def layer_parameters(model) -> list[list[torch.Tensor]]:
    """Each layer's [W_ih, W_hh, b_ih, b_hh], the flat weights of a single-layer torch GRU or LSTM."""
    return [[getattr(model.rnn, f"{name}_l{k}").detach() for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            for k in range(model.num_layers)]


def chunks(model, text: str, *, gates: bool = True, chunk_size: int = CHUNK_SIZE,
           max_chars: int | None = None) -> Iterator[Activations]:
    """Read `text` from the zero state in pieces of `chunk_size` characters, carrying the state from piece to piece;
    yield each piece's Activations (CPU tensors): every kind of the model's cell, or with gates=False its state
    alone (a GRU's hidden; an LSTM's hidden and cell)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    tokens = encode(model, text, max_chars)
    weights = StepWeights.of(model)
    params = layer_parameters(model)
    embedding = model.embedding.weight.detach()
    lstm = model.CELL == "lstm"
    kinds = model.kinds if gates else model.kinds[: weights.state_kinds]
    state = torch.zeros(model.num_layers, weights.state_kinds, model.hidden_size, device=model.device)
    for start in range(0, len(tokens), chunk_size):
        # No torch mode or thread setting is held across the yield: the consumer runs in between.
        with torch.no_grad(), one_thread(), full_float32():
            ids = tokens[start : start + chunk_size].to(model.device)
            x = embedding[ids]
            hidden = []
            for k in range(model.num_layers):
                if lstm:
                    out, *_ = torch._VF.lstm(x[None], (state[k, 0, None, None].contiguous(),
                                                       state[k, 1, None, None].contiguous()),
                                             params[k], True, 1, 0.0, False, False, True)
                else:
                    out, _ = torch._VF.gru(x[None], state[k, 0, None, None].contiguous(), params[k], True, 1, 0.0,
                                           False, False, True)
                x = out[0]
                hidden.append(x)
            hidden = torch.stack(hidden)
            if lstm:
                values = recompute_lstm(weights, ids, hidden, initial=state)
            elif gates:
                values = torch.stack([hidden, *recompute_gates(weights, ids, hidden, initial=state[:, 0])])
            else:
                values = hidden[None]
            state = values[: weights.state_kinds, :, -1].transpose(0, 1).clone()
            values = values[: len(kinds)]
        yield Activations(start, ids.cpu(), values.cpu(), kinds)


def read(model, text: str, *, gates: bool = True, chunk_size: int = CHUNK_SIZE,
         max_chars: int | None = None) -> Activations:
    """All of `text`'s activations at once (memory: kinds x layers x hidden x 4 bytes per character, 18 KB per
    character for the shipped 3 x 512 GRU; read long texts with `chunks`)."""
    pieces = list(chunks(model, text, gates=gates, chunk_size=chunk_size, max_chars=max_chars))
    return Activations(0, torch.cat([p.tokens for p in pieces]), torch.cat([p.values for p in pieces], dim=2),
                       pieces[0].kinds)
