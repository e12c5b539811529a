"""Validation loss: mean negative log-likelihood (nats/char) over consecutive windows, each from a zero state."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import read_text, split

WINDOW = 256


def loss_over_windows(model, ids: torch.Tensor, window: int = WINDOW, windows_per_batch: int = 64) -> float:
    """Mean nats/char of predicting ids[1:] from ids[:-1], read in consecutive `window`-character windows that
    each start from a zero state (the protocol behind nanoGPT's 1.4697 on Tiny Shakespeare)."""
    if len(ids) < 2:
        raise ValueError("need at least two characters to measure a loss")
    was_training = model.training
    model.eval()
    ids = ids.to(model.device)
    targets = len(ids) - 1
    full = targets // window
    total = torch.zeros((), dtype=torch.float64, device=model.device)
    with torch.inference_mode():
        inputs, labels = ids[: full * window].view(full, window), ids[1 : full * window + 1].view(full, window)
        batches = [(inputs[i : i + windows_per_batch], labels[i : i + windows_per_batch])
                   for i in range(0, full, windows_per_batch)]
        if targets % window:
            batches.append((ids[full * window : -1][None], ids[full * window + 1 :][None]))
        for x, y in batches:
            logits, _ = model(x)
            total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").double()
    model.train(was_training)
    return total.item() / targets


def evaluate_file(model, path, part: str = "val", window: int = WINDOW) -> dict:
    """The loss on the validation part (last 10 %), the training part or all of a text file."""
    text = read_text(path)
    train_part, val_part = split(text)
    chosen = {"val": val_part, "train": train_part, "all": text}[part]
    ids = model.tokenizer.encode_tensor(chosen)
    return {"part": part, "chars": len(chosen), "window": window, "loss": loss_over_windows(model, ids, window)}
