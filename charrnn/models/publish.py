"""Publishing a model folder to the Hugging Face Hub (loading lives in charrnn.models.loading)."""

from __future__ import annotations

import math
from pathlib import Path

from huggingface_hub import HfApi

from .loading import load_model


def push(folder: str, repo_id: str, *, private: bool = False, revision: str | None = None,
         message: str = "Upload charrnn model", token: str | None = None) -> str:
    """Upload `folder` (config.json, model.safetensors, README.md) to the model repo `repo_id`.

    The folder is loaded first, so a broken model is refused before anything is uploaded. The token comes
    from HF_TOKEN or `hf auth login` unless given.
    """
    load_model(folder, device="cpu", local=True, max_model_mb=math.inf)  # the user's own model, however large
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=Path(folder), revision=revision,
                               commit_message=message, allow_patterns=["config.json", "model.safetensors", "README.md"])
    return str(commit)
