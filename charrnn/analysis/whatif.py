"""What-if: two runs that differ in one thing, side by side.

The runs share their prompt, settings and seed, so they share every random draw (the draw that picks generated
character s depends on the seed and s alone); whatever differs comes from the one change: a forced unit
(`intervene`), another character at one step (`branch`), or other decoding settings (`compare_settings`).

Texts here always include the prompt; steps count the characters read, prompt first, from 0 (step t reads
character t, and chooses character t + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..decoding.interventions import Intervention
from ..decoding.sampling import DecodeSettings
from ..decoding.trace import Trace


def first_difference(a: str, b: str) -> int | None:
    """The first index where two texts differ (the shorter one's length if one continues the other); None if they
    are the same."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@dataclass
class Pair:
    """An original run and its changed twin, with where and how much they part."""

    original: Trace
    changed: Trace

    @property
    def first_difference(self) -> int | None:
        """The index of the first character (prompt included) where the texts differ; None if they do not."""
        return first_difference(self.original.text, self.changed.text)

    def divergence(self) -> torch.Tensor:
        """Per step, KL(original || changed) in nats between the two next-character distributions (raw,
        temperature 1). Only the steps before the texts part read the same characters: after that the two
        distributions condition on different text."""
        steps = min(len(self.original.text), len(self.changed.text))
        p, q = self.original.probs[:steps].double(), self.changed.probs[:steps].double()
        return (p * (p.clamp_min(1e-30).log() - q.clamp_min(1e-30).log())).sum(-1)

    def original_choice_probability(self) -> torch.Tensor:
        """Per step that chose a character in the original run, the changed run's probability of that same
        character (1 - this is how far the change pushed the model away from what it wrote)."""
        steps = min(len(self.original.text), len(self.changed.text)) - 1
        chosen = self.original.tokens[1 : steps + 1]
        return self.changed.probs[:steps].gather(1, chosen[:, None])[:, 0]

    def first_move(self) -> int | None:
        """The first step at which the next-character distribution moved at all (KL > 0); None if it never did."""
        moved = (self.divergence() > 0).nonzero()
        return int(moved[0]) if len(moved) else None

    def largest_move(self) -> float:
        """The largest KL(original || changed) before the texts part (over the whole run if they never do)."""
        kl, first = self.divergence(), self.first_difference
        return float(kl[:first].max() if first else kl.max())

    def differing_after(self) -> int:
        """How many characters differ from the first difference on (0 when the texts are the same)."""
        first = self.first_difference
        if first is None:
            return 0
        return sum(a != b for a, b in zip(self.original.text[first:], self.changed.text[first:]))

    def summary(self) -> dict:
        first = self.first_difference
        return {"original": self.original.text, "changed": self.changed.text, "with_prompt": True,
                "prompt_length": self.original.prompt_len,
                "first_difference": None if first is None else {"char_index": first, "step": first - 1}}


def intervene(model, prompt: str, settings: DecodeSettings, intervention: Intervention) -> Pair:
    """The run as it is and with `intervention` applied (the same draws)."""
    return Pair(model.generate(prompt, settings), model.generate(prompt, settings, intervention=intervention))


def branch_forcing(model, prompt: str, settings: DecodeSettings, step: int, char: str) -> tuple[tuple[int, int]]:
    """The forced characters that write `char` as generated character `step` (0 = the first character written);
    ValueError naming what is allowed otherwise."""
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < settings.max_new_chars:
        raise ValueError(f"step must be a whole number from 0 to {settings.max_new_chars - 1} (0 = the first "
                         f"character written), not {step!r}")
    if not isinstance(char, str) or len(char) != 1:
        raise ValueError(f"char must be exactly one character, not {char!r}")
    return ((step, model.tokenizer.encode(char)[0]),)


def branch(model, prompt: str, settings: DecodeSettings, step: int, char: str) -> Pair:
    """The run as it is and rewritten with `char` as generated character `step`, every other draw kept."""
    forced = branch_forcing(model, prompt, settings, step, char)
    return Pair(model.generate(prompt, settings), model.generate(prompt, settings, forced=forced))


@dataclass
class SettingsRun:
    settings: DecodeSettings
    trace: Trace

    def entropy(self) -> torch.Tensor:
        """Per step, the entropy in nats of the distribution sampled from (after the settings filter it)."""
        p = self.trace.filtered.double()
        return -(p * p.clamp_min(1e-30).log()).sum(-1)

    def raw_entropy(self) -> torch.Tensor:
        p = self.trace.probs.double()
        return -(p * p.clamp_min(1e-30).log()).sum(-1)

    def chosen_rank(self) -> torch.Tensor:
        """Per generated character, its rank (1 = most likely) under the model's raw distribution."""
        start = self.trace.prompt_len - 1
        probs, chosen = self.trace.probs[start:-1], self.trace.tokens[start + 1 :]
        return (probs > probs.gather(1, chosen[:, None])).sum(-1) + 1


def compare_settings(model, prompt: str, settings: list[DecodeSettings]) -> list[SettingsRun]:
    """The same prompt and seed under each of `settings` (2 or 3 of them, the same length and seed)."""
    if not 2 <= len(settings) <= 3:
        raise ValueError(f"compare two or three settings, not {len(settings)}")
    if len({(s.max_new_chars, s.seed) for s in settings}) != 1:
        raise ValueError("the settings compared must share their length and seed (only temperature, top-k and "
                         "top-p may differ)")
    return [SettingsRun(s, model.generate(prompt, s)) for s in settings]
