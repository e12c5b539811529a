"""Two models on the same text. Per character: its surprisal (-log p, nats) under each, having read everything
before it from the zero state, and where they disagree most. Per unit: for the units of model A that follow the
built-in signals most closely, the unit of model B that follows the same signal most closely and the unit of B whose
values track A's unit most closely (does an LSTM have a line-position unit too? in which layer, of which kind?).

The memory gain (charrnn.analysis.memory_gain) is one case: a GRU against a bigram that sees only the last character.
"""

from __future__ import annotations

from typing import Generator

import numpy as np
import torch
import torch.nn.functional as F

from ..decoding.unit import Unit
from ..vocab import show_char
from . import activations, signals
from .activations import CHUNK_SIZE, one_thread, run_steps
from .units import Correlation

MAX_CHARS = 20_000  # sequential steps of both models: seconds on an idle 2-core CPU; the rows a few MB
MATCH_CHARS = 10_000  # of the reference text read for the unit matching (three passes, a few seconds each)
TOP_DISAGREEMENTS = 12
CONTEXT = 30  # characters shown before a disagreement


class CompareError(ValueError):
    """The models or the text cannot be compared; the message says why."""


def vocab_difference(a: str, b: str, names=("model A", "model B")) -> str:
    """What differs between two vocabularies, in words."""
    only = [(name, [c for c in mine if c not in theirs]) for name, mine, theirs in
            ((names[0], a, b), (names[1], b, a))]
    said = [f"only {name} has {', '.join(map(show_char, chars))}" for name, chars in only if chars]
    return "; ".join(said) or "the same characters in another order, so other token ids"


def check_models(model_a, model_b, names=("model A", "model B")) -> None:
    if model_a.vocab != model_b.vocab:
        difference = vocab_difference(model_a.vocab, model_b.vocab, names)
        raise CompareError(f"the two models have different vocabularies ({difference}): compare models trained "
                           "on the same text, which share their characters and token ids")
    for model in (model_a, model_b):
        if model.training:
            raise RuntimeError(f"the {type(model).__name__} is in training mode (dropout on): call model.eval() first")


def surprisals(logits: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """-log softmax(logits[i])[targets[i]] for every row i, in nats."""
    return F.cross_entropy(logits.double(), targets, reduction="none").tolist()


def surprisal_steps(model, ids: torch.Tensor, chunk_size: int = CHUNK_SIZE) -> Generator[None, None, list[float]]:
    """The surprisal of ids[1:] under `model`, which reads ids[:-1] in one pass from the zero state, in pieces of
    `chunk_size` characters that carry its state (a GRU's, an LSTM's; a bigram has none): one piece per step."""
    found, state = [], None
    for start in range(0, len(ids) - 1, chunk_size):  # the last character is predicted, never read
        read = ids[start : min(start + chunk_size, len(ids) - 1)]
        # No torch mode or thread setting is held across the yield: other work runs in between.
        with torch.inference_mode(), one_thread():
            logits, state = model(read[None].to(model.device), state)
            found += surprisals(logits[0].cpu(), ids[start + 1 : start + 1 + len(read)])
        yield
    return found


def compare_steps(model_a, model_b, text: str, *, max_chars: int = MAX_CHARS, chunk_size: int = CHUNK_SIZE,
                  names=("model A", "model B")) -> Generator[None, None, list[dict]]:
    """compare_text as steps (charrnn.serving.compute runs them in pieces): the models and the text are checked now
    (a bad input raises here, naming the models by `names`); the generator reads one piece per step and returns
    compare_text's rows."""
    check_models(model_a, model_b, names)
    if not isinstance(text, str) or len(text) < 2:
        raise CompareError("the text needs at least two characters: the first is read, the others predicted")
    if len(text) > max_chars:
        raise CompareError(f"the text has {len(text):,} characters; at most {max_chars:,} are compared at once: "
                           "give a shorter text")
    ids = model_a.tokenizer.encode_tensor(text)  # unknown characters: UnknownCharactersError, a ValueError

    def steps():
        a = yield from surprisal_steps(model_a, ids, chunk_size)
        b = yield from surprisal_steps(model_b, ids, chunk_size)
        return [{"char": c, "a": x, "b": y} for c, x, y in zip(text[1:], a, b)]

    return steps()


def compare_text(model_a, model_b, text: str, *, max_chars: int = MAX_CHARS,
                 chunk_size: int = CHUNK_SIZE) -> list[dict]:
    """One row per predicted character text[i] (i >= 1): {"char": text[i], "a": its surprisal under model A having
    read text[:i] from the zero state, "b": the same under model B}. Both models must share the vocabulary."""
    return run_steps(compare_steps(model_a, model_b, text, max_chars=max_chars, chunk_size=chunk_size))


def summarize(rows: list[dict]) -> dict:
    """Mean surprisals (nats/char), the mean difference b - a (above 0: A predicts the text better), and the
    fraction of characters each predicted better (ties, e.g. both certain, count for neither)."""
    n = len(rows)
    a, b = sum(r["a"] for r in rows) / n, sum(r["b"] for r in rows) / n
    return {"chars": n, "a": a, "b": b, "difference": b - a, "a_better": sum(r["a"] < r["b"] for r in rows) / n,
            "b_better": sum(r["b"] < r["a"] for r in rows) / n}


def disagreements(text: str, rows: list[dict], top: int = TOP_DISAGREEMENTS) -> list[dict]:
    """The `top` characters where the two surprisals differ most, largest first: {"offset" (in the text), "char",
    "a", "b", "difference" (b - a), "context" (the characters before it)}."""
    order = sorted(range(len(rows)), key=lambda i: -abs(rows[i]["b"] - rows[i]["a"]))[:top]
    return [{"offset": i + 1, "char": rows[i]["char"], "a": rows[i]["a"], "b": rows[i]["b"],
             "difference": rows[i]["b"] - rows[i]["a"], "context": text[max(0, i + 1 - CONTEXT) : i + 1]}
            for i in order]


# ---- the units of one model against the other's ----


def unit_of(model, column: int) -> Unit:
    """The unit of a column of Activations.columns() (kind, layer, unit order; layers from 1)."""
    layers, hidden = model.num_layers, model.hidden_size
    return Unit(column // hidden % layers + 1, model.kinds[column // (hidden * layers)], column % hidden)


def correlate_steps(model, text: str, series: np.ndarray, chunk_size: int) -> Generator[None, None, np.ndarray]:
    """[series, units] Pearson r of every unit of `model` over `text` (one pass from the zero state) with each row
    of `series` [S, len(text)]: one piece per step."""
    correlation = Correlation(series)
    for piece in activations.chunks(model, text, chunk_size=chunk_size):
        correlation.add_columns(piece.columns(), piece.start)
        yield
    return correlation.r()


def columns_steps(model, text: str, columns: list[int], chunk_size: int) -> Generator[None, None, np.ndarray]:
    """[len(columns), len(text)] the values of those units of `model` over `text`: one piece per step."""
    found = []
    for piece in activations.chunks(model, text, chunk_size=chunk_size):
        found.append(piece.columns()[:, columns].T.double().numpy())
        yield
    return np.concatenate(found, axis=1)


def best(r: np.ndarray) -> int:
    """The column of the largest |r| (undefined r left out)."""
    return int(np.nanargmax(np.abs(np.where(np.isnan(r), 0.0, r))))


def match_units_steps(model_a, model_b, text: str, *, max_chars: int = MATCH_CHARS,
                      chunk_size: int = CHUNK_SIZE) -> Generator[None, None, list[dict]]:
    """match_units as steps: checked now, then three passes (A against the signals, A's best units' values, B
    against the signals and those values), a piece per step."""
    check_models(model_a, model_b)
    for model in (model_a, model_b):
        if not model.kinds:
            raise CompareError(f"the {type(model).__name__} has no recurrent units to match")
    text = text[:max_chars]
    activations.encode(model_a, text)
    found = signals.varying(text)
    if not found:
        raise CompareError("no built-in signal varies over this text: give a longer text")
    names, values = list(found), np.stack(list(found.values()))

    def steps():
        r_a = yield from correlate_steps(model_a, text, values, chunk_size)
        chosen = [best(r) for r in r_a]
        series = yield from columns_steps(model_a, text, chosen, chunk_size)
        r_b = yield from correlate_steps(model_b, text, np.concatenate([values, series]), chunk_size)
        rows = []
        for s, name in enumerate(names):
            for_signal, tracking = best(r_b[s]), best(r_b[len(names) + s])
            rows.append({"signal": name,
                         "a": {"unit": str(unit_of(model_a, chosen[s])), "r": float(r_a[s, chosen[s]])},
                         "b": {"unit": str(unit_of(model_b, for_signal)), "r": float(r_b[s, for_signal])},
                         "b_tracking_a": {"unit": str(unit_of(model_b, tracking)),
                                          "r": float(r_b[len(names) + s, tracking])}})
        return rows

    return steps()


def match_units(model_a, model_b, text: str, *, max_chars: int = MATCH_CHARS,
                chunk_size: int = CHUNK_SIZE) -> list[dict]:
    """For each built-in signal that varies over `text` (at most `max_chars` of it): {"signal", "a": model A's
    unit that follows it most closely {"unit" ("L3 hidden 99"), "r"}, "b": model B's unit that follows it most
    closely, "b_tracking_a": model B's unit whose values correlate most with A's unit}, r being Pearson's over
    the text read from the zero state."""
    return run_steps(match_units_steps(model_a, model_b, text, max_chars=max_chars, chunk_size=chunk_size))
