"""Reading the training text and splitting it: first 90 % trains, last 10 % validates."""

from __future__ import annotations

from pathlib import Path

TRAIN_FRACTION = 0.9


class DataError(ValueError):
    """The training text cannot be used; the message says why."""


def read_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"{path} is empty: give a UTF-8 text file to train on")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} "
                        f"cannot be decoded ({e.reason}); re-save the file as UTF-8") from None


def split(text: str) -> tuple[str, str]:
    cut = int(len(text) * TRAIN_FRACTION)
    return text[:cut], text[cut:]


def check_length(text: str, seq_len: int, path: str | Path = "the text", flag: str = "--seq-len") -> None:
    """Refuse a text whose training part cannot fill one sequence, or whose validation part is empty."""
    train_part, val_part = split(text)
    if len(train_part) < seq_len + 1 or len(val_part) < 2:
        need = max(seq_len + 1, 2) / TRAIN_FRACTION
        raise DataError(f"{path} is too short to train on: {len(text)} characters, but one batch of "
                        f"{seq_len}-character sequences from the first 90 % (and a validation part from the "
                        f"last 10 %) needs at least {int(need) + 2}; use a longer text or a smaller {flag}")
