"""Memory gain: what the GRU's memory of everything it has read buys over a bigram that sees only the last
character, one character at a time, as the surprisal (-log p, nats) of each character under both models."""

from __future__ import annotations

from typing import Generator

import torch
import torch.nn.functional as F

from .activations import CHUNK_SIZE, one_thread
from .compute import run_steps
from .figures import text_html
from .vocab import show_char, visible_char

MAX_CHARS = 20_000  # 20,000 sequential GRU steps: seconds on an idle 2-core CPU; the rows and the HTML a few MB
HELPED, HURT = (76, 120, 168), (228, 87, 86)  # figures.py's blue and red


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
    """memory_gain as steps (charrnn.compute): the models and the text are checked now (a bad input raises here);
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


def memory_gain_html(text: str, rows: list[dict], saturate_at: float = 3.0) -> str:
    """The text coloured by the gain at each character: blue where the GRU's memory made it less surprising than
    the bigram found it, red where more; full colour at `saturate_at` nats. The hover title gives both."""
    if len(rows) != len(text) - 1 or any(r["char"] != c for r, c in zip(rows, text[1:])):
        raise MemoryGainError("the rows are not those of this text: pass the text given to memory_gain")
    colors, titles = ["transparent"], [f"step 0 {visible_char(text[0])!r}: first character, no prediction"]
    for t, row in enumerate(rows, start=1):
        gain = row["bigram"] - row["gru"]
        r, g, b = HELPED if gain >= 0 else HURT
        colors.append(f"rgba({r},{g},{b},{min(1.0, abs(gain) / saturate_at):.2f})")
        titles.append(f"step {t} {visible_char(row['char'])!r}: GRU {row['gru']:.2f} nats, bigram {row['bigram']:.2f} "
                      f"nats, memory gain {gain:+.2f}")
    stats = summarize(rows)
    legend = (f"<span style='background:rgba({','.join(map(str, HELPED))},.8);color:white'>&nbsp;blue&nbsp;</span>: "
              "the GRU, remembering everything before, found the character less surprising than a bigram that sees "
              f"only the previous character; <span style='background:rgba({','.join(map(str, HURT))},.8);"
              f"color:white'>&nbsp;red&nbsp;</span>: more (full colour at {saturate_at:g} nats). Mean: GRU "
              f"{stats['gru']:.2f}, bigram {stats['bigram']:.2f}, gain {stats['gain']:.2f} nats/char; the GRU did "
              f"better on {stats['helped']:.0%} of the characters.")
    return text_html(text, colors, titles, legend)
