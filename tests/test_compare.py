"""Two models on one text (charrnn.analysis.compare and the page's /compare_models): the shipped GRU's and LSTM's
surprisals against the cell equations stepped in float64, the summary and disagreements against the rows, the unit
matching's correlations against correlations of float64 values, and refusals."""

import numpy as np
import pytest
import torch

from charrnn.analysis.compare import (CompareError, compare_text, disagreements, match_units, summarize, unit_of)
from charrnn.decoding.unit import Unit
from charrnn.figures.units import comparison_html
from charrnn.models import load_model
from charrnn.page.inputs import InputError
from charrnn.page.units_service import UnitService
from charrnn.serving.registry import ModelRegistry
from charrnn.analysis import signals

from conftest import ROOT
from stepwise import lstm_step_equations, step_equations

GRU, LSTM = ROOT / "weights" / "gru-2x256", ROOT / "weights" / "lstm-2x256"
TEXT = (ROOT / "weights" / "lstm-2x256" / "reference.txt").read_text(encoding="utf-8")[2000:2600]


@pytest.fixture(scope="module")
def models():
    return load_model(GRU, device="cpu"), load_model(LSTM, device="cpu")


@pytest.fixture(scope="module")
def float64(models):
    """Each model's values and surprisals over TEXT, stepped in float64 from the equations."""
    gru, lstm = models
    ids = [gru.vocab.index(c) for c in TEXT]
    found = {}
    for model, equations in ((gru, step_equations), (lstm, lstm_step_equations)):
        _, values, logits = equations(model, ids)
        surprisal = -torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        found[model.CELL] = (values, surprisal.numpy())
    return found


def test_surprisals_equal_the_equations_in_float64(models, float64):
    rows = compare_text(*models, TEXT)
    assert [r["char"] for r in rows] == list(TEXT[1:])
    assert np.abs(np.array([r["a"] for r in rows]) - float64["gru"][1]).max() < 1e-4
    assert np.abs(np.array([r["b"] for r in rows]) - float64["lstm"][1]).max() < 1e-4
    s = summarize(rows)
    assert s["a"] == pytest.approx(float64["gru"][1].mean(), abs=1e-5)
    assert s["difference"] == pytest.approx(float64["lstm"][1].mean() - float64["gru"][1].mean(), abs=1e-5)
    assert s["a_better"] + s["b_better"] <= 1 and s["a_better"] == np.mean(float64["gru"][1] < float64["lstm"][1])
    worst = disagreements(TEXT, rows, top=5)
    gaps = np.abs(float64["lstm"][1] - float64["gru"][1])
    assert [d["offset"] for d in worst] == list(np.argsort(-gaps, kind="stable")[:5] + 1)
    assert all(TEXT[d["offset"]] == d["char"] and TEXT[: d["offset"]].endswith(d["context"]) for d in worst)


def test_unit_matching_correlations_are_those_of_the_float64_values(models, float64):
    gru, lstm = models
    matched = match_units(lstm, gru, TEXT)
    varying = signals.varying(TEXT)
    assert [m["signal"] for m in matched] == list(varying)
    values = {"gru": float64["gru"][0], "lstm": float64["lstm"][0]}

    def series(model, name):
        unit = Unit.parse(name)
        return values[model.CELL][model.kinds.index(unit.kind), unit.layer - 1, :, unit.index].numpy()

    for m in matched:
        signal = varying[m["signal"]]
        a = series(lstm, m["a"]["unit"])
        assert np.corrcoef(a, signal)[0, 1] == pytest.approx(m["a"]["r"], abs=1e-4)
        assert np.corrcoef(series(gru, m["b"]["unit"]), signal)[0, 1] == pytest.approx(m["b"]["r"], abs=1e-4)
        tracking = series(gru, m["b_tracking_a"]["unit"])
        assert np.corrcoef(tracking, a)[0, 1] == pytest.approx(m["b_tracking_a"]["r"], abs=1e-4)
    # the best: no unit of the LSTM follows line position more closely than the one named (direct computation)
    line = varying["line position"]
    flat = values["lstm"].permute(2, 0, 1, 3).reshape(len(TEXT), -1).numpy()
    r = np.array([np.corrcoef(flat[:, j], line)[0, 1] if flat[:, j].std() > 0 else 0 for j in range(flat.shape[1])])
    first = matched[list(varying).index("line position")]
    assert abs(first["a"]["r"]) == pytest.approx(np.abs(r).max(), abs=1e-4)
    assert str(unit_of(lstm, int(np.argmax(np.abs(r))))) == first["a"]["unit"]  # no near tie here


def test_refusals_say_what_is_wrong(models, tmp_path):
    gru, lstm = models
    with pytest.raises(CompareError, match="at least two characters"):
        compare_text(gru, lstm, "A")
    with pytest.raises(CompareError, match="at most 100 are compared"):
        compare_text(gru, lstm, "A" * 101, max_chars=100)
    other = load_model(ROOT / "weights" / "tiny-shakespeare", device="cpu")
    assert len(compare_text(other, lstm, "AB")) == 1


def test_the_page_service_compares_two_shipped_models_and_draws_them(float64):
    service = UnitService(ModelRegistry(device="cpu"))
    result = service.compare_models(TEXT, "weights/gru-2x256", "weights/lstm-2x256")
    assert result["model_a"] == "weights/gru-2x256" and result["model_b"] == "weights/lstm-2x256"
    assert np.abs(np.array([r["a"] for r in result["rows"]]) - float64["gru"][1]).max() < 1e-4
    assert np.abs(np.array([r["b"] for r in result["rows"]]) - float64["lstm"][1]).max() < 1e-4
    assert result["units"] and "reference text" in result["units_over"]
    assert service.compare_models(TEXT[:50], "weights/gru-2x256", "weights/lstm-2x256")["units"] == result["units"]
    page = comparison_html(result)
    assert page.count("<tr>") == len(result["disagreements"]) + len(result["units"]) + 2
    assert "line position" in page and result["units"][0]["a"]["unit"] in page
    with pytest.raises(InputError, match="not a Hub repo id"):
        service.compare_models(TEXT, "/etc", "weights/lstm-2x256")
    with pytest.raises(InputError, match="at most 5,000"):
        service.compare_models("A" * 5001, "weights/gru-2x256", "weights/lstm-2x256")
    bigram = service.compare_models(TEXT[:100], "weights/gru-2x256", "weights/bigram")
    assert bigram["units"] == [] and "is a bigram" in bigram["units_over"]
