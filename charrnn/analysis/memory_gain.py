"""Memory gain: what the GRU's memory of everything it has read buys over a bigram that sees only the last
character, one character at a time, as the surprisal (-log p, nats) of each character under both models."""

from __future__ import annotations

from typing import Generator

import torch
import torch.nn.functional as F

from ..vocab import show_char
from .activations import CHUNK_SIZE, one_thread, run_steps

MAX_CHARS = 20_000  # 20,000 sequential GRU steps: seconds on an idle 2-core CPU; the rows and the HTML a few MB


class MemoryGainError(ValueError):
    """The models or the text cannot be compared; the message says why."""


def surprisals(logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """-log softmax(logits[i])[targets[i]] for every row i, in nats."""
    return F.cross_entropy(logits.double(), targets, reduction="none").tolist()


def vocab_difference(gru: str, bigram: str) -> str:
    """What differs between two vocabularies, in words."""
    only = [(name, [c for c in mine if c not in theirs]) for name, mine, theirs in
            (("the GRU", gru, bigram), ("the bigram", bigram, gru))]
    said = [f"only {name} has {', '.join(map(show_char, chars))}" for name, chars in only if chars]
    return "; ".join(said) or "the same characters in another order, so other token ids"


def memory_gain(gru_model, bigram_model, text: str, *, max_chars: int = MAX_CHARS,
                chunk_size: int = CHUNK_SIZE) -> list[dict]:
    """One row per predicted character text[i] (i >= 1): {"char": text[i], "gru": its surprisal under the GRU
    having read text[:i] from the zero state, "bigram": its surprisal under the bigram given text[i-1] alone}.

    Both models must share the vocabulary (so the same token ids). The GRU reads the text in one pass from the zero
    state, in pieces of `chunk_size` characters that carry its state. At most `max_chars` characters."""
    return run_steps(memory_gain_steps(gru_model, bigram_model, text, max_chars=max_chars, chunk_size=chunk_size))


def memory_gain_steps(gru_model, bigram_model, text: str, *, max_chars: int = MAX_CHARS,
                      chunk_size: int = CHUNK_SIZE) -> Generator[None, None, list[dict]]:
    """memory_gain as steps (charrnn.serving.compute runs them in pieces): the models and the text are checked now (a
    bad input raises here);
    the generator returned has the GRU read one piece per step and returns memory_gain's rows."""
    if gru_model.vocab != bigram_model.vocab:
        difference = vocab_difference(gru_model.vocab, bigram_model.vocab)
        raise MemoryGainError(f"the two models have different vocabularies ({difference}): compare models trained "
                              "on the same text, which share their characters and token ids")
    if not isinstance(text, str) or len(text) < 2:
        raise MemoryGainError("the text needs at least two characters: the first is read, the others predicted")
    if len(text) > max_chars:
        raise MemoryGainError(f"the text has {len(text):,} characters; at most {max_chars:,} are compared at once: "
                              "give a shorter text")
    for model in (gru_model, bigram_model):
        if model.training:
            raise RuntimeError(f"the {type(model).__name__} is in training mode (dropout on): call model.eval() first")
    ids = gru_model.tokenizer.encode_tensor(text)  # unknown characters: UnknownCharactersError, a ValueError

    def steps():
        gru, state = [], None
        for start in range(0, len(ids) - 1, chunk_size):  # the last character is predicted, never read
            read = ids[start : min(start + chunk_size, len(ids) - 1)]
            # No torch mode or thread setting is held across the yield: other work runs in between.
            with torch.inference_mode(), one_thread():
                logits, state = gru_model(read[None].to(gru_model.device), state)
                gru += surprisals(logits[0].cpu(), ids[start + 1 : start + 1 + len(read)])
            yield
        with torch.inference_mode():
            bigram = surprisals(bigram_model.next_logits(ids[:-1].to(bigram_model.device)).cpu(), ids[1:])
        return [{"char": c, "gru": g, "bigram": b} for c, g, b in zip(text[1:], gru, bigram)]

    return steps()


def summarize(rows: list[dict]) -> dict:
    """Mean surprisals (nats/char), the mean gain bigram - GRU, and the fraction of characters the GRU predicted
    better."""
    n = len(rows)
    gru = sum(r["gru"] for r in rows) / n
    bigram = sum(r["bigram"] for r in rows) / n
    return {"chars": n, "gru": gru, "bigram": bigram, "gain": bigram - gru,
            "helped": sum(r["gru"] < r["bigram"] for r in rows) / n}
