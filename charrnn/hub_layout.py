"""Hub layout, shared by charrnn's models: config.json + model.safetensors + a model card README.md, loaded from a
local folder or a Hub repo without ever unpickling, every failure explained by a ModelLoadError."""

from __future__ import annotations

from pathlib import Path

import safetensors
import safetensors.torch
import torch
from huggingface_hub import PyTorchModelHubMixin

WEIGHTS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"
SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# config.json files written before "model_type" existed are all GRUs (CharRNN).
DEFAULT_MODEL_TYPE = "gru"


class ModelLoadError(RuntimeError):
    """A model folder or Hub repository could not be loaded; the message says why."""


class OtherModelTypeError(ModelLoadError):
    """The folder holds a charrnn model of another type (config.json's model_type) than the class asked to load."""

    def __init__(self, message: str, model_type: str):
        super().__init__(message)
        self.model_type = model_type


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    return device


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def load_weights(model: torch.nn.Module, path: str, *, source: str) -> None:
    """Load a safetensors file into `model`, explaining a corrupt file or shapes that do not match the config."""
    try:
        tensors = safetensors.torch.load_file(path)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{WEIGHTS_FILE} of {source!r} is not a readable safetensors file ({one_line(e)})") from None
    check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                 {k: tuple(v.shape) for k, v in tensors.items()}, source=source)
    model.load_state_dict(tensors)


def check_shapes(expected: dict, found: dict, *, source: str) -> None:
    """Raise ModelLoadError naming the tensors whose names or shapes differ from what config.json implies."""
    problems = [f"{k}: file has {list(found[k])}, config.json implies {list(shape)}"
                for k, shape in expected.items() if k in found and tuple(found[k]) != tuple(shape)]
    problems += [f"{k} missing from the file" for k in expected if k not in found]
    # Names from the file are cut short: the header is the publisher's text.
    problems += [f"unexpected tensor {k[:60]!r} in the file" for k in found if k not in expected]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ModelLoadError(f"the weights of {source!r} do not match its config.json: {shown}")


class HubModel(
    PyTorchModelHubMixin,
    # what every charrnn model's card says; a subclass adds its own tags and model card template
    library_name="charrnn",
    license="mit",
    tags=["char-rnn", "text-generation"],
    repo_url="https://huggingface.co/spaces/charrnn/charrnn",
):
    """Saving and loading for a charrnn model (an nn.Module with a `vocab` string in its config).

    A subclass sets MODEL_TYPE, defines config() (what config.json holds) and may add to card_fields() (what its
    model card template reads besides `name`); `weights_dtype` is the dtype its tensors are stored in.
    """

    MODEL_TYPE: str = DEFAULT_MODEL_TYPE
    weights_dtype: torch.dtype = torch.float32

    @property
    def vocab(self) -> str:
        return self.tokenizer.chars

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def config(self) -> dict:
        raise NotImplementedError

    def card_fields(self) -> dict:
        return {
            "vocab_size": len(self.vocab),
            "vocab_shown": self.vocab.replace("\n", "↵").replace("`", "'"),
            "num_parameters": sum(p.numel() for p in self.parameters()),
        }

    def _save_pretrained(self, save_directory: Path) -> None:
        tensors = {k: v.detach().to("cpu", self.weights_dtype).contiguous() for k, v in self.state_dict().items()}
        safetensors.torch.save_file(tensors, str(save_directory / WEIGHTS_FILE), metadata={"format": "pt"})

    def save_pretrained(self, save_directory, **kwargs):
        """Write config.json, model.safetensors and a fresh model card README.md."""
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / "README.md").unlink(missing_ok=True)
        card = {"name": Path(save_directory).name, **self.card_fields()}
        return super().save_pretrained(save_directory, config=self.config(), model_card_kwargs=card, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision: str | None = None,
                        device: str | torch.device = "auto", **kwargs):
        """Load from a local folder or a Hub repo id; only model.safetensors is ever read (never a pickle).

        The model's size and tensors are checked from config.json and the safetensors header before anything is
        downloaded or built (charrnn.loading). kwargs: max_model_mb (default CHARRNN_MAX_MODEL_MB or 200, the
        float32 size), token, cache_dir, local_files_only, force_download. Every failure (no such folder or repo,
        offline and not cached, not a charrnn model, a model of another type, too large, corrupt weights, weights
        that do not match config.json) raises ModelLoadError with a message that says which.
        """
        from .loading import load_model

        return load_model(pretrained_model_name_or_path, revision, device=device, model_class=cls, **kwargs)
