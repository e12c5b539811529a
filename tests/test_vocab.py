import pytest
import torch

from charrnn import UnknownCharactersError, Vocab

from conftest import SHAKESPEARE_VOCAB


def test_vocabulary_is_the_sorted_distinct_characters_of_the_text():
    vocab = Vocab.from_text("banana bread\n")
    assert vocab.chars == "\n abdenr"
    assert len(vocab) == 8


def test_encode_decode_round_trip():
    vocab = Vocab(SHAKESPEARE_VOCAB)
    text = "ROMEO:\nBut soft, what light?"
    ids = vocab.encode(text)
    assert ids[0] == SHAKESPEARE_VOCAB.index("R")
    assert vocab.decode(ids) == text
    assert vocab.decode(torch.tensor(ids)) == text


def test_unknown_characters_are_named_once_each_in_order():
    vocab = Vocab(SHAKESPEARE_VOCAB)
    with pytest.raises(UnknownCharactersError) as info:
        vocab.encode("Café 42 é")
    assert info.value.unknown == ["é", "4", "2"]
    message = str(info.value)
    assert "'é'" in message and "'4'" in message and "65 characters" in message


def test_unknown_characters_can_be_dropped():
    vocab = Vocab(SHAKESPEARE_VOCAB)
    assert vocab.decode(vocab.encode("Café 42", on_unknown="drop")) == "Caf "


def test_invalid_vocabularies_and_modes_are_refused():
    with pytest.raises(ValueError, match="empty"):
        Vocab("")
    with pytest.raises(ValueError, match="repeats"):
        Vocab("aba")
    with pytest.raises(ValueError, match="on_unknown"):
        Vocab("ab").encode("a", on_unknown="ignore")
