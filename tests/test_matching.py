"""Select and match (LSTMVis) against a brute-force computation on stepwise hidden states."""

import numpy as np
import pytest

from charrnn.analysis.atlas import MARK_CLOSE, MARK_OPEN, REFERENCE_FILE
from charrnn.analysis.matching import SelectionError, build_match_index, match, match_index, select_and_match, select_units

from conftest import SHIPPED, make_tiny
from stepwise import stepwise_values

TEXT = (SHIPPED / REFERENCE_FILE).read_text(encoding="utf-8")[:1200]
PAD = 2


@pytest.fixture(scope="module")
def model():
    return make_tiny(seed=2, hidden_size=16, num_layers=2)


@pytest.fixture(scope="module")
def hidden(model):
    return stepwise_values(model, TEXT)[0].numpy()  # [layers, T, H]


def brute_selection(hidden, start, end, threshold, pad):
    """Every (layer, unit) on over the span and off around it, with its margin, best first."""
    rows = []
    for layer in range(hidden.shape[0]):
        for u in range(hidden.shape[2]):
            series = hidden[layer, :, u]
            inside = series[start:end].min()
            around = np.concatenate([series[max(0, start - pad):start], series[end:end + pad]])
            if inside > threshold and around.max() <= threshold:
                rows.append((min(inside - threshold, threshold - around.max()), layer + 1, u))
    return sorted(rows, key=lambda row: (-row[0], row[1], row[2]))


def pick_selection(hidden):
    """A span and a threshold that some units follow, with no value around the span within 1e-4 of the threshold
    (the pass is within 1e-5 of the stepwise values, so both agree about on and off there)."""
    for threshold in (0.3, 0.2, 0.1):
        for start in range(100, 1000, 7):
            for length in (3, 5, 8):
                near = hidden[:, max(0, start - PAD) : start + length + PAD]
                if (len(brute_selection(hidden, start, start + length, threshold, PAD)) >= 2
                        and not (np.abs(near - threshold) < 1e-4).any()):
                    return start, start + length, threshold
    raise AssertionError("no usable selection in this model")


def test_selection_equals_brute_force(model, hidden):
    start, end, threshold = pick_selection(hidden)
    selection = select_units(model, TEXT, start, end, threshold=threshold, pad=PAD, top=100)
    expected = brute_selection(hidden, start, end, threshold, PAD)
    assert selection["selected"] == len(expected)
    assert [(r["layer"], r["unit"]) for r in selection["units"]] == [(layer, u) for _, layer, u in expected]
    for row, (score, layer, u) in zip(selection["units"], expected):
        assert row["score"] == pytest.approx(score, abs=1e-5)
        assert row["min_inside"] == pytest.approx(hidden[layer - 1, start:end, u].min(), abs=1e-5)
    assert selection["selected_text"] == TEXT[start:end]


def test_matches_equal_brute_force(model, hidden):
    start, end, threshold = pick_selection(hidden)
    selection = select_units(model, TEXT, start, end, threshold=threshold, pad=PAD)
    index = build_match_index(model, TEXT)
    assert index.nbytes == 2 * len(TEXT) * 16
    # The index holds round(127 h) of the states (within one step of the stepwise values)...
    assert np.abs(index.codes.numpy().astype(float) - np.round(127 * hidden)).max() <= 1
    # ... and the matches are scored on those codes: "on" is code > 127 threshold.
    result = match(index, selection, top=5)
    units = [(r["layer"] - 1, r["unit"]) for r in selection["units"]]
    codes = index.codes.numpy().astype(float)
    on = np.stack([codes[layer, :, u] > 127 * threshold for layer, u in units])  # [m, T]
    length, steps = end - start, len(TEXT)
    scores = []
    for a in range(steps - length + 1):
        pattern = {t: True for t in range(a, a + length)}
        pattern.update({t: False for t in list(range(a - PAD, a)) + list(range(a + length, a + length + PAD))
                        if 0 <= t < steps})
        agree = sum(int(on[i, t] == want) for i in range(len(units)) for t, want in pattern.items())
        scores.append(agree / (len(units) * len(pattern)))
    picked = []
    for a in sorted(range(len(scores)), key=lambda a: (-scores[a], a)):
        if all(abs(a - b) >= length for b in picked):
            picked.append(a)
        if len(picked) == 5:
            break
    assert [m["offset"] for m in result["matches"]] == picked
    assert [m["score"] for m in result["matches"]] == pytest.approx([scores[a] for a in picked], abs=1e-12)
    best = result["matches"][0]
    assert best["offset"] == start and best["score"] == 1.0  # the selection itself, found again
    assert best["context"] == best["before"] + MARK_OPEN + TEXT[start:end] + MARK_CLOSE + best["after"]
    assert len(best["on_fraction"]) == len(best["before"] + best["match"] + best["after"])


def test_select_and_match_uses_one_index_per_model(model, hidden):
    start, end, threshold = pick_selection(hidden)
    first = match_index(model, TEXT)
    result = select_and_match(model, TEXT, start, end, TEXT, threshold=threshold, pad=PAD)
    assert match_index(model, TEXT) is first and result["matches"][0]["offset"] == start
    assert result["selection"]["units"] and result["searched_chars"] == len(TEXT)


def test_bad_selections_are_refused(model):
    with pytest.raises(SelectionError, match="not a non-empty span"):
        select_units(model, TEXT, 10, 10)
    with pytest.raises(SelectionError, match="not a non-empty span"):
        select_units(model, "short", 2, 9)
    with pytest.raises(SelectionError, match="select at most 400"):
        select_units(model, TEXT, 0, 401)
    with pytest.raises(SelectionError, match="threshold must be between -1 and 1"):
        select_units(model, TEXT, 0, 4, threshold=1.5)
    nothing = select_units(model, TEXT, 0, 4, threshold=0.999)
    assert nothing["units"] == [] and nothing["selected"] == 0
    with pytest.raises(SelectionError, match="no hidden unit is on"):
        match(build_match_index(model, TEXT[:100]), nothing)
