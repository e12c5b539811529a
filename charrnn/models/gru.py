"""CharRNN: embedding -> GRU -> linear head, saved and loaded in Hub layout (safetensors only)."""

from __future__ import annotations

import torch.nn as nn

from ..decoding.kernel import StepWeights
from ..decoding.unit import GRU_KINDS
from .recurrent import MODEL_CARD, RecurrentCharModel


class CharRNN(RecurrentCharModel, tags=["gru"], model_card_template=MODEL_CARD):
    """A character-level GRU language model (`embedding`, `gru`, `head`)."""

    MODEL_TYPE = "gru"
    CELL, RNN, GATES = "gru", nn.GRU, 3
    kinds = GRU_KINDS  # what each unit of each layer holds: h_t, r_t, z_t

    def step_weights(self) -> StepWeights:
        """The weights arranged for the decode loop's steps."""
        return StepWeights.of(self)
