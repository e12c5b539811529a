"""The bigram language model of "Let's build GPT" (Karpathy, 2023): a [vocab, vocab] table whose row for a
character holds the logits of the next one, and the count statistics that bound what any bigram can reach.

Saved and loaded in Hub layout (charrnn.models.base); text is generated from it by the project's decode loop
through next_logits (no sampling loop here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..decoding.kernel import StepScratch
from ..decoding.unit import GRU_KINDS
from ..vocab import Vocab
from .base import HubModel
from .config import ConfigError
from .config import vocab as vocab_field
from .writes import Writes

MODEL_CARD = """---
{{ card_data }}
---

# {{ name }}

The bigram language model of Andrej Karpathy's "Let's build GPT" for [charrnn]({{ repo_url }}): one
{{ vocab_size }} x {{ vocab_size }} table whose row for a character holds the logits of the next character. It has no
memory beyond the character it has just read, which makes it the baseline for what the GRU's memory adds.

| | |
|---|---|
| architecture | `nn.Embedding({{ vocab_size }}, {{ vocab_size }})`: character -> logits of the next character |
| parameters | {{ "{:,}".format(num_parameters) }} (stored as float32) |
| vocabulary | {{ vocab_size }} characters: `{{ vocab_shown }}` (the training text's own, sorted, as `python -m charrnn train` makes a GRU's: on the same text both models share token ids) |
{% if training %}| data | {{ training.data }} ({{ "{:,}".format(training.data_chars) }} characters) |
| split | first 90 % trains ({{ "{:,}".format(training.train_chars) }} chars), last 10 % validates ({{ "{:,}".format(training.val_chars) }} chars) |
| validation loss | **{{ "%.4f" | format(training.val_loss) }} nats/char** after {{ training.steps }} steps (consecutive 256-character windows, as for the GRU) |
| training | {{ training.steps }} steps of {{ training.batch_size }} x {{ training.block_size }} characters, AdamW lr {{ training.lr }} (weight decay {{ training.weight_decay }}), cross-entropy over the flattened logits, seed {{ training.seed }} |
| hardware | {{ training.hardware }}, {{ "%.0f" | format(training.seconds) }} s |

What a bigram can reach on this split, from the counts of character pairs:

| | validation loss (nats/char) |
|---|---|
| the validation text's own pair counts (no bigram does better on this text) | {{ "%.4f" | format(training.bounds.val_own_counts) }} |
| the training part's pair counts, add-{{ training.bounds.alpha }} smoothing (alpha chosen on the training part alone) | {{ "%.4f" | format(training.bounds.train_counts) }} |
| this model | {{ "%.4f" | format(training.val_loss) }} |

Validation loss every {{ training.eval_every }} steps: {{ training.curve | map(attribute=1) | map("round", 3) | join(", ") }}.

Trained with

    {{ training.command }}

Measure the validation loss again with

    python -m charrnn evaluate --model PATH_OR_REPO --text {{ training.data }}
{% endif %}
Load it with

    from charrnn.models.bigram import BigramLanguageModel
    model = BigramLanguageModel.from_pretrained("PATH_OR_REPO")
"""


class BigramLanguageModel(
    nn.Module,
    HubModel,
    Writes,
    tags=["bigram"],
    model_card_template=MODEL_CARD,
):
    """token_embedding_table[c] are the logits of the character after c; the table is the whole state dict."""

    MODEL_TYPE = "bigram"

    def __init__(self, vocab: str, model_type: str = "bigram", training: dict | None = None):
        super().__init__()
        if model_type != self.MODEL_TYPE:
            raise ValueError(f"model_type must be {self.MODEL_TYPE!r} for a BigramLanguageModel, not {model_type!r}")
        self.tokenizer = Vocab(vocab)
        self.training_info = training
        self.token_embedding_table = nn.Embedding(len(vocab), len(vocab))

    def config(self) -> dict:
        return {"model_type": self.MODEL_TYPE, "vocab": self.vocab, "training": self.training_info}

    @classmethod
    def expected_tensors(cls, config: dict) -> dict[str, tuple[int, int]]:
        """The tensors a config.json implies, by name and shape, known before anything is built or downloaded."""
        vocab = config.get("vocab") if isinstance(config, dict) else None
        if not isinstance(vocab, str) or not vocab:
            raise ConfigError("a bigram model's config.json needs a non-empty 'vocab' string")
        vocab_field(vocab)  # a vocabulary (no repeated characters) of at most the allowed size
        return {"token_embedding_table.weight": (len(vocab), len(vocab))}

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx [B, T] -> logits [B, T, C] and, given targets [B, T], the mean cross-entropy over all B*T of them."""
        logits = self.token_embedding_table(idx)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [R] -> logits [R, C] of the character after each."""
        return self.token_embedding_table(tokens)

    # No recurrent state: zero layers of zero units, nothing of a unit's to look into.
    num_layers = 0
    hidden_size = 0
    kinds = ()
    architecture = "BigramLanguageModel"

    def step_weights(self) -> "BigramStep":
        return BigramStep(self.token_embedding_table.weight.detach())

    def card_fields(self) -> dict:
        return {**super().card_fields(), "training": self.training_info}


@dataclass
class BigramStep:
    """The bigram in the decode loop: a step's logits are the table's rows for the characters read; there is
    no state (zero layers), so the same loop, filter and sampling write with it as with the GRU."""

    table: torch.Tensor  # [vocab, vocab]
    kind_names: tuple = GRU_KINDS  # the record's kinds, as a GRU's (of zero layers: nothing is recorded)
    kinds: int = 3

    @property
    def shape(self) -> tuple[int, int, int]:
        return 0, 0, self.table.shape[0]

    state_kinds: int = 1

    def scratch(self, layout, rows: int, device) -> StepScratch:
        padded = layout.padded_rows(rows)
        return StepScratch(torch.empty(0, padded, 0, device=device), torch.empty(padded, 0, device=device),
                           torch.zeros(0, self.kinds, padded, 0, device=device),
                           torch.empty(padded, self.shape[2], device=device))

    def step(self, layout, tokens: torch.Tensor, h: torch.Tensor, scratch: StepScratch, forces=None, record=None,
             logits_out=None):
        logits_out = scratch.logits if logits_out is None else logits_out
        torch.index_select(self.table, 0, tokens, out=logits_out)
        return (scratch.record if record is None else record)[:, :1], logits_out


# ---- what a bigram can reach: the statistics of character pairs ----

ALPHA_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def pair_counts(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """counts[a, b]: how often b follows a in ids ([vocab, vocab], float64)."""
    counts = torch.zeros(vocab_size * vocab_size, dtype=torch.float64)
    counts.index_add_(0, ids[:-1] * vocab_size + ids[1:], torch.ones(len(ids) - 1, dtype=torch.float64))
    return counts.view(vocab_size, vocab_size)


def count_cross_entropy(counts: torch.Tensor, ids: torch.Tensor, alpha: float = 0.0) -> float:
    """Mean nats/char of ids[1:] given ids[:-1] under p(b | a) = (counts[a, b] + alpha) / (counts[a, :] + V alpha).

    With alpha 0 and the counts of ids themselves this is the best any bigram can do on ids (the maximum
    likelihood bigram of that very text)."""
    smoothed = counts + alpha
    probs = smoothed / smoothed.sum(1, keepdim=True)
    return -probs[ids[:-1], ids[1:]].log().mean().item()


def count_bounds(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> dict:
    """The validation loss of (a) the validation text's own pair counts, a lower bound for every bigram on it,
    and (b) the training part's pair counts with add-alpha smoothing, alpha chosen from ALPHA_GRID by fitting
    the first 90 % of the training part and scoring its last 10 % (the validation text is not looked at)."""
    cut = int(len(train_ids) * 0.9)
    fit, held_out = pair_counts(train_ids[:cut], vocab_size), train_ids[cut:]
    alpha = min(ALPHA_GRID, key=lambda a: count_cross_entropy(fit, held_out, a)) if len(held_out) > 1 else 1.0
    return {
        "val_own_counts": round(count_cross_entropy(pair_counts(val_ids, vocab_size), val_ids), 5),
        "train_counts": round(count_cross_entropy(pair_counts(train_ids, vocab_size), val_ids, alpha), 5),
        "alpha": alpha,
    }
