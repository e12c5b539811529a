"""Memory gain: the GRU's surprisals against a float64 step-by-step evaluation of the GRU equations, the bigram's
against its table, the summary, the HTML view, and refusals."""

import html
import re

import pytest
import torch

from charrnn import UnknownCharactersError
from charrnn.models.bigram import BigramLanguageModel
from charrnn.training.data import read_text, split
from charrnn.training.evaluate import loss_over_windows
from charrnn.analysis.memory_gain import MAX_CHARS, MemoryGainError, memory_gain, summarize
from charrnn.figures.units import memory_gain_html
from charrnn.vocab import visible_char

from conftest import CORPUS, ROOT, SHAKESPEARE_VOCAB, make_tiny
from stepwise import step_equations

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\nFirst Citizen:\nYou"


@pytest.fixture(scope="module")
def bigram():
    return BigramLanguageModel.from_pretrained(ROOT / "weights" / "bigram", device="cpu")


def gru_surprisals_float64(model, text: str) -> list[float]:
    """-log p(text[i] | text[:i]) from the GRU equations, one step at a time from the zero state, in float64."""
    ids = [model.vocab.index(c) for c in text]
    _, _, logits = step_equations(model, ids[:-1])
    return (logits.logsumexp(-1) - logits.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]).tolist()


def bigram_surprisals_direct(model, text: str) -> list[float]:
    table = model.token_embedding_table.weight.detach().double()
    ids = [model.vocab.index(c) for c in text]
    return [-(table[a, b] - table[a].logsumexp(0)).item() for a, b in zip(ids, ids[1:])]


@pytest.mark.parametrize("which", ["shipped", "tiny"])
def test_surprisals_equal_the_gru_equations_and_the_bigram_table(which, shipped, bigram):
    gru = shipped if which == "shipped" else make_tiny(hidden_size=24, num_layers=3)
    rows = memory_gain(gru, bigram, TEXT)
    assert [r["char"] for r in rows] == list(TEXT[1:])
    gru_direct = gru_surprisals_float64(gru, TEXT)
    bigram_direct = bigram_surprisals_direct(bigram, TEXT)
    assert max(abs(r["gru"] - d) for r, d in zip(rows, gru_direct)) <= 1e-4
    assert max(abs(r["bigram"] - d) for r, d in zip(rows, bigram_direct)) <= 1e-9


def test_summary_and_the_validation_protocol_agree(shipped, bigram):
    _, val_text = split(read_text(CORPUS))
    text = val_text[:1025]
    rows = memory_gain(shipped, bigram, text)
    stats = summarize(rows)
    assert stats["chars"] == 1024
    assert stats["gain"] == pytest.approx(sum(r["bigram"] - r["gru"] for r in rows) / 1024, abs=1e-12)
    assert stats["helped"] == sum(r["gru"] < r["bigram"] for r in rows) / 1024
    # A bigram's loss does not depend on where windows start, so its column is the evaluated loss of the text;
    # the GRU's first 256 predictions are the evaluated loss of the first 257 characters (one window).
    ids = shipped.tokenizer.encode_tensor(text)
    assert stats["bigram"] == pytest.approx(loss_over_windows(bigram, ids), abs=1e-5)
    assert sum(r["gru"] for r in rows[:256]) / 256 == pytest.approx(loss_over_windows(shipped, ids[:257]), abs=1e-5)
    assert stats["gain"] > 0  # the GRU's memory helps on Shakespeare


def test_html_colours_by_the_gain_and_titles_both_surprisals(shipped, bigram):
    text = "KING:\nO, 'tis true & sure, my lord."
    rows = memory_gain(shipped, bigram, text)
    page = memory_gain_html(text, rows)
    spans = re.findall(r'<span style="background:([^";]+)" title="([^"]*)">(.*?)</span>', page)
    assert len(spans) == len(text)
    assert [shown.replace("<br>", "") for _, _, shown in spans] == [html.escape(visible_char(c)) for c in text]
    assert "&amp;" in page and "&#x27;" in page and "'tis" not in page
    assert spans[0][0] == "transparent"
    for (color, title, _), row in zip(spans[1:], rows):
        gain = row["bigram"] - row["gru"]
        assert color.startswith("rgba(76,120,168," if gain >= 0 else "rgba(228,87,86,")
        assert float(color.rsplit(",", 1)[1][:-1]) == pytest.approx(min(1.0, abs(gain) / 3.0), abs=0.006)
        assert f"GRU {row['gru']:.2f} nats, bigram {row['bigram']:.2f} nats" in html.unescape(title)
    assert f"gain {summarize(rows)['gain']:.2f} nats/char" in page
    with pytest.raises(MemoryGainError, match="not those of this text"):
        memory_gain_html(text[:-1], rows)


def test_bad_input_is_refused_with_a_clear_message(shipped, bigram):
    with pytest.raises(MemoryGainError, match="at least two characters"):
        memory_gain(shipped, bigram, "")
    with pytest.raises(MemoryGainError, match="at least two characters"):
        memory_gain(shipped, bigram, "A")
    with pytest.raises(MemoryGainError, match=f"at most {MAX_CHARS:,} are compared"):
        memory_gain(shipped, bigram, "a" * (MAX_CHARS + 1))
    with pytest.raises(UnknownCharactersError, match="outside the model's vocabulary: 'ñ'"):
        memory_gain(shipped, bigram, "Señor")
    other = BigramLanguageModel(SHAKESPEARE_VOCAB[:-1]).eval()
    with pytest.raises(MemoryGainError, match=r"different vocabularies \(only the GRU has 'z'\)"):
        memory_gain(shipped, other, "Hello")
    reordered = BigramLanguageModel(SHAKESPEARE_VOCAB[::-1]).eval()
    with pytest.raises(MemoryGainError, match="same characters in another order, so other token ids"):
        memory_gain(shipped, reordered, "Hello")
    for error in (MemoryGainError, UnknownCharactersError):
        assert issubclass(error, ValueError)  # the page turns these into a gr.Error
    training = make_tiny().train()
    with pytest.raises(RuntimeError, match="training mode"):
        memory_gain(training, bigram, "Hello")
