"""The character vocabulary: one string whose index is the token id."""

from __future__ import annotations

import torch


class UnknownCharactersError(ValueError):
    """A text holds characters the model has never seen."""

    def __init__(self, unknown: list[str], vocab: str):
        self.unknown = unknown
        shown = ", ".join(show_char(c) for c in unknown)
        super().__init__(
            f"the text has {len(unknown)} character(s) outside the model's vocabulary: {shown}; "
            f"allowed are the {len(vocab)} characters {show_vocab(vocab)} "
            "(or drop unknown characters instead)"
        )


WHITESPACE_SYMBOLS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible_char(c: str) -> str:
    """The character as a visible symbol: space, newline and tab become ␣, ↵ and ⇥."""
    if c in WHITESPACE_SYMBOLS:
        return WHITESPACE_SYMBOLS[c]
    return c if c.isprintable() else f"U+{ord(c):04X}"


def show_char(c: str) -> str:
    """A character quoted for a message, whitespace named."""
    names = {" ": "space", "\n": "newline", "\t": "tab", "\r": "carriage return"}
    return f"'{visible_char(c)}'" + (f" ({names[c]})" if c in names else "")


def show_vocab(vocab: str) -> str:
    return repr("".join(visible_char(c) for c in vocab))


class Vocab:
    def __init__(self, chars: str):
        if not chars:
            raise ValueError("the vocabulary is empty")
        if len(set(chars)) != len(chars):
            raise ValueError("the vocabulary repeats characters")
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` not in the vocabulary, in order of first use."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str, on_unknown: str = "error") -> list[int]:
        """Token ids of `text`; characters outside the vocabulary raise, or are dropped with on_unknown="drop"."""
        if on_unknown not in ("error", "drop"):
            raise ValueError(f"on_unknown must be 'error' or 'drop', not {on_unknown!r}")
        if on_unknown == "error" and (unknown := self.unknown(text)):
            raise UnknownCharactersError(unknown, self.chars)
        return [self.index[c] for c in text if c in self.index]

    def encode_tensor(self, text: str, on_unknown: str = "error") -> torch.Tensor:
        return torch.tensor(self.encode(text, on_unknown), dtype=torch.long)

    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)
