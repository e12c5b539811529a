"""What every charrnn model can do with a prompt: generate, stream and trace, through the one decode loop
(charrnn.decoding.loop)."""

from __future__ import annotations

from ..decoding import loop
from ..decoding.sampling import DecodeSettings


class Writes:
    """Mixed into a model class that has a `tokenizer` and a `step_weights()` for the decode loop."""

    def generate(self, prompt: str, settings=None, *, on_unknown: str = "error", intervention=None, forced=()):
        """Write after `prompt` and return the Trace: text, per-step probabilities and every layer's gates.
        `intervention` (charrnn.decoding.interventions.Intervention) forces a unit from a step on; `forced` holds
        (generated index, token id) pairs written instead of what would be drawn there."""
        return loop.generate(self, prompt, settings, on_unknown=on_unknown, intervention=intervention, forced=forced)

    def stream(self, prompt: str, settings=None, *, on_unknown: str = "error", chunk_size: int = 32,
               intervention=None, forced=()):
        """Like generate, but yields the text as it is written; the last update carries the Trace."""
        return loop.stream(self, prompt, settings, on_unknown=on_unknown, chunk_size=chunk_size,
                           intervention=intervention, forced=forced)

    def trace(self, text: str, *, on_unknown: str = "error"):
        """Read `text` from a zero state and return its Trace (nothing is generated)."""
        return self.generate(text, DecodeSettings(max_new_chars=0), on_unknown=on_unknown)
