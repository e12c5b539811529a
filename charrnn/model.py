"""CharRNN: embedding -> GRU -> linear head, saved and loaded in Hub layout (safetensors only)."""

from __future__ import annotations

from pathlib import Path

import safetensors
import safetensors.torch
import torch
import torch.nn as nn
from huggingface_hub import PyTorchModelHubMixin

from . import config as fields
from .vocab import Vocab

WEIGHTS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"
SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MAX_WIDTH = 1_000_000  # embedding_dim and hidden_size: only absurd values; the size limit (charrnn.loading) binds first
MAX_LAYERS = 32

MODEL_CARD = """---
{{ card_data }}
---

# {{ name }}

A character-level GRU language model for [charrnn]({{ repo_url }}), the playground that shows the
next-character probabilities and the GRU's reset and update gates while the model writes.

| | |
|---|---|
| architecture | embedding {{ vocab_size }} x {{ config.embedding_dim }} -> GRU {{ config.num_layers }} x {{ config.hidden_size }} (dropout {{ config.dropout }}) -> linear to {{ vocab_size }} logits |
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

    from charrnn import CharRNN, DecodeSettings
    model = CharRNN.from_pretrained("PATH_OR_REPO")
    trace = model.generate("ROMEO:", DecodeSettings(max_new_chars=200, temperature=0.8, top_p=0.95, seed=1))
    print(trace.text)
"""


class ModelLoadError(RuntimeError):
    """A model folder or Hub repository could not be loaded; the message says why."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    return device


def gru_update(gi: torch.Tensor, gh: torch.Tensor, h_prev: torch.Tensor, out: torch.Tensor | None = None):
    """The GRU equations, exactly as torch.nn.GRU computes them.

    gi = W_ih x_t + b_ih and gh = W_hh h_{t-1} + b_hh, each [..., 3H] in the order (r, z, n).
    Returns the reset gate r_t, the update gate z_t and the new state h_t = (1 - z_t) n_t + z_t h_{t-1}
    (written into `out` when given). Works for one step or for many steps at once (given every h_{t-1}).
    """
    hidden = h_prev.shape[-1]
    gi_rz, gi_n = gi.split((2 * hidden, hidden), dim=-1)
    gh_rz, gh_n = gh.split((2 * hidden, hidden), dim=-1)
    reset_gate, update_gate = torch.sigmoid(gi_rz + gh_rz).chunk(2, dim=-1)
    candidate = torch.tanh(torch.addcmul(gi_n, reset_gate, gh_n))
    return reset_gate, update_gate, torch.lerp(candidate, h_prev, update_gate, out=out)


class CharRNN(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="charrnn",
    license="mit",
    tags=["char-rnn", "gru", "text-generation"],
    repo_url="https://huggingface.co/spaces/charrnn/charrnn",
    model_card_template=MODEL_CARD,
):
    """A character-level GRU language model.

    The three attributes `embedding`, `gru` and `head` are the whole state dict, so the weights also load into a
    plain nn.Embedding, nn.GRU (keys gru.weight_ih_l0, ...) and nn.Linear.
    """

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
        self.gru = nn.GRU(embedding_dim, hidden_size, num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, len(vocab))
        # Dropout on the GRU's input and output too (no parameters, so the state dict stays the three modules).
        self.drop = nn.Dropout(dropout)

    @property
    def vocab(self) -> str:
        return self.tokenizer.chars

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def config(self) -> dict:
        return {
            "vocab": self.vocab,
            "embedding_dim": self.embedding_dim,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "save_dtype": self.save_dtype,
            "training": self.training_info,
        }

    def forward(self, ids: torch.Tensor, h0: torch.Tensor | None = None):
        """ids [batch, time] -> logits [batch, time, vocab] and the last state of every layer [layers, batch, hidden]."""
        out, h_n = self.gru(self.drop(self.embedding(ids)), h0)
        return self.head(self.drop(out)), h_n

    # ---- decoding and inspection (the loops live in charrnn.decode) ----

    def generate(self, prompt: str, settings=None, *, on_unknown: str = "error"):
        """Write after `prompt` and return the Trace: text, per-step probabilities and every layer's gates."""
        from .decode import generate

        return generate(self, prompt, settings, on_unknown=on_unknown)

    def stream(self, prompt: str, settings=None, *, on_unknown: str = "error", chunk_size: int = 32):
        """Like generate, but yields the text as it is written; the last update carries the Trace."""
        from .decode import stream

        return stream(self, prompt, settings, on_unknown=on_unknown, chunk_size=chunk_size)

    def trace(self, text: str, *, on_unknown: str = "error"):
        """Read `text` from a zero state and return its Trace (nothing is generated)."""
        from .sampling import DecodeSettings

        return self.generate(text, DecodeSettings(max_new_chars=0), on_unknown=on_unknown)

    # ---- Hub layout ----

    def _save_pretrained(self, save_directory: Path) -> None:
        dtype = SAVE_DTYPES[self.save_dtype]
        tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.state_dict().items()}
        safetensors.torch.save_file(tensors, str(save_directory / WEIGHTS_FILE), metadata={"format": "pt"})

    def save_pretrained(self, save_directory, **kwargs):
        """Write config.json, model.safetensors and a fresh model card README.md."""
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / "README.md").unlink(missing_ok=True)
        card = {
            "name": Path(save_directory).name,
            "vocab_size": len(self.vocab),
            "vocab_shown": self.vocab.replace("\n", "↵").replace("`", "'"),
            "num_parameters": sum(p.numel() for p in self.parameters()),
            "config": self.config(),
            "training": self.training_info,
        }
        return super().save_pretrained(save_directory, config=self.config(), model_card_kwargs=card, **kwargs)

    @classmethod
    def expected_tensors(cls, config: dict) -> dict[str, tuple[int, ...]]:
        """The state dict's names and shapes that config.json implies, from its fields alone (nothing is built).

        Raises charrnn.config.ConfigError naming a field that cannot define a CharRNN.
        """
        args = {"vocab": None, **fields.constructor_arguments(cls, config)}
        check_arguments(**args)
        vocab, width, hidden = len(args["vocab"]), args["embedding_dim"], args["hidden_size"]
        shapes = {"embedding.weight": (vocab, width)}
        for k in range(args["num_layers"]):
            shapes |= {f"gru.weight_ih_l{k}": (3 * hidden, width if k == 0 else hidden),
                       f"gru.weight_hh_l{k}": (3 * hidden, hidden),
                       f"gru.bias_ih_l{k}": (3 * hidden,), f"gru.bias_hh_l{k}": (3 * hidden,)}
        return shapes | {"head.weight": (vocab, hidden), "head.bias": (vocab,)}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision: str | None = None,
                        device: str | torch.device = "auto", **kwargs) -> "CharRNN":
        """Load from a local folder or a Hub repo id; only model.safetensors is ever read (never a pickle).

        The model's size and tensors are checked from config.json and the safetensors header before anything is
        downloaded or built (charrnn.loading). kwargs: max_model_mb (default CHARRNN_MAX_MODEL_MB or 200, the
        float32 size), token, cache_dir, local_files_only, force_download. Every failure (no such folder or repo,
        offline and not cached, not a charrnn model, too large, corrupt weights, weights that do not match
        config.json) raises ModelLoadError with a message that says which.
        """
        from .loading import load_model

        return load_model(pretrained_model_name_or_path, revision, device=device, model_class=cls, **kwargs)


def check_arguments(vocab, embedding_dim, hidden_size, num_layers, dropout, save_dtype, training=None) -> None:
    """The constructor's arguments, each checked; raises ConfigError (a ValueError) naming the first bad one."""
    fields.vocab(vocab)
    fields.whole_number("embedding_dim", embedding_dim, 1, MAX_WIDTH)
    fields.whole_number("hidden_size", hidden_size, 1, MAX_WIDTH)
    fields.whole_number("num_layers", num_layers, 1, MAX_LAYERS)
    fields.fraction("dropout", dropout)
    fields.one_of("save_dtype", save_dtype, list(SAVE_DTYPES))


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def load_weights(model: nn.Module, path: str, *, source: str, strict: bool = True) -> None:
    """Load a safetensors file into `model`, explaining a corrupt file or shapes that do not match the config."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        tensors = safetensors.torch.load_file(path)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{WEIGHTS_FILE} of {source!r} is not a readable safetensors file ({one_line(e)})") from None
    check_shapes(expected, found, source=source, strict=strict)
    model.load_state_dict(tensors, strict=strict)


def check_shapes(expected: dict, found: dict, *, source: str, strict: bool = True) -> None:
    """Raise ModelLoadError naming the tensors whose names or shapes differ from what config.json implies."""
    problems = [f"{k}: file has {list(found[k])}, config.json implies {list(shape)}"
                for k, shape in expected.items() if k in found and tuple(found[k]) != tuple(shape)]
    if strict:
        problems += [f"{k} missing from the file" for k in expected if k not in found]
        # Names from the file are cut short: the header is the publisher's text.
        problems += [f"unexpected tensor {k[:60]!r} in the file" for k in found if k not in expected]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ModelLoadError(f"the weights of {source!r} do not match its config.json: {shown}")
