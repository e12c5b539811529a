"""What the character-level GRU and LSTM share: embedding -> recurrent layers -> linear head, the constructor's
arguments checked, config.json, the model card, and the tensors a config implies. Each cell's class (charrnn.models.gru,
charrnn.models.lstm) names its recurrent module, its gates and its step weights."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..vocab import Vocab
from . import config as fields
from .base import HubModel
from .loading import SAVE_DTYPES
from .writes import Writes

MAX_WIDTH = 1_000_000  # embedding_dim and hidden_size: only absurd values; the size limit (models.loading) binds first
MAX_LAYERS = 32

MODEL_CARD = """---
{{ card_data }}
---

# {{ name }}

A character-level {{ cell }} language model for [charrnn]({{ repo_url }}), the playground that shows the
next-character probabilities and the {{ cell }}'s gates ({{ gates }}) while the model writes.

| | |
|---|---|
| architecture | embedding {{ vocab_size }} x {{ config.embedding_dim }} -> {{ cell }} {{ config.num_layers }} x {{ config.hidden_size }} (dropout {{ config.dropout }}) -> linear to {{ vocab_size }} logits |
| parameters | {{ "{:,}".format(num_parameters) }} (stored as {{ config.save_dtype }}) |
| vocabulary | {{ vocab_size }} characters: `{{ vocab_shown }}` |
{% if training %}| data | {{ training.data }} ({{ "{:,}".format(training.data_chars) }} characters) |
| split | first 90 % trains ({{ "{:,}".format(training.train_chars) }} chars), last 10 % validates ({{ "{:,}".format(training.val_chars) }} chars) |
| validation loss | **{{ "%.4f" | format(training.val_loss) }} nats/char** at step {{ training.best_step }} (consecutive 256-character windows, each from a zero state) |
| training | {{ training.steps_done }} steps of {{ training.batch_size }} x {{ training.seq_len }} characters, AdamW lr {{ training.lr }} cosine to {{ training.min_lr }}, weight decay {{ training.weight_decay }}, grad clip {{ training.grad_clip }}, seed {{ training.seed }} |
| hardware | {{ training.hardware }}, {{ "%.0f" | format(training.seconds) }} s |

Trained with

    {{ training.command }}

Measure the validation loss again with

    python -m charrnn evaluate --model PATH_OR_REPO --text {{ training.data }}
{% if training.notes %}
{{ training.notes }}
{% endif %}{% endif %}
Load it with

    from charrnn import DecodeSettings, load_model
    model = load_model("PATH_OR_REPO")
    trace = model.generate("ROMEO:", DecodeSettings(max_new_chars=200, temperature=0.8, top_p=0.95, seed=1))
    print(trace.text)
"""


class RecurrentCharModel(nn.Module, HubModel, Writes):
    """embedding -> CELL (nn.GRU or nn.LSTM, held under the cell's own name) -> head. The three modules are the
    whole state dict, so the weights also load into a plain nn.Embedding, nn.GRU or nn.LSTM (keys
    gru.weight_ih_l0 or lstm.weight_ih_l0, ...) and nn.Linear. A subclass sets MODEL_TYPE, CELL (the module's
    name and class, RNN), GATES (rows of weight_ih per unit), `kinds` and step_weights()."""

    CELL: str
    RNN: type
    GATES: int

    def __init__(
        self,
        vocab: str,
        embedding_dim: int = 64,
        hidden_size: int = 512,
        num_layers: int = 3,
        dropout: float = 0.3,
        save_dtype: str = "float16",
        training: dict | None = None,
    ):
        super().__init__()
        check_arguments(vocab, embedding_dim, hidden_size, num_layers, dropout, save_dtype)
        self.tokenizer = Vocab(vocab)
        self.embedding_dim, self.hidden_size, self.num_layers = embedding_dim, hidden_size, num_layers
        self.dropout, self.save_dtype, self.training_info = dropout, save_dtype, training
        self.embedding = nn.Embedding(len(vocab), embedding_dim)
        setattr(self, self.CELL, self.RNN(embedding_dim, hidden_size, num_layers, batch_first=True,
                                          dropout=dropout if num_layers > 1 else 0.0))
        self.head = nn.Linear(hidden_size, len(vocab))
        # Dropout on the recurrent layers' input and output too (no parameters: the state dict stays the three).
        self.drop = nn.Dropout(dropout)

    @property
    def rnn(self) -> nn.Module:
        return getattr(self, self.CELL)

    @property
    def architecture(self) -> str:
        return f"{self.CELL.upper()} {self.num_layers} × {self.hidden_size}"

    def config(self) -> dict:
        return {
            **({"model_type": self.MODEL_TYPE} if self.MODEL_TYPE != "gru" else {}),
            "vocab": self.vocab,
            "embedding_dim": self.embedding_dim,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "save_dtype": self.save_dtype,
            "training": self.training_info,
        }

    def forward(self, ids: torch.Tensor, state=None):
        """ids [batch, time] -> logits [batch, time, vocab] and the last state of every layer (the GRU's
        [layers, batch, hidden]; the LSTM's (h, c), each that shape)."""
        out, state = self.rnn(self.drop(self.embedding(ids)), state)
        return self.head(self.drop(out)), state

    # ---- Hub layout (saving and loading live in charrnn.models.base and charrnn.models.loading) ----

    @property
    def weights_dtype(self) -> torch.dtype:
        return SAVE_DTYPES[self.save_dtype]

    def card_fields(self) -> dict:
        return {**super().card_fields(), "config": self.config(), "training": self.training_info,
                "cell": self.CELL.upper(), "gates": ", ".join(kind for kind in self.kinds if kind not in
                                                                  ("hidden", "cell"))}

    @classmethod
    def expected_tensors(cls, config: dict) -> dict[str, tuple[int, ...]]:
        """The state dict's names and shapes that config.json implies, from its fields alone (nothing is built).

        Raises charrnn.models.config.ConfigError naming a field that cannot define the model.
        """
        args = {"vocab": None, **fields.constructor_arguments(cls, config)}
        check_arguments(**args)
        vocab, width, hidden = len(args["vocab"]), args["embedding_dim"], args["hidden_size"]
        rows, name = cls.GATES * hidden, cls.CELL
        shapes = {"embedding.weight": (vocab, width)}
        for k in range(args["num_layers"]):
            shapes |= {f"{name}.weight_ih_l{k}": (rows, width if k == 0 else hidden),
                       f"{name}.weight_hh_l{k}": (rows, hidden),
                       f"{name}.bias_ih_l{k}": (rows,), f"{name}.bias_hh_l{k}": (rows,)}
        return shapes | {"head.weight": (vocab, hidden), "head.bias": (vocab,)}


def check_arguments(vocab, embedding_dim, hidden_size, num_layers, dropout, save_dtype, training=None,
                    model_type=None) -> None:
    """The constructor's arguments, each checked; raises ConfigError (a ValueError) naming the first bad one."""
    fields.vocab(vocab)
    fields.whole_number("embedding_dim", embedding_dim, 1, MAX_WIDTH)
    fields.whole_number("hidden_size", hidden_size, 1, MAX_WIDTH)
    fields.whole_number("num_layers", num_layers, 1, MAX_LAYERS)
    fields.fraction("dropout", dropout)
    fields.one_of("save_dtype", save_dtype, list(SAVE_DTYPES))
