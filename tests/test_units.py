"""Finding units: the ranking against an exhaustive stepwise computation, a planted unit, bad input, ordering."""

import numpy as np
import pytest
import torch

from charrnn import UnknownCharactersError
from charrnn.decoding.unit import KINDS
from charrnn.analysis.activations import Activations, TextError, one_thread, read
from charrnn.analysis.signals import SignalError
from charrnn.analysis.units import find_units, order_units, timescales, unit_labels

from conftest import make_tiny
from stepwise import reference_start, stepwise_values

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n")


def line_positions(text):
    return np.array([i - (text.rfind("\n", 0, i) + 1) for i in range(len(text))], dtype=float)


def exhaustive(values, signal):
    """r of every unit (values [kinds, layers, T, H]) with the signal, by numpy.corrcoef; NaN for constant series."""
    kinds, layers, _, hidden = values.shape
    r = np.full((kinds, layers, hidden), np.nan)
    for k in range(kinds):
        for layer in range(layers):
            for u in range(hidden):
                series = values[k, layer, :, u].numpy()
                if series.max() != series.min():
                    r[k, layer, u] = np.corrcoef(series, signal)[0, 1]
    return r


@pytest.mark.parametrize("pattern,signal", [
    ("line position", line_positions(TEXT)),
    ("pea|olv", np.array([1.0 if TEXT[i:i + 3] in ("pea", "olv") or TEXT[i - 1:i + 2] in ("pea", "olv")
                          or TEXT[i - 2:i + 1] in ("pea", "olv") else 0.0 for i in range(len(TEXT))])),
])
def test_ranking_equals_an_exhaustive_stepwise_computation(pattern, signal):
    model = make_tiny(hidden_size=16, num_layers=3)
    expected = exhaustive(stepwise_values(model, TEXT), signal)
    result = find_units(model, TEXT, pattern, top=3 * 3 * 16)
    rows = result["units"]
    assert result["undefined"] == int(np.isnan(expected).sum())
    assert len(rows) == 3 * 3 * 16 - result["undefined"]
    for row in rows:
        assert row["r"] == pytest.approx(expected[KINDS.index(row["kind"]), row["layer"] - 1, row["unit"]], abs=1e-5)
    got = [abs(row["r"]) for row in rows]
    assert got == sorted(got, reverse=True)
    best = np.unravel_index(np.nanargmax(np.abs(expected)), expected.shape)
    assert (KINDS.index(rows[0]["kind"]), rows[0]["layer"] - 1, rows[0]["unit"]) == best


def planted_vowel_model():
    """A tiny model whose layer-1 unit 5 is overwritten at every step (z = 0) by tanh(+-6): +1 after a vowel,
    -1 after anything else."""
    model = make_tiny(hidden_size=16, num_layers=2)
    gru, hidden = model.gru, model.hidden_size
    with torch.no_grad():
        model.embedding.weight[:, 0] = torch.tensor([1.0 if c in "aeiouAEIOU" else -1.0 for c in model.vocab])
        for w in (gru.weight_ih_l0, gru.weight_hh_l0):
            w[hidden + 5] = 0  # update gate row
            w[2 * hidden + 5] = 0  # candidate row
        gru.bias_ih_l0[hidden + 5], gru.bias_hh_l0[hidden + 5] = -30.0, 0.0
        gru.weight_ih_l0[2 * hidden + 5, 0] = 6.0
        gru.bias_ih_l0[2 * hidden + 5] = gru.bias_hh_l0[2 * hidden + 5] = 0.0
    return model


@pytest.mark.parametrize("pattern", ["vowel", "[aeiouAEIOU]"])
def test_finder_finds_a_planted_unit(pattern):
    model = planted_vowel_model()
    rows = find_units(model, TEXT, pattern)["units"]
    assert len(rows) == 20
    assert rows[0]["layer"] == 1 and rows[0]["kind"] == "hidden" and rows[0]["unit"] == 5
    assert rows[0]["r"] > 0.9999
    assert abs(rows[1]["r"]) < 0.999


def test_shipped_model_has_a_line_position_unit(shipped):
    text, expected = reference_start(shipped)
    result = find_units(shipped, text, "line position")
    top = result["units"][0]
    series = expected[KINDS.index(top["kind"]), top["layer"] - 1, :, top["unit"]].numpy()
    assert top["r"] == pytest.approx(np.corrcoef(series, line_positions(text))[0, 1], abs=1e-5)
    assert abs(top["r"]) > 0.85
    assert result["chars"] == len(text) and result["signal"] == "line position"


def test_activations_given_are_used_instead_of_a_pass():
    model = make_tiny()
    with one_thread():
        trace = model.trace(TEXT)
    given = find_units(model, TEXT, "vowel", values=Activations.of_trace(trace))["units"]
    read_here = find_units(model, TEXT, "vowel")["units"]
    assert [(r["layer"], r["kind"], r["unit"]) for r in given] == [(r["layer"], r["kind"], r["unit"]) for r in read_here]
    assert [r["r"] for r in given] == pytest.approx([r["r"] for r in read_here], abs=1e-5)
    with pytest.raises(ValueError, match="cover 5 characters"):
        find_units(model, TEXT, "vowel", values=read(model, TEXT[:5]))


@pytest.mark.parametrize("text,pattern,error,message", [
    ("", "vowel", TextError, "empty"),
    ("a" * 10_001, "vowel", TextError, "at most 10,000"),
    ("Señor", "vowel", UnknownCharactersError, "outside the model's vocabulary"),
    (TEXT, "(", SignalError, "not a valid regular expression"),
    (TEXT, "xyzzy", SignalError, "matches nothing"),
    (TEXT, "(?s).", SignalError, "matches every character"),
    ("aaaa", "vowel", SignalError, "'vowel' .* is 1 on every character"),
])
def test_bad_input_is_refused_with_a_message(text, pattern, error, message):
    with pytest.raises(error, match=message):
        find_units(make_tiny(), text, pattern)
    assert issubclass(error, ValueError)


def test_order_groups_units_by_the_signal_they_follow():
    model = planted_vowel_model()
    values = read(model, TEXT).hidden[0]  # layer 1
    order = order_units(TEXT, values, min_r=0.3)
    assert sorted(order["units"]) == list(range(16))
    assert order["signal"][order["units"].index(5)] == "vowel +1.00"
    vowels = np.array([c in "aeiouAEIOU" for c in TEXT], dtype=float)
    for u, note in zip(order["units"], order["signal"]):
        if note.startswith("vowel"):
            assert float(note.split()[-1]) == pytest.approx(np.corrcoef(values[:, u].double(), vowels)[0, 1], abs=0.006)
            assert abs(float(note.split()[-1])) >= 0.3
    grouped = [n for n in order["signal"] if n]
    assert order["signal"][: len(grouped)] == grouped  # grouped units first, then the others


def test_order_puts_constant_units_last():
    values = torch.randn(50, 4, dtype=torch.float64).float()
    values[:, 1] = 0.25
    order = order_units("ab" * 25, values)
    assert order["units"][-1] == 1 and sorted(order["units"]) == [0, 1, 2, 3]


def test_timescales_and_labels():
    assert timescales(np.array([0.0, 0.5, 0.9])) == pytest.approx([1.0, 2.0, 10.0])
    tau = np.array([1.25, 12.4, 3000.0])
    assert unit_labels(3, "hidden", [2, 0, 1], tau) == ["L3 hidden 2 (τ 3,000)", "L3 hidden 0 (τ 1.2)",
                                                         "L3 hidden 1 (τ 12)"]
    assert unit_labels(1, "update", [7]) == ["L1 update 7"]
