"""Built-in signals on texts whose values are written out by hand; regular expressions and their failures."""

import numpy as np
import pytest

from charrnn.analysis.signals import BUILTIN, SignalError, regex_spans, signal, varying

TEXT = "KENT:\nNo, (my) lord.\n\nLEAR:\nSay \"no\".\n"


def values(name, text=TEXT):
    return signal(text, name)[1].astype(int).tolist()


def test_line_position_counts_characters_before_each_on_its_line():
    assert values("line position", "ab\ncd\n\ne") == [0, 1, 2, 0, 1, 2, 0, 0]


def test_word_position_counts_letters_read_so_far():
    assert values("word position", "No, my lord.") == [1, 2, 0, 0, 1, 2, 0, 1, 2, 3, 4, 0]


def test_character_classes():
    assert values("vowel", "Say no") == [0, 1, 0, 0, 0, 1]
    assert values("uppercase", "Say NO") == [1, 0, 0, 0, 1, 1]
    assert values("after newline", "a\nb\n\nc") == [0, 0, 1, 0, 1, 1]


def test_speaker_lines_and_speech_lines():
    # "KENT:", then its newline, "No, (my) lord.\n" and the blank line; "LEAR:", then 'Say "no".\n' and its newline
    assert values("speaker name line") == [1] * 5 + [0] * 17 + [1] * 5 + [0] * 11
    assert values("speech line") == [0] * 6 + [1] * 15 + [2] + [0] * 6 + [1] * 10


def test_inside_quotes_and_brackets_count_from_the_opening_character():
    quotes = values("inside quotes")
    assert [TEXT[i] for i, v in enumerate(quotes) if v] == list('"no')
    brackets = values("inside brackets")
    assert [TEXT[i] for i, v in enumerate(brackets) if v] == list("(my")
    assert values("inside brackets", "a(b[c]d)e)f") == [0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]


def test_regex_signal_is_one_inside_matches():
    name, marks = signal(TEXT, r"^[A-Z]+:$")
    assert name == "/^[A-Z]+:$/"
    assert marks.tolist() == values("speaker name line")
    assert regex_spans("no No nO", r"(?i)\bno\b") == [(0, 2), (3, 5), (6, 8)]
    assert regex_spans("abc", r"x*") == []  # empty matches mark nothing


def test_signals_that_cannot_correlate_are_refused():
    with pytest.raises(SignalError, match="not a valid regular expression"):
        signal(TEXT, "(unclosed")
    with pytest.raises(SignalError, match="matches nothing"):
        signal(TEXT, "zebra")
    with pytest.raises(SignalError, match="matches every character"):
        signal(TEXT, r"[\s\S]")
    with pytest.raises(SignalError, match="'inside quotes' .* is 0 on every character"):
        signal("no quotes here", "inside quotes")
    with pytest.raises(SignalError, match="empty"):
        signal(TEXT, "")
    with pytest.raises(SignalError, match="at most 500"):
        signal(TEXT, "a" * 501)


def test_runaway_regex_is_stopped():
    with pytest.raises(SignalError, match="took more than 0.5 s"):
        signal("a" * 40 + "!", r"(a+)+$", timeout=0.5)


def test_varying_lists_the_builtins_that_change_over_the_text():
    found = varying(TEXT)
    assert "inside quotes" in found and "line position" in found
    assert set(varying("abc abc")) == {"line position", "word position", "vowel"}
    for name, v in found.items():
        assert np.array_equal(v, BUILTIN[name].values(TEXT))
