"""Gates by context: the mean reset and update gate of each layer in concrete contexts, against the seed's claims.

The seed's notes say the reset gate "increases when the current char should be interpreted through what just came
(e.g. prefixes), lowers when a new topic appears", and the update gate "increases when the broader state should
persist across characters, lowers when the new input should overwrite the old memory (e.g. negation)". In
torch.nn.GRU, z_t near 1 keeps the old state, so "persist" means a higher z_t there.

A context is a set of offsets i of the text; the gate at offset i is the one computed while reading text[i]
(a letter is any character for which str.isalpha is true, a word a run of letters):

- word start: a letter after a non-letter (or at the text's start);
- inside a word: a letter after a letter;
- after a word: a non-letter right after a letter (the character that ends a word);
- after "not"/"no": a non-letter right after the word not or no (any case);
- after another word: a non-letter right after any other word;
- new speaker: the first character of a speaker's name line (^[A-Z][A-Za-z ]*:$);
- other line start: the first character of any other non-empty line.

Each claim compares a context with a baseline, per layer, on the layer's mean gate over its units at each offset.
Rule: the claim is borne out in a layer when the 95 % confidence interval of the difference of means (context
minus baseline; block bootstrap: the text cut into BLOCKS contiguous blocks, resampled with replacement
RESAMPLES times, seed 0, which respects the dependence between nearby characters) lies wholly on the claimed side
of 0 and the effect size |Cohen's d| is at least MIN_EFFECT; contradicted when the interval lies wholly on the
other side with |d| >= MIN_EFFECT; otherwise there is no clear difference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .signals import SPEAKER_NAME_LINE

BLOCKS, RESAMPLES, MIN_EFFECT = 100, 2000, 0.2
NEGATIONS = ("not", "no")

CONTEXTS = {
    "word start": "a letter after a non-letter",
    "inside a word": "a letter after a letter",
    "after a word": "a non-letter right after a letter",
    'after "not"/"no"': "a non-letter right after the word not or no",
    "after another word": "a non-letter right after any other word",
    "new speaker": "the first character of a speaker's name line",
    "other line start": "the first character of any other non-empty line",
}


@dataclass(frozen=True)
class Claim:
    gate: str  # "reset" or "update"
    seed: str  # the seed's words
    context: str
    baseline: str
    sign: int  # +1: the gate should be higher in the context than in the baseline; -1: lower


CLAIMS = (
    Claim("reset", "increases when the current char should be interpreted through what just came (e.g. prefixes)",
          "inside a word", "word start", +1),
    Claim("reset", "lowers when a new topic appears", "new speaker", "other line start", -1),
    Claim("update", "increases when the broader state should persist across characters",
          "inside a word", "after a word", +1),
    Claim("update", "lowers when the new input should overwrite the old memory (e.g. negation)",
          'after "not"/"no"', "after another word", -1),
    Claim("update", "lowers when the new input should overwrite the old memory (a new speaker)",
          "new speaker", "other line start", -1),
)


def context_offsets(text: str) -> dict[str, np.ndarray]:
    """The offsets of every context in CONTEXTS."""
    letter = np.array([c.isalpha() for c in text], dtype=bool)
    previous = np.concatenate([[False], letter[:-1]])
    word_start = letter & ~previous
    after_word = ~letter & previous
    negation = np.zeros(len(text), dtype=bool)
    for m in re.finditer(r"[^\W\d_]+", text):
        if m.group().lower() in NEGATIONS and m.end() < len(text):
            negation[m.end()] = True
    line_starts = np.array([0] + [m.end() for m in re.finditer("\n", text) if m.end() < len(text)])
    speakers = {m.start() for m in re.finditer(SPEAKER_NAME_LINE, text, re.MULTILINE)}
    new_speaker = np.array([s for s in line_starts if s in speakers], dtype=int)
    other = np.array([s for s in line_starts if s not in speakers and text[s] != "\n"], dtype=int)
    return {
        "word start": np.flatnonzero(word_start), "inside a word": np.flatnonzero(letter & previous),
        "after a word": np.flatnonzero(after_word), 'after "not"/"no"': np.flatnonzero(negation),
        "after another word": np.flatnonzero(after_word & ~negation), "new speaker": new_speaker,
        "other line start": other,
    }


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return float((a.mean() - b.mean()) / np.sqrt(pooled)) if pooled > 0 else float("nan")


def bootstrap_interval(steps: int, a_at: np.ndarray, a: np.ndarray, b_at: np.ndarray, b: np.ndarray,
                       rng: np.random.Generator) -> tuple[float, float]:
    """95 % block-bootstrap interval of mean(a) - mean(b), a and b observed at offsets a_at and b_at."""
    blocks = min(BLOCKS, steps)

    def per_block(at, values):
        block = at * blocks // steps
        return np.bincount(block, values, blocks), np.bincount(block, minlength=blocks)

    (a_sum, a_n), (b_sum, b_n) = per_block(a_at, a), per_block(b_at, b)
    drawn = rng.integers(0, blocks, size=(RESAMPLES, blocks))
    with np.errstate(invalid="ignore", divide="ignore"):
        difference = a_sum[drawn].sum(1) / a_n[drawn].sum(1) - b_sum[drawn].sum(1) / b_n[drawn].sum(1)
    low, high = np.nanpercentile(difference, [2.5, 97.5])
    return float(low), float(high)


def verdict(sign: int, low: float, high: float, d: float) -> str:
    if not np.isfinite(d) or abs(d) < MIN_EFFECT:
        return "no clear difference"
    if sign * low > 0 and sign * high > 0:
        return "borne out"
    if sign * low < 0 and sign * high < 0:
        return "contradicted"
    return "no clear difference"


def gates_by_context(text: str, reset_means: np.ndarray, update_means: np.ndarray) -> dict:
    """The contexts' gate distributions and the claims' verdicts, from each layer's mean gate over its units after
    each character of `text` (reset_means, update_means [layers, T], e.g. atlas.gate_mean("reset")).

    Returns {"contexts": [{"context", "description", "count", "reset"/"update": [per layer {"mean", "quantiles":
    [5 %, 25 %, 50 %, 75 %, 95 %]}]}], "claims": [{"gate", "seed", "context", "baseline", "expected", "layers":
    [{"layer", "context_mean", "baseline_mean", "difference", "ci", "d", "verdict"}], "summary"}], "rule"}."""
    means = {"reset": np.asarray(reset_means, dtype=np.float64), "update": np.asarray(update_means, dtype=np.float64)}
    layers, steps = means["reset"].shape
    if steps != len(text) or means["update"].shape != (layers, steps):
        raise ValueError(f"the gate means must be [layers, {len(text)}] for this text, not "
                         f"{list(means['reset'].shape)} and {list(means['update'].shape)}")
    offsets = context_offsets(text)
    contexts = []
    for name, at in offsets.items():
        row = {"context": name, "description": CONTEXTS[name], "count": int(len(at))}
        for gate, values in means.items():
            row[gate] = [{"mean": float(values[k, at].mean()) if len(at) else None,
                          "quantiles": np.percentile(values[k, at], [5, 25, 50, 75, 95]).tolist() if len(at) else None}
                         for k in range(layers)]
        contexts.append(row)
    claims = []
    for claim in CLAIMS:
        a_at, b_at = offsets[claim.context], offsets[claim.baseline]
        rows = []
        for k in range(layers):
            if len(a_at) < 2 or len(b_at) < 2:
                rows.append({"layer": k + 1, "context_mean": None, "baseline_mean": None, "difference": None,
                             "ci": None, "d": None, "verdict": "too few occurrences"})
                continue
            a, b = means[claim.gate][k, a_at], means[claim.gate][k, b_at]
            low, high = bootstrap_interval(steps, a_at, a, b_at, b, np.random.default_rng(0))
            d = cohens_d(a, b)
            rows.append({"layer": k + 1, "context_mean": float(a.mean()), "baseline_mean": float(b.mean()),
                         "difference": float(a.mean() - b.mean()), "ci": [low, high], "d": d,
                         "verdict": verdict(claim.sign, low, high, d)})
        claims.append({"gate": claim.gate, "seed": claim.seed, "context": claim.context, "baseline": claim.baseline,
                       "counts": [int(len(a_at)), int(len(b_at))],
                       "expected": "higher" if claim.sign > 0 else "lower", "layers": rows,
                       "summary": summarise(rows)})
    rule = (f"borne out in a layer: the 95 % block-bootstrap interval of the difference of means ({BLOCKS} blocks, "
            f"{RESAMPLES} resamples) lies on the claimed side of 0 and |Cohen's d| >= {MIN_EFFECT}; contradicted: "
            "on the other side with the same effect size; otherwise no clear difference")
    return {"contexts": contexts, "claims": claims, "rule": rule}


def summarise(rows: list[dict]) -> str:
    """"borne out in layers 1, 3; contradicted in layer 2" and the like."""
    by_verdict: dict[str, list[int]] = {}
    for row in rows:
        by_verdict.setdefault(row["verdict"], []).append(row["layer"])
    parts = [f"{v} in layer{'s' if len(ls) > 1 else ''} {', '.join(map(str, ls))}" for v, ls in by_verdict.items()]
    return "; ".join(parts)


def gates_by_context_of(atlas) -> dict:
    """gates_by_context over an atlas's reference text."""
    return gates_by_context(atlas.text, atlas.gate_mean("reset").numpy(), atlas.gate_mean("update").numpy())
