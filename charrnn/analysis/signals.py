"""Signals over a text, one number per character, for finding the units that follow them.

A signal's value at offset i describes the text once text[i] has been read, like a unit's value at offset i.
A pattern is either the name of a built-in signal or a Python regular expression (compiled with re.MULTILINE),
whose signal is 1 on every character inside a match and 0 elsewhere. A person's regular expression runs in a
child process with a time limit: Python's re cannot be interrupted, and a pattern such as (a+)+$ backtracks for
hours on a few dozen characters.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

REGEX_TIMEOUT_S = 3.0
MAX_PATTERN_CHARS = 500
SPEAKER_NAME_LINE = r"^[A-Z][A-Za-z ]*:$"  # "ROMEO:", "First Citizen:" (a line of its own in the plays)
VOWELS = frozenset("aeiouAEIOU")
OPENING_BRACKETS, CLOSING_BRACKETS = "([{", ")]}"


class SignalError(ValueError):
    """A pattern gives no usable signal over the text (bad regular expression, or constant); the message says why."""


def line_position(text: str) -> np.ndarray:
    """How many characters precede each character on its line: 0 for a line's first character; a newline is the
    last character of its line."""
    out, position = np.empty(len(text)), 0
    for i, c in enumerate(text):
        out[i] = position
        position = 0 if c == "\n" else position + 1
    return out


def word_position(text: str) -> np.ndarray:
    """How many letters of the current word have been read, this one included: 1 on a word's first letter, 2 on
    its second, ...; 0 on any character that is not a letter (a word is a run of letters)."""
    out, letters = np.empty(len(text)), 0
    for i, c in enumerate(text):
        letters = letters + 1 if c.isalpha() else 0
        out[i] = letters
    return out


def vowel(text: str) -> np.ndarray:
    """1 on a, e, i, o, u (either case)."""
    return np.array([c in VOWELS for c in text], dtype=float)


def uppercase(text: str) -> np.ndarray:
    """1 on capital letters."""
    return np.array([c.isupper() for c in text], dtype=float)


def after_newline(text: str) -> np.ndarray:
    """1 on the first character of every line after the first (the character read right after a newline)."""
    return np.array([i > 0 and text[i - 1] == "\n" for i in range(len(text))], dtype=float)


def inside_quotes(text: str) -> np.ndarray:
    """1 from an opening double quote up to, not including, its closing one: the straight quote " opens and
    closes in turn, “ opens and ” closes."""
    out, inside = np.empty(len(text)), False
    for i, c in enumerate(text):
        inside = (not inside) if c == '"' else True if c == "“" else False if c == "”" else inside
        out[i] = inside
    return out


def inside_brackets(text: str) -> np.ndarray:
    """1 while at least one bracket ( [ { is open once the character has been read (so 1 on the opening bracket,
    0 on the closing bracket that closes the last one)."""
    out, depth = np.empty(len(text)), 0
    for i, c in enumerate(text):
        depth = depth + 1 if c in OPENING_BRACKETS else max(0, depth - 1) if c in CLOSING_BRACKETS else depth
        out[i] = depth > 0
    return out


def speaker_name_line(text: str) -> np.ndarray:
    """1 on the characters of a line that names a speaker (^[A-Z][A-Za-z ]*:$, the newline after it excluded)."""
    return spans_signal(len(text), [m.span() for m in re.finditer(SPEAKER_NAME_LINE, text, re.MULTILINE)])


def speech_line(text: str) -> np.ndarray:
    """Which line of the current speech a character is on: 0 on the speaker's name line, 1 on the line after it,
    and so on until the next name line (0 before the first name); a newline belongs to its line."""
    out, start, line = np.zeros(len(text)), 0, None  # None until a speaker has been named
    names = re.compile(SPEAKER_NAME_LINE)
    for piece in text.split("\n"):
        line = 0 if names.fullmatch(piece) else None if line is None else line + 1
        out[start : start + len(piece) + 1] = line or 0
        start += len(piece) + 1
    return out


@dataclass(frozen=True)
class Signal:
    name: str
    description: str
    values: Callable[[str], np.ndarray]


BUILTIN = {s.name: s for s in (
    Signal("line position", "characters before this one on its line (a newline ends its line)", line_position),
    Signal("word position", "letters of the current word read so far (0 outside words)", word_position),
    Signal("vowel", "1 on a vowel (a, e, i, o, u)", vowel),
    Signal("uppercase", "1 on a capital letter", uppercase),
    Signal("after newline", "1 on the first character of a line", after_newline),
    Signal("speaker name line", f"1 on a line that names a speaker ({SPEAKER_NAME_LINE})", speaker_name_line),
    Signal("speech line", "which line of the current speech (0 on the speaker's name line)", speech_line),
    Signal("inside quotes", 'inside double quotes ("...")', inside_quotes),
    Signal("inside brackets", "inside brackets: ( ), [ ], { }", inside_brackets),
)}


def spans_signal(length: int, spans) -> np.ndarray:
    out = np.zeros(length)
    for start, end in spans:
        out[start:end] = 1.0
    return out


MATCHER = """
import json, re, sys
job = json.load(sys.stdin)
spans = [m.span() for m in re.finditer(job["pattern"], job["text"], re.MULTILINE) if m.end() > m.start()]
json.dump(spans, sys.stdout)
"""


def check_pattern(pattern) -> None:
    """A regular expression a person gave: not empty, not too long, valid; SignalError saying what is wrong."""
    if not isinstance(pattern, str) or not pattern:
        raise SignalError("the pattern is empty: give a built-in signal's name or a regular expression")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise SignalError(f"the regular expression has {len(pattern)} characters; at most {MAX_PATTERN_CHARS} allowed")
    try:
        re.compile(pattern, re.MULTILINE)
    except re.error as e:
        raise SignalError(f"{pattern!r} is not a valid regular expression: {e}; or name a built-in signal: "
                          f"{', '.join(BUILTIN)}") from None


def regex_spans(text: str, pattern: str, timeout: float = REGEX_TIMEOUT_S) -> list[tuple[int, int]]:
    """The (start, end) of every non-empty match of `pattern` (re.MULTILINE) in `text`, found in a child process
    that is killed after `timeout` seconds."""
    check_pattern(pattern)
    try:
        # -I -S: an isolated interpreter without site-packages starts in tens of milliseconds.
        done = subprocess.run([sys.executable, "-I", "-S", "-c", MATCHER], input=json.dumps(
            {"pattern": pattern, "text": text}), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SignalError(f"the regular expression {pattern!r} took more than {timeout:g} s on this text "
                          "(nested repetition such as (a+)+ backtracks without end); simplify it") from None
    if done.returncode != 0:
        raise SignalError(f"the regular expression {pattern!r} could not be run: "
                          f"{' '.join(done.stderr.split()[-12:])}")
    return [tuple(span) for span in json.loads(done.stdout)]


def signal(text: str, pattern: str, *, timeout: float = REGEX_TIMEOUT_S) -> tuple[str, np.ndarray]:
    """(a name for the signal, its value at every character of `text`, float64). `pattern` is a built-in signal's
    name (see BUILTIN) or a regular expression. A signal that is the same on every character has no correlation
    with anything and is refused, as is an invalid or runaway regular expression."""
    if pattern in BUILTIN:
        name, values = pattern, BUILTIN[pattern].values(text)
    else:
        name, values = f"/{pattern}/", spans_signal(len(text), regex_spans(text, pattern, timeout))
    if len(values) and values.min() == values.max():
        if pattern in BUILTIN:
            raise SignalError(f"the signal {pattern!r} ({BUILTIN[pattern].description}) is {values[0]:g} on every "
                              "character of this text, so no unit can follow it: use a text where it varies")
        raise SignalError(f"the regular expression {pattern!r} matches "
                          f"{'every character' if values[0] else 'nothing'} of this text: the signal must be 1 on "
                          "some characters and 0 on others")
    return name, values


def varying(text: str) -> dict[str, np.ndarray]:
    """The built-in signals that are not constant over `text`, by name."""
    out = {}
    for name, s in BUILTIN.items():
        values = s.values(text)
        if len(values) and values.min() != values.max():
            out[name] = values
    return out
