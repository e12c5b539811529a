"""Every unit explained: for each unit, the candidate explanation that follows it best, scored on held-out text.

A candidate explanation is a number per character computed from the text alone (as a signal of
charrnn.analysis.signals, its value at offset i describes the text once text[i] has been read). The library covers
what char-RNN units are known to track (Karpathy et al. 2015; Bills et al. 2023 for the scoring):

- position: the built-in line position, word position and speech line;
- span: speaker name lines, inside quotes, inside brackets;
- class: vowels, capitals and the other character classes (letters, lower case, digits, punctuation, whitespace,
  consonants);
- character: each character of the text (1 on it);
- after: the character read right after a newline and after each of the text's most frequent characters, bigrams
  and trigrams (1 there);
- distance: characters since the last newline, space, comma, period, colon (capped at DISTANCE_CAP);
- regex: 1 inside the matches of the regular expressions a person saved (a model folder's patterns.json).

Candidates that are the same on every character of either half, or repeat an earlier one exactly, are left out;
the library stays bounded (about 200 candidates over the shipped reference text).

The text is split in two halves. A unit's explanation is the candidate with the highest |Pearson r| over the first
half (r_fit); its score is its r over the second half (r_heldout, held out: the choice never saw it). A score means
something only beside a chance level: the unit's held-out values are shifted circularly by SHIFTS random offsets
(seeded: the same every time), and `chance` is the mean |r| of the chosen candidate with the shifted values. A
circular shift keeps how slowly the unit and the candidate change, and breaks only their alignment with each other.

Everything is gathered piece by piece in the one pass of the atlas (charrnn.analysis.atlas): the first half's
correlations with every candidate, then, once the choice is made, the second half's with the chosen candidate at
offset 0 and at each shift; memory stays bounded (the candidates in float32: 90 MB over 111,540 characters).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ..decoding.unit import GRU_KINDS, Unit
from ..vocab import visible_char
from . import signals
from .units import Correlation, Moments, mean_squares

FAMILIES = ("position", "span", "class", "character", "after", "distance", "regex")
BUILTIN_FAMILY = {"line position": "position", "word position": "position", "speech line": "position",
                  "speaker name line": "span", "inside quotes": "span", "inside brackets": "span",
                  "vowel": "class", "uppercase": "class", "after newline": "after"}
CLASSES = {  # a character class: the characters it holds, by test
    "letter": str.isalpha, "lowercase letter": str.islower, "digit": str.isdigit,
    "punctuation": lambda c: not c.isalnum() and not c.isspace(), "whitespace": str.isspace,
    "consonant": lambda c: c.isalpha() and c not in signals.VOWELS,
}
MAX_CHARACTERS = 100  # the most frequent characters, each a candidate
TOP_NGRAMS = 30  # per length (1, 2, 3): the most frequent, "after" each
DISTANCE_CHARS = "\n ,.:"
DISTANCE_CAP = 200
MAX_PATTERNS = 20
SHIFTS, SEED = 5, 0
GOOD, FAIR = 0.5, 0.3  # the held-out scores the page counts units at
MAX_QUERY_CHARS = 60


@dataclass
class Candidates:
    """The candidate explanations of one text: labels, families and values [candidates, T] (float32)."""

    labels: list[str]
    families: list[str]
    values: np.ndarray


def quoted(text: str) -> str:
    return '"' + "".join(visible_char(c) for c in text) + '"'


def codes_of(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def indicator(length: int, positions: np.ndarray) -> np.ndarray:
    out = np.zeros(length, dtype=np.float32)
    out[positions[positions < length]] = 1
    return out


def ngram_keys(codes: np.ndarray, n: int) -> np.ndarray:
    """One integer per n characters starting at each offset (21 bits per character: any Unicode code point)."""
    keys = np.zeros(len(codes) - n + 1, dtype=np.int64)
    for j in range(n):
        keys = (keys << 21) | codes[j : len(codes) - n + 1 + j]
    return keys


def after_ngrams(text: str, codes: np.ndarray, n: int):
    """(label, values) of "after" each of the TOP_NGRAMS most frequent n-grams: 1 on the character right after it."""
    if len(codes) <= n:
        return
    keys = ngram_keys(codes, n)
    found, first, counts = np.unique(keys, return_index=True, return_counts=True)
    for i in np.lexsort((first, -counts))[:TOP_NGRAMS]:  # most frequent first; ties: first seen first
        after = np.flatnonzero(keys == found[i]) + n
        yield f"after {quoted(text[first[i] : first[i] + n])}", indicator(len(text), after)


def distance_since(codes: np.ndarray, char: str) -> np.ndarray:
    """Characters since the last `char` (0 on it), capped at DISTANCE_CAP (also before its first one)."""
    steps = np.arange(len(codes))
    last = np.maximum.accumulate(np.where(codes == ord(char), steps, -1))
    return np.where(last < 0, DISTANCE_CAP, np.minimum(steps - last, DISTANCE_CAP)).astype(np.float32)


def library_entries(text: str, patterns=(), timeout: float = signals.REGEX_TIMEOUT_S):
    """Every candidate as (label, family, values), in the order of FAMILIES' kinds of source."""
    for name, spec in signals.BUILTIN.items():
        yield name, BUILTIN_FAMILY[name], spec.values(text)
    codes = codes_of(text)
    chars, counts = np.unique(codes, return_counts=True)
    by_frequency = chars[np.argsort(-counts, kind="stable")][:MAX_CHARACTERS]
    for name, test in CLASSES.items():
        yield name, "class", np.isin(codes, [c for c in chars if test(chr(c))]).astype(np.float32)
    for c in by_frequency:
        yield f"character {quoted(chr(c))}", "character", (codes == c).astype(np.float32)
    for n in (1, 2, 3):
        for label, values in after_ngrams(text, codes, n):
            yield label, "after", values
    for char in DISTANCE_CHARS:
        yield f"distance since {quoted(char)}", "distance", distance_since(codes, char)
    for pattern in patterns:
        spans = signals.regex_spans(text, pattern, timeout)
        yield f"/{pattern}/", "regex", signals.spans_signal(len(text), spans)


def check_patterns(patterns) -> list[str]:
    """The saved regular expressions as a list, or SignalError saying what is allowed."""
    if isinstance(patterns, str) or not all(isinstance(p, str) and p for p in patterns):
        raise signals.SignalError("the saved regular expressions must be a list of non-empty strings")
    patterns = list(patterns)
    if len(patterns) > MAX_PATTERNS:
        raise signals.SignalError(f"{len(patterns)} regular expressions are saved; at most {MAX_PATTERNS} allowed")
    for pattern in patterns:
        if len(pattern) > signals.MAX_PATTERN_CHARS:
            raise signals.SignalError(f"a saved regular expression has {len(pattern)} characters; at most "
                                      f"{signals.MAX_PATTERN_CHARS} allowed")
        try:
            re.compile(pattern, re.MULTILINE)
        except re.error as e:
            raise signals.SignalError(f"{pattern!r} is not a valid regular expression: {e}") from None
    return patterns


def candidates(text: str, patterns=(), *, timeout: float = signals.REGEX_TIMEOUT_S) -> Candidates:
    """The candidate explanations of `text` that vary over both of its halves, each once. `patterns`: regular
    expressions a person saved (each run in a child process, `timeout` seconds at most; a bad one is refused)."""
    half = len(text) // 2
    labels, families, rows, seen = [], [], [], set()
    for label, family, values in library_entries(text, check_patterns(patterns), timeout):
        values = np.asarray(values, dtype=np.float32)
        digest = hashlib.sha1(values.tobytes()).digest()
        if digest in seen or not all(len(part) and part.min() != part.max() for part in (values[:half],
                                                                                         values[half:])):
            continue
        seen.add(digest)
        labels.append(label)
        families.append(family)
        rows.append(values)
    values = np.empty((len(rows), len(text)), dtype=np.float32)
    for i in range(len(rows)):  # row by row, each let go once copied: never two copies of them all
        values[i], rows[i] = rows[i], None
    return Candidates(labels, families, values)


# ---- gathering ----


def shift_offsets(length: int, shifts: int = SHIFTS, seed: int = SEED) -> list[int]:
    """The circular shifts of the chance level over a held-out half of `length` characters: seeded, each at least a
    tenth of the half from no shift (and from a whole turn), far enough to break any alignment."""
    low = max(1, length // 10)
    return np.random.default_rng(seed).integers(low, max(low + 1, length - low), size=shifts).tolist()


class Explainer:
    """Each unit's explanation, gathered one piece of text at a time (the pieces in order from offset 0): the
    first half's correlations with every candidate, then the second half's with the chosen one, unshifted and at
    each circular shift."""

    def __init__(self, library: Candidates, length: int, *, shifts: int = SHIFTS, seed: int = SEED):
        if library.values.shape[1] != length:
            raise ValueError(f"the candidates cover {library.values.shape[1]} characters, the text has {length}")
        # the labels only: the values live on centred in the halves' own copies
        self.labels, self.families = library.labels, library.families
        self.split, self.held = length // 2, length - length // 2
        self.fit = Correlation(library.values[:, : self.split]) if len(library.labels) else None
        held = library.values[:, self.split :]
        # [T, S], centred: a piece's rows, then each unit's candidate within each row (one copy, centred in place)
        self.held_y = torch.from_numpy(np.ascontiguousarray(held.T))
        self.held_y -= torch.from_numpy(held.mean(axis=1, dtype=np.float64).astype(np.float32))
        self.held_var = mean_squares(self.held_y.T)  # [S]: centred, so their variances
        self.offsets = torch.tensor([0, *shift_offsets(self.held, shifts, seed)])
        self.moments = Moments()
        self.best = self.r_fit = self.sums = None

    def add(self, columns: torch.Tensor, start: int) -> None:
        """columns [Tc, units]: every unit's values at offsets start .. start + Tc - 1."""
        if self.fit is None:
            return
        fitted = columns[: max(0, self.split - start)]
        if len(fitted):
            self.fit.add_columns(fitted, start)
        rest = columns[len(fitted) :]
        if len(rest):
            if self.best is None:
                self.choose()
            self.add_held(rest, start + len(fitted) - self.split)

    def choose(self) -> None:
        """Each unit's candidate of highest |r| over the first half (-1 for a unit constant there)."""
        r = self.fit.r()  # [S, units]
        score = np.where(np.isnan(r), -1.0, np.abs(r))
        best = score.argmax(axis=0)
        self.r_fit = r[best, np.arange(r.shape[1])]
        self.best = torch.from_numpy(np.where(np.isnan(self.r_fit), -1, best))

    def add_held(self, x: torch.Tensor, start: int) -> None:
        d = self.moments.add(x.float())  # [Tc, units]
        if self.sums is None:
            self.sums = torch.zeros(len(self.offsets), x.shape[1], dtype=torch.float64)
        chosen = self.best.clamp(min=0)
        steps = torch.arange(start, start + len(x))
        for i, offset in enumerate(self.offsets.tolist()):
            # a shift of the unit by `offset` pairs its value at s with the candidate's at s + offset
            y = self.held_y[(steps + offset) % self.held].index_select(1, chosen)  # [Tc, units]
            self.sums[i] += (y * d).sum(dim=0).double()

    def result(self, shape: tuple, kinds: tuple, patterns=()) -> "Explanations":
        """The explanations of units shaped [kinds, layers, H] (the columns in that order); `patterns`: the saved
        regular expressions among the candidates, recorded."""
        units = int(np.prod(shape))
        nan = torch.full(shape, float("nan"))
        if self.fit is None or self.held == 0 or self.best is None:
            return Explanations(self.labels, self.families, torch.full(shape, -1, dtype=torch.int32),
                                nan, nan.clone(), nan.clone(), kinds, list(patterns))
        if self.moments.n != self.held:
            raise ValueError(f"the second half has {self.held} characters but {self.moments.n} were read")
        chosen = self.best.clamp(min=0)
        r = self.sums / self.held / torch.sqrt(self.moments.var[None] * self.held_var[chosen][None])
        r = r.clamp(-1, 1)
        r[:, self.moments.constant | (self.best < 0)] = float("nan")
        as_shape = lambda t: t.float().reshape(shape)  # noqa: E731
        return Explanations(self.labels, self.families, self.best.to(torch.int32).reshape(shape),
                            as_shape(torch.from_numpy(self.r_fit).reshape(units)), as_shape(r[0]),
                            as_shape(r[1:].abs().mean(dim=0)), kinds, list(patterns))


# ---- reading them ----


@dataclass
class Explanations:
    """Every unit's explanation: `index` [kinds, layers, H] into the candidates' labels and families (-1: none, the
    unit is constant over the first half), r_fit and r_heldout (Pearson r over the first and second half, NaN where
    undefined) and chance (the mean held-out |r| after circular shifts)."""

    labels: list[str]
    families: list[str]
    index: torch.Tensor
    r_fit: torch.Tensor
    r_heldout: torch.Tensor
    chance: torch.Tensor
    kinds: tuple = GRU_KINDS
    patterns: list[str] = field(default_factory=list)

    def of(self, layer: int, kind: str, unit: int) -> dict:
        """{"explanation", "family", "r_fit", "r_heldout", "chance"} of one unit (layer from 1; None where there is
        no explanation or no r)."""
        k, l = self.kinds.index(kind), layer - 1
        i = int(self.index[k, l, unit])
        value = lambda t: None if np.isnan(float(t[k, l, unit])) else round(float(t[k, l, unit]), 4)  # noqa: E731
        return {"explanation": self.labels[i] if i >= 0 else None, "family": self.families[i] if i >= 0 else None,
                "r_fit": value(self.r_fit), "r_heldout": value(self.r_heldout), "chance": value(self.chance)}

    def rows(self) -> list[dict]:
        """Every unit, in (layer, kind, unit) order: {"layer", "kind", "unit", "explanation", "family", "r_fit",
        "r_heldout", "chance"}."""
        _, layers, hidden = self.index.shape
        return [{"layer": layer, "kind": kind, "unit": unit, **self.of(layer, kind, unit)}
                for layer in range(1, layers + 1) for kind in self.kinds for unit in range(hidden)]

    def shares(self) -> list[dict]:
        """Per layer and kind: how many units, the share whose held-out |r| is at least GOOD and at least FAIR, the
        share whose chance level is (the same thresholds), and the mean chance level."""
        out = []
        for l in range(self.index.shape[1]):
            for k, kind in enumerate(self.kinds):
                score = np.nan_to_num(self.r_heldout[k, l].abs().numpy())
                chance = np.nan_to_num(self.chance[k, l].numpy())
                out.append({"layer": l + 1, "kind": kind, "units": len(score),
                            "good": float((score >= GOOD).mean()), "good_chance": float((chance >= GOOD).mean()),
                            "fair": float((score >= FAIR).mean()), "fair_chance": float((chance >= FAIR).mean()),
                            "mean_chance": float(chance.mean())})
        return out

    def overall(self) -> dict:
        """Over every unit: the shares whose held-out |r|, and whose chance level, are at least GOOD and FAIR."""
        score, chance = np.nan_to_num(self.r_heldout.abs().numpy()), np.nan_to_num(self.chance.numpy())
        return {f"r_heldout >= {GOOD}": round(float((score >= GOOD).mean()), 4),
                f"chance >= {GOOD}": round(float((chance >= GOOD).mean()), 4),
                f"r_heldout >= {FAIR}": round(float((score >= FAIR).mean()), 4),
                f"chance >= {FAIR}": round(float((chance >= FAIR).mean()), 4)}

    def search(self, query, top: int = 50) -> list[dict]:
        """The units whose explanation is of the family `query` names or whose label holds it (case and quotes
        ignored: "vowel", "line", "after e"), best held-out |r| first; at most `top`."""
        words = check_query(query)
        matched = [i for i, (label, family) in enumerate(zip(self.labels, self.families))
                   if words == family or words in plain(label)]
        found = np.isin(self.index.numpy(), matched)
        score = np.nan_to_num(self.r_heldout.abs().numpy(), nan=-1.0)
        flat = np.flatnonzero(found.reshape(-1))
        order = flat[np.argsort(-score.reshape(-1)[flat], kind="stable")][:top]
        _, layers, hidden = self.index.shape
        return [{"layer": int(i // hidden % layers) + 1, "kind": self.kinds[i // (hidden * layers)],
                 "unit": int(i % hidden)} | self.of(int(i // hidden % layers) + 1, self.kinds[i // (hidden * layers)],
                                                     int(i % hidden)) for i in order]

    def best(self, top: int = 10) -> list[dict]:
        """The `top` units of highest held-out |r|, with their explanations."""
        score = np.nan_to_num(self.r_heldout.abs().numpy(), nan=-1.0).reshape(-1)
        _, layers, hidden = self.index.shape
        rows = []
        for i in np.argsort(-score, kind="stable")[:top]:
            layer, kind, unit = int(i // hidden % layers) + 1, self.kinds[i // (hidden * layers)], int(i % hidden)
            rows.append({"layer": layer, "kind": kind, "unit": unit, **self.of(layer, kind, unit)})
        return rows


def plain(label: str) -> str:
    """A label as searched: lower case, quotes dropped, ␣ and ↵ as words ('after "e␣"' -> "after e space")."""
    words = label.lower().replace('"', "").replace("␣", " space ").replace("↵", " newline ")
    return re.sub(r"\s+", " ", words).strip()


def check_query(query) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"say what explains the units: a family ({', '.join(FAMILIES)}) or a word such as "
                         "vowel, line or after e")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"the search has {len(query)} characters; at most {MAX_QUERY_CHARS} allowed")
    return plain(query.replace("'", ""))


def hover_label(row: dict) -> str:
    """"L1 hidden 3: line position, r 0.95 held out" for a unit_map row."""
    name = str(Unit(row["layer"], row["kind"], row["unit"]))
    if row["explanation"] is None or row["r_heldout"] is None:
        return f"{name}: no explanation (constant over a half of the reference text)"
    return (f"{name}: {row['explanation']}, r {row['r_heldout']:+.2f} held out (fit {row['r_fit']:+.2f}, chance "
            f"{row['chance']:.2f})")
