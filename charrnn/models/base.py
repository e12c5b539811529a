"""HubModel: what every charrnn model is in Hub layout: config.json + model.safetensors + a model card README.md,
saved without pickles and loaded through charrnn.models.loading (every failure a ModelLoadError). A subclass
registers itself under its MODEL_TYPE, so loading can build whichever model a config.json names."""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import torch
from huggingface_hub import PyTorchModelHubMixin

from .loading import DEFAULT_MODEL_TYPE, WEIGHTS_FILE, load_model, register_model_class


class HubModel(
    PyTorchModelHubMixin,
    # what every charrnn model's card says; a subclass adds its own tags and model card template
    library_name="charrnn",
    license="mit",
    tags=["char-rnn", "text-generation"],
    repo_url="https://huggingface.co/spaces/charrnn/charrnn",
):
    """Saving and loading for a charrnn model (an nn.Module with a `vocab` string in its config).

    A subclass sets MODEL_TYPE (and is then what config.json's "model_type" of that name loads as), defines config()
    (what config.json holds) and expected_tensors(config) (what its state dict holds, known before anything is
    built), and may add to card_fields() (what its model card template reads besides `name`); `weights_dtype` is
    the dtype its tensors are stored in.
    """

    MODEL_TYPE: str = DEFAULT_MODEL_TYPE
    weights_dtype: torch.dtype = torch.float32

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "MODEL_TYPE" in vars(cls):  # a concrete model class, not a base between
            register_model_class(cls.MODEL_TYPE, cls)

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
        downloaded or built (charrnn.models.loading). kwargs: max_model_mb (default CHARRNN_MAX_MODEL_MB or 200, the
        float32 size), token, cache_dir, local_files_only, force_download. Every failure (no such folder or repo,
        offline and not cached, not a charrnn model, a model of another type, too large, corrupt weights, weights
        that do not match config.json) raises ModelLoadError with a message that says which.
        """
        return load_model(pretrained_model_name_or_path, revision, device=device, model_class=cls, **kwargs)
