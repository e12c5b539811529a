"""CharLSTM: embedding -> LSTM -> linear head, saved and loaded in Hub layout (safetensors only), config.json's
model_type "lstm"."""

from __future__ import annotations

import torch.nn as nn

from ..decoding.kernel import StepWeights
from ..decoding.unit import LSTM_KINDS
from .recurrent import MODEL_CARD, RecurrentCharModel


class CharLSTM(RecurrentCharModel, tags=["lstm"], model_card_template=MODEL_CARD):
    """A character-level LSTM language model (`embedding`, `lstm`, `head`): nn.LSTM's tensors and gate order
    (input, forget, cell candidate, output)."""

    MODEL_TYPE = "lstm"
    CELL, RNN, GATES = "lstm", nn.LSTM, 4
    kinds = LSTM_KINDS  # h_t, c_t, i_t, f_t, o_t

    def __init__(self, vocab: str, embedding_dim: int = 64, hidden_size: int = 512, num_layers: int = 3,
                 dropout: float = 0.3, save_dtype: str = "float16", training: dict | None = None,
                 model_type: str = "lstm"):
        if model_type != self.MODEL_TYPE:
            raise ValueError(f"model_type must be {self.MODEL_TYPE!r} for a CharLSTM, not {model_type!r}")
        super().__init__(vocab, embedding_dim, hidden_size, num_layers, dropout, save_dtype, training)

    def step_weights(self) -> StepWeights:
        """The weights arranged for the decode loop's steps."""
        return StepWeights.of(self)
