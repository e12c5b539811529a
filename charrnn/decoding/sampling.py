"""Decoding settings, the filtering rule (temperature -> top-k -> top-p) and seeded sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class DecodeSettings:
    """How to pick each next character.

    temperature 0 is greedy (argmax); top_k 0 and top_p 1 switch those filters off. The same seed and settings
    always give the same text, on the CPU and on CUDA.
    """

    max_new_chars: int = 200
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        def is_int(x):
            return isinstance(x, int) and not isinstance(x, bool)

        if not is_int(self.max_new_chars) or self.max_new_chars < 0:
            raise ValueError(f"max_new_chars must be a whole number >= 0, not {self.max_new_chars!r}")
        if not isinstance(self.temperature, (int, float)) or not (0 <= self.temperature <= 100):
            raise ValueError(f"temperature must be between 0 (greedy) and 100, not {self.temperature!r}")
        if not is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be a whole number >= 0 (0 = off), not {self.top_k!r}")
        if not isinstance(self.top_p, (int, float)) or not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (1 = off), not {self.top_p!r}")
        if not is_int(self.seed) or not (0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED}, not {self.seed!r}")
        if isinstance(self.temperature, float) and math.isnan(self.temperature):
            raise ValueError("temperature must be a number, not NaN")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class RowSettings:
    """The filter settings of R rows as [R, 1] tensors, so one call filters rows that asked for different
    settings (the page serves many requests in one batch).

    Each row takes one of four paths, decided by its own settings alone, so its result never depends on the
    other rows: greedy (a one-hot at the argmax), plain (softmax at its temperature), top-k alone (a
    threshold at the k-th largest probability, no sort) and sorted (top-p, with or without top-k).
    """

    PATHS = ("plain", "top_k", "sorted", "greedy")

    def __init__(self, settings: list[DecodeSettings], vocab_size: int, device="cpu"):
        def column(values, dtype):
            return torch.tensor(values, dtype=dtype, device=device)[:, None]

        def path(s: DecodeSettings) -> str:
            if s.greedy:
                return "greedy"
            if s.top_p < 1:
                return "sorted"
            return "top_k" if 0 < s.top_k < vocab_size else "plain"

        self.rows = len(settings)
        paths = [path(s) for s in settings]
        self.paths = [p for p in self.PATHS if p in paths]
        self.masks = {p: column([q == p for q in paths], torch.bool) for p in self.paths} if len(self.paths) > 1 else {}
        self.temperature = column([1.0 if s.greedy else float(s.temperature) for s in settings], torch.float32)
        self.top_k = column([s.top_k if 0 < s.top_k < vocab_size else vocab_size for s in settings], torch.long)
        self.top_p = column([float(s.top_p) for s in settings], torch.float32)
        # topk() needs one k for all rows: the largest any top-k-alone row asked for (each row then reads its own).
        self.largest_k = max((s.top_k for s, p in zip(settings, paths) if p == "top_k"), default=0)
        self.any_top_k_sorted = any(p == "sorted" and 0 < s.top_k < vocab_size for s, p in zip(settings, paths))


def filter_probs(logits: torch.Tensor, settings, out: torch.Tensor | None = None) -> torch.Tensor:
    """The distribution sampled from: softmax(logits / temperature), then top-k, then top-p, renormalised.

    Top-p keeps the smallest most-likely-first set whose cumulative probability (after top-k) reaches top_p;
    the token that crosses top_p stays, so the most likely token always stays. Temperature 0 gives a one-hot
    at the argmax. `settings` is one DecodeSettings for every row or a RowSettings (one per row). Works on
    [rows, vocab] with no data-dependent control flow, so it runs inside a CUDA graph; writes into `out` when
    given. This is the one place the filtering rule lives.
    """
    shape = logits.shape
    logits = logits.reshape(-1, shape[-1])
    if isinstance(settings, DecodeSettings):
        settings = RowSettings([settings] * logits.shape[0], logits.shape[-1], logits.device)
    out = torch.empty_like(logits) if out is None else out.view(logits.shape)
    return filter_rows(logits, settings, out).view(shape)


def filter_rows(logits: torch.Tensor, settings: RowSettings, out: torch.Tensor) -> torch.Tensor:
    """filter_probs on [rows, vocab] with one RowSettings row per logits row."""
    results = {}
    single = len(settings.paths) == 1  # one path: it writes into `out` itself
    if settings.paths != ["greedy"]:
        probs = torch.softmax(logits / settings.temperature, dim=-1)
        if "plain" in settings.paths:
            results["plain"] = probs
        if "top_k" in settings.paths:
            kth = probs.topk(settings.largest_k, dim=-1).values.gather(-1, (settings.top_k - 1).clamp_max(
                settings.largest_k - 1))
            kept = torch.where(probs >= kth, probs, 0.0)
            results["top_k"] = torch.div(kept, kept.sum(-1, keepdim=True), out=out if single else None)
        if "sorted" in settings.paths:
            results["sorted"] = sorted_filter(probs, settings, out if single else torch.empty_like(probs))
    if "greedy" in settings.paths:
        results["greedy"] = (out if single else torch.empty_like(logits)).zero_().scatter_(
            -1, logits.argmax(-1, keepdim=True), 1.0)
    if single:
        return out if results[settings.paths[0]] is out else out.copy_(results[settings.paths[0]])
    first, *rest = settings.paths
    out.copy_(results[first])
    for path in rest:
        torch.where(settings.masks[path], results[path], out, out=out)
    return out


def sorted_filter(probs: torch.Tensor, settings: RowSettings, out: torch.Tensor) -> torch.Tensor:
    """Top-k then top-p by sorting each row (rows without top-k keep every rank), written into `out`."""
    vocab_size = probs.shape[-1]
    ranked, order = probs.sort(dim=-1, descending=True)
    if settings.any_top_k_sorted:
        ranked = torch.where(torch.arange(vocab_size, device=probs.device) < settings.top_k, ranked, 0.0)
    cumulative = ranked.cumsum(-1)
    # keep a character if the mass ranked before it is still short of top_p (of what top-k kept)
    ranked = torch.where(cumulative - ranked < settings.top_p * cumulative[..., -1:], ranked, 0.0)
    return out.zero_().scatter_(-1, order, ranked / ranked.sum(-1, keepdim=True))


def race_noise(settings: DecodeSettings, steps: int, vocab_size: int) -> torch.Tensor:
    """Exponential(1) noise [steps, vocab], drawn on the CPU from the seed alone, so every device sees the same."""
    generator = torch.Generator().manual_seed(settings.seed)
    return torch.empty(steps, vocab_size).exponential_(generator=generator)


def race(filtered: torch.Tensor, noise: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Sample from `filtered` by the exponential race: argmax(p / E) with E ~ Exp(1) is a draw from p, needs no
    host synchronisation, and picks the same character wherever the same noise is used. Greedy rows (one-hot)
    pick their argmax."""
    return torch.argmax(filtered / noise, dim=-1, out=out)
