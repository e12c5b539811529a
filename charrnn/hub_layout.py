"""Hub layout, shared by charrnn's models: config.json + model.safetensors + a model card README.md, loaded from a
local folder or a Hub repo without ever unpickling, every failure explained by a ModelLoadError."""

from __future__ import annotations

import os
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from huggingface_hub import PyTorchModelHubMixin, file_exists, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

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


def load_weights(model: torch.nn.Module, path: str, *, source: str, strict: bool = True) -> None:
    """Load a safetensors file into `model`, explaining a corrupt file or shapes that do not match the config."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        tensors = safetensors.torch.load_file(path)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{WEIGHTS_FILE} of {source!r} is not a readable safetensors file ({one_line(e)})") from None
    problems = [f"{k}: file has {list(found[k])}, config.json implies {list(shape)}"
                for k, shape in expected.items() if k in found and found[k] != shape]
    if strict:
        problems += [f"{k} missing from the file" for k in expected if k not in found]
        problems += [f"unexpected tensor {k} in the file" for k in found if k not in expected]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ModelLoadError(f"the weights of {source!r} do not match its config.json: {shown}")
    model.load_state_dict(tensors, strict=strict)


class HubModel(PyTorchModelHubMixin):
    """Saving and loading for a charrnn model (an nn.Module with a `vocab` string in its config).

    A subclass sets MODEL_TYPE, defines config() (what config.json holds) and may add to card_fields() (what its
    model card template reads besides `name`); `weights_dtype` is the dtype its tensors are stored in.
    """

    MODEL_TYPE: str = DEFAULT_MODEL_TYPE
    weights_dtype: torch.dtype = torch.float32

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
                        device: str | torch.device = "auto", **hub_kwargs):
        """Load from a local folder or a Hub repo id; only model.safetensors is ever read (never a pickle).

        Every failure (no such folder or repo, offline and not cached, not a charrnn model, a model of another
        type, corrupt weights, weights that do not match config.json) raises ModelLoadError saying which.
        """
        source = str(pretrained_model_name_or_path)
        device = resolve_device(device)
        try:
            model = super().from_pretrained(source, revision=revision, strict=True, **hub_kwargs)
        except ModelLoadError:
            raise
        except RevisionNotFoundError:
            raise ModelLoadError(f"the Hub repository {source!r} has no revision {revision!r}") from None
        except RepositoryNotFoundError:
            raise ModelLoadError(
                f"{source!r} is neither a local folder nor a model repository on the Hub "
                "(check the spelling; a private or gated repository needs HF_TOKEN)") from None
        except HFValidationError:
            raise ModelLoadError(
                f"{source!r} is not a local folder and not a Hub repo id of the form 'owner/name'") from None
        except LocalEntryNotFoundError:
            raise ModelLoadError(
                f"cannot load {source!r}: the Hub is unreachable (or HF_HUB_OFFLINE is set) and the model "
                "is not in the local cache") from None
        except (HfHubHTTPError, OSError) as e:
            raise ModelLoadError(f"cannot download {source!r} from the Hub: {one_line(e)}") from None
        return model.to(device)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         strict: bool = True, config: dict | None = None, **model_kwargs):
        # `config` is the whole config.json (the mixin passes it because this signature names it); model_kwargs
        # are the parts of it that __init__ takes.
        def fetch(filename: str) -> str | None:
            if os.path.isdir(model_id):
                path = os.path.join(model_id, filename)
                return path if os.path.isfile(path) else None
            try:
                return hf_hub_download(model_id, filename, revision=revision, cache_dir=cache_dir, token=token,
                                       force_download=force_download, local_files_only=local_files_only)
            except LocalEntryNotFoundError:
                raise  # offline and not cached: from_pretrained explains
            except EntryNotFoundError:
                return None

        weights = fetch(WEIGHTS_FILE)
        if weights is None:
            # Only ask whether a pickle is there (a HEAD request); it is never downloaded.
            has_pickle = (os.path.isfile(os.path.join(model_id, PICKLE_FILE)) if os.path.isdir(model_id) else
                          not local_files_only and file_exists(model_id, PICKLE_FILE, revision=revision, token=token))
            raise ModelLoadError(
                f"{model_id!r} has no {WEIGHTS_FILE}"
                + (f", only {PICKLE_FILE}, which charrnn refuses: pickled weights can run code when loaded. "
                   f"Convert it to {WEIGHTS_FILE} (safetensors.torch.save_file) and try again"
                   if has_pickle else ": charrnn loads safetensors weights only"))
        if not isinstance(model_kwargs.get("vocab"), str):
            raise ModelLoadError(f"{model_id!r} is not a charrnn model: its config.json is missing or has no 'vocab' string")
        model_type = config.get("model_type", DEFAULT_MODEL_TYPE) if isinstance(config, dict) else DEFAULT_MODEL_TYPE
        if model_type != cls.MODEL_TYPE:
            raise OtherModelTypeError(
                f"{model_id!r} is a {model_type!r} model (config.json's model_type), and {cls.__name__} loads "
                f"{cls.MODEL_TYPE!r} models only", model_type)
        try:
            model = cls(**model_kwargs)
        except (TypeError, ValueError) as e:
            raise ModelLoadError(f"config.json of {model_id!r} is not a valid charrnn config: {e}") from None
        load_weights(model, weights, source=model_id, strict=strict)
        model.eval()
        return model
