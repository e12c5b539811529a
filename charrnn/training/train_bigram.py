"""Training the bigram model as "Let's build GPT" does: AdamW at lr 1e-3 on random (B, T) batches from the first
90 % of the text, cross-entropy over the flattened logits; the validation loss measured as for the GRU."""

from __future__ import annotations

import time

import torch

from ..models.bigram import BigramLanguageModel, count_bounds
from ..vocab import Vocab
from .data import check_length, read_text, split
from .evaluate import WINDOW, loss_over_windows
from .train import hardware_name


def check_settings(steps: int, batch_size: int, block_size: int, lr: float, eval_every: int) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size), ("block_size", block_size),
                        ("eval_every", eval_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")
    if not 0 < lr <= 1:
        raise ValueError(f"lr must be in (0, 1], not {lr!r}")


def train_bigram(
    text: str,
    out: str,
    *,
    steps: int = 12_000,
    batch_size: int = 64,
    block_size: int = 256,
    lr: float = 1e-3,
    eval_every: int = 1000,
    seed: int = 1337,
    command: str | None = None,
    log=print,
) -> dict:
    """Train a BigramLanguageModel on the text file `text` and save it to `out` (Hub layout); returns the
    training record that config.json and the model card hold.

    The vocabulary is the text's own characters, sorted (as `train` makes the GRU's), so on the same text both
    models share token ids. Runs on the CPU: a step is a table lookup, faster there than a GPU's launch.
    """
    check_settings(steps, batch_size, block_size, lr, eval_every)
    corpus = read_text(text)
    check_length(corpus, block_size, text, flag="--block-size")
    vocab = Vocab.from_text(corpus)
    train_part, val_part = split(corpus)
    train_ids, val_ids = vocab.encode_tensor(train_part), vocab.encode_tensor(val_part)

    torch.manual_seed(seed)
    model = BigramLanguageModel(vocab.chars)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)  # the seed's optimizer: AdamW's default decay 0.01
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.arange(block_size + 1)  # a window and the character after it
    curve = [[0, round(loss_over_windows(model, val_ids), 4)]]
    log(f"step 0/{steps}: val loss {curve[-1][1]:.4f} nats/char")
    started = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        starts = torch.randint(len(train_ids) - block_size, (batch_size,), generator=generator)
        window = train_ids[starts[:, None] + offsets]
        xb, yb = window[:, :-1], window[:, 1:]
        _, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % eval_every == 0 or step == steps:  # the last step's is the model's validation loss
            val_loss = loss_over_windows(model, val_ids)
            curve.append([step, round(val_loss, 4)])
            log(f"step {step}/{steps}: train loss {loss.item():.4f}, val loss {curve[-1][1]:.4f} nats/char")
    seconds = time.perf_counter() - started

    model.eval()
    model.training_info = {
        "data": str(text), "data_chars": len(corpus), "train_chars": len(train_part), "val_chars": len(val_part),
        "val_loss": round(val_loss, 5), "val_window": WINDOW,
        "steps": steps, "batch_size": batch_size, "block_size": block_size, "lr": lr,
        "weight_decay": optimizer.param_groups[0]["weight_decay"], "seed": seed,
        "eval_every": eval_every, "curve": curve,
        "bounds": count_bounds(train_ids, val_ids, len(vocab)),
        "hardware": hardware_name(torch.device("cpu")), "seconds": round(seconds, 1),
        "command": command or f"charrnn.training.train_bigram.train_bigram({str(text)!r}, {str(out)!r}, ...)",
    }
    model.save_pretrained(out)
    return model.training_info

