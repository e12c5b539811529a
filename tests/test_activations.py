"""One pass over a text, in pieces that carry the state, against the stepwise float64 GRU and model.trace."""

import pytest
import torch

from charrnn import UnknownCharactersError
from charrnn.decoding.unit import KINDS
from charrnn.analysis.activations import Activations, TextError, chunks, one_thread, read

from conftest import make_tiny
from stepwise import reference_start, stepwise_values

TOL = 1e-5


def test_pass_in_pieces_equals_the_stepwise_equations(shipped):
    text, expected = reference_start(shipped)
    values = read(shipped, text, chunk_size=256)  # six pieces, the state carried across each boundary
    assert values.stacked().shape == (3, 3, len(text), 512)
    assert (values.stacked().double() - expected).abs().max() <= TOL


def test_pass_equals_the_trace_of_the_same_text(shipped):
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 2
    with one_thread():  # the decode loop's two-thread products crawl when another process holds a core
        trace = shipped.trace(text)
    values = read(shipped, text, chunk_size=50)
    assert (values.hidden - trace.hidden).abs().max() <= TOL
    assert (values.reset - trace.reset_gate).abs().max() <= TOL
    assert (values.update - trace.update_gate).abs().max() <= TOL
    assert torch.equal(values.tokens, trace.tokens)
    from_trace = Activations.of_trace(trace)
    assert torch.equal(from_trace.stacked(), torch.stack([trace.hidden, trace.reset_gate, trace.update_gate]))


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_piece_size_does_not_change_the_values(chunk_size):
    model = make_tiny(hidden_size=12, num_layers=3)
    text = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
    expected = stepwise_values(model, text)
    pieces = list(chunks(model, text, chunk_size=chunk_size))
    assert [p.start for p in pieces] == list(range(0, len(text), chunk_size))
    joined = torch.cat([p.stacked() for p in pieces], dim=2).double()
    assert (joined - expected).abs().max() <= TOL
    # columns() is stacked() flattened in (kind, layer, unit) order
    piece = pieces[0]
    assert torch.equal(piece.columns(), piece.stacked().permute(2, 0, 1, 3).reshape(len(piece), -1))


def test_hidden_only_pass_has_no_gates():
    model = make_tiny()
    values = read(model, "abc\ndef", gates=False)
    assert values.reset is None and values.update is None
    with pytest.raises(ValueError, match="kind must be one of hidden here, not .reset."):
        values.of("reset")


def test_bad_texts_are_refused_with_a_message():
    model = make_tiny()
    with pytest.raises(TextError, match="empty"):
        read(model, "")
    with pytest.raises(TextError, match="at most 10 can be analysed"):
        read(model, "a" * 11, max_chars=10)
    with pytest.raises(UnknownCharactersError, match="'ñ'"):
        read(model, "Señor")
    with pytest.raises(ValueError, match="kind must be one of"):
        read(model, "abc").of("cell")
    assert KINDS == ("hidden", "reset", "update")
