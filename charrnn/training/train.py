"""Training: random windows from the first 90 % of a text, AdamW with a cosine schedule, the best model by
validation loss saved in Hub layout, and a resumable checkpoint beside it (safetensors + JSON, no pickles)."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models.gru import CharRNN
from ..models.lstm import CharLSTM
from ..models.loading import load_weights, resolve_device
from ..vocab import Vocab
from .data import DataError, check_length, read_text, split
from .evaluate import loss_over_windows


CELLS = {"gru": CharRNN, "lstm": CharLSTM}


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@contextlib.contextmanager
def tf32_matmuls():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def learning_rate(step: int, total: int, lr: float, min_lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def save_state(folder: Path, model, optimizer, state: dict) -> None:
    """The latest weights, the optimizer's moments and the loop's counters: enough to continue a run."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    moments = {f"{i}.{name}": value.detach().cpu().contiguous()
               for i, per_param in optimizer.state_dict()["state"].items() for name, value in per_param.items()}
    safetensors.torch.save_file(moments, str(folder / "optimizer.safetensors"))
    (folder / "state.json").write_text(json.dumps(state, indent=2))


def load_state(folder: Path, model, optimizer) -> dict:
    load_weights(model, str(folder / "model.safetensors"), source=str(folder))
    moments = safetensors.torch.load_file(str(folder / "optimizer.safetensors"))
    per_param: dict[int, dict] = {}
    for key, value in moments.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    saved = optimizer.state_dict()
    saved["state"] = per_param
    optimizer.load_state_dict(saved)
    return json.loads((folder / "state.json").read_text())


def train(
    text: str,
    out: str,
    *,
    embedding_dim: int = 64,
    hidden_size: int = 512,
    num_layers: int = 3,
    dropout: float = 0.3,
    seq_len: int = 128,
    batch_size: int = 128,
    lr: float = 2e-3,
    min_lr: float = 1e-4,
    warmup: int = 100,
    weight_decay: float = 0.1,
    grad_clip: float = 1.0,
    steps: int | None = None,
    epochs: float | None = 40,
    eval_every: int = 250,
    seed: int = 1337,
    device: str = "auto",
    resume: bool = False,
    checkpoint_dir: str | None = None,
    save_dtype: str = "float16",
    cell: str = "gru",
    command: str | None = None,
    progress: bool = True,
) -> dict:
    """Train a character-level GRU (cell "gru", a CharRNN) or LSTM ("lstm", a CharLSTM) on the text file `text` and
    save the best model (by validation loss) to `out`."""
    model_class = CELLS.get(cell)
    if model_class is None:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {cell!r}")
    device = resolve_device(device)
    corpus = read_text(text)
    check_length(corpus, seq_len, text)
    vocab = Vocab.from_text(corpus)
    train_part, val_part = split(corpus)
    train_ids = vocab.encode_tensor(train_part).to(device)
    val_ids = vocab.encode_tensor(val_part)
    if steps is None:
        steps = max(1, round(epochs * len(train_part) / (batch_size * seq_len)))
    checkpoint = Path(checkpoint_dir or Path("checkpoints") / Path(out).name)

    torch.manual_seed(seed)
    model = model_class(vocab.chars, embedding_dim, hidden_size, num_layers, dropout, save_dtype).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99))
    info = {"step": 0, "best_val": None, "best_step": None, "seconds": 0.0}
    if resume:
        if not (checkpoint / "state.json").is_file():
            raise DataError(f"--resume: no checkpoint in {checkpoint} (train once without --resume first)")
        info = load_state(checkpoint, model, optimizer)
    generator = torch.Generator(device=device).manual_seed(seed + info["step"])
    def metadata(val_loss, best_step, seconds):
        return {
            "data": str(text), "data_chars": len(corpus), "train_chars": len(train_part), "val_chars": len(val_part),
            "val_loss": round(val_loss, 5), "val_window": 256, "best_step": best_step, "steps_done": info["step"],
            "batch_size": batch_size, "seq_len": seq_len, "lr": lr, "min_lr": min_lr, "warmup": warmup,
            "weight_decay": weight_decay, "grad_clip": grad_clip, "seed": seed,
            "hardware": hardware_name(device), "seconds": round(seconds, 1),
            "command": command or f"charrnn.training.train.train({str(text)!r}, {str(out)!r}, ...)",
        }

    with tf32_matmuls():  # faster training; decoding elsewhere keeps full float32
        chars_per_step = batch_size * seq_len
        offsets = torch.arange(seq_len + 1, device=device)
        bar = tqdm(total=steps, initial=info["step"], unit="step", dynamic_ncols=True, disable=not progress,
                   mininterval=1.0)
        started = time.perf_counter() - info["seconds"]
        window_start, window_steps = time.perf_counter(), 0
        model.train()
        while info["step"] < steps:
            step = info["step"]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps, lr, min_lr, warmup)
            starts = torch.randint(0, len(train_ids) - seq_len, (batch_size,), device=device, generator=generator)
            batch = train_ids[starts[:, None] + offsets]
            logits, _ = model(batch[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            info["step"] = step + 1
            window_steps += 1
            bar.update(1)
            last = info["step"] == steps
            if window_steps % 20 == 0 or last:
                now = time.perf_counter()
                bar.set_postfix(loss=f"{loss.item():.3f}", chars_s=f"{window_steps * chars_per_step / (now - window_start):,.0f}",
                                best_val=f"{info['best_val']:.4f}" if info["best_val"] else "-")
                window_start, window_steps = now, 0
            if info["step"] % eval_every == 0 or last:
                val = loss_over_windows(model, val_ids)
                info["seconds"] = time.perf_counter() - started
                improved = info["best_val"] is None or val < info["best_val"]
                if improved:
                    info["best_val"], info["best_step"] = val, info["step"]
                    model.training_info = metadata(val, info["step"], info["seconds"])
                    model.save_pretrained(out)
                bar.write(f"step {info['step']}/{steps}: train loss {loss.item():.4f}, val loss {val:.4f} nats/char"
                          + (" (best, saved)" if improved else f" (best {info['best_val']:.4f} at {info['best_step']})"))
                model.training_info = metadata(info["best_val"], info["best_step"], info["seconds"])
                save_state(checkpoint, model, optimizer, info)
                window_start = time.perf_counter()
        bar.close()
    # The saved model's card records the whole run's length and time, not only the moment it was best.
    best = model_class.from_pretrained(out, device=device, max_model_mb=math.inf)  # its own model, however large
    best.training_info = metadata(info["best_val"], info["best_step"], time.perf_counter() - started)
    best.save_pretrained(out)
    return best.training_info
