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


def filter_probs(logits: torch.Tensor, settings: DecodeSettings, out: torch.Tensor | None = None) -> torch.Tensor:
    """The distribution sampled from: softmax(logits / temperature), then top-k, then top-p, renormalised.

    Top-p keeps the smallest most-likely-first set whose cumulative probability (after top-k) reaches top_p;
    the token that crosses top_p stays, so the most likely token always stays. Temperature 0 gives a one-hot
    at the argmax. Works on [..., vocab] with no data-dependent control flow, so it runs inside a CUDA graph;
    writes into `out` when given.
    """
    out = torch.empty_like(logits) if out is None else out
    if settings.greedy:
        return out.zero_().scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits / settings.temperature, dim=-1)
    vocab_size = logits.shape[-1]
    top_k = settings.top_k if 0 < settings.top_k < vocab_size else 0
    if top_k == 0 and settings.top_p >= 1:
        return out.copy_(probs)
    ranked, order = probs.sort(dim=-1, descending=True)
    if top_k:
        ranked = torch.where(torch.arange(vocab_size, device=logits.device) < top_k, ranked, 0.0)
    if settings.top_p < 1:
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
