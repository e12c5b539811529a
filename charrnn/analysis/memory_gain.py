"""Memory gain: what the GRU's memory of everything it has read buys over a bigram that sees only the last
character, one character at a time, as the surprisal (-log p, nats) of each character under both models. One case
of comparing two models on a text (charrnn.analysis.compare)."""

from __future__ import annotations

from typing import Generator

from .activations import CHUNK_SIZE, run_steps
from .compare import MAX_CHARS, CompareError, compare_steps

MemoryGainError = CompareError  # the name memory_gain's callers know


def memory_gain(gru_model, bigram_model, text: str, *, max_chars: int = MAX_CHARS,
                chunk_size: int = CHUNK_SIZE) -> list[dict]:
    """One row per predicted character text[i] (i >= 1): {"char": text[i], "gru": its surprisal under the GRU
    having read text[:i] from the zero state, "bigram": its surprisal under the bigram given text[i-1] alone}.

    Both models must share the vocabulary (so the same token ids). The GRU reads the text in one pass from the zero
    state, in pieces of `chunk_size` characters that carry its state. At most `max_chars` characters."""
    return run_steps(memory_gain_steps(gru_model, bigram_model, text, max_chars=max_chars, chunk_size=chunk_size))


def memory_gain_steps(gru_model, bigram_model, text: str, *, max_chars: int = MAX_CHARS,
                      chunk_size: int = CHUNK_SIZE) -> Generator[None, None, list[dict]]:
    """memory_gain as steps (charrnn.serving.compute runs them in pieces): the models and the text are checked now
    (a bad input raises here); the generator reads one piece per step and returns memory_gain's rows."""
    compared = compare_steps(gru_model, bigram_model, text, max_chars=max_chars, chunk_size=chunk_size,
                             names=("the GRU", "the bigram"))

    def steps():
        rows = yield from compared
        return [{"char": r["char"], "gru": r["a"], "bigram": r["b"]} for r in rows]

    return steps()


def summarize(rows: list[dict]) -> dict:
    """Mean surprisals (nats/char), the mean gain bigram - GRU, and the fraction of characters the GRU predicted
    better."""
    n = len(rows)
    gru = sum(r["gru"] for r in rows) / n
    bigram = sum(r["bigram"] for r in rows) / n
    return {"chars": n, "gru": gru, "bigram": bigram, "gain": bigram - gru,
            "helped": sum(r["gru"] < r["bigram"] for r in rows) / n}
