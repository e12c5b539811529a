"""Why this character (charrnn.analysis.attribution, charrnn.analysis.dose), against direct computation: the
attribution's terms are the hand-computed products and sum to the logit difference; patching restores 1 where it
must, 0 with the corrupted run's own values, and one patched cell equals the run stepped in float64 from the GRU
equations; a dose-response of one value writes /intervene's texts; Spearman's rho as numpy computes it."""

import numpy as np
import pytest
import torch

from charrnn import DecodeSettings
from charrnn.analysis.attribution import AttributionError, attribute, patch, read_states, run_rows
from charrnn.analysis.dose import DoseError, dose_response, mean_line_length, regex_rates, spearman
from charrnn.analysis.whatif import intervene
from charrnn.decoding.interventions import Intervention

from conftest import make_tiny
from stepwise import step_equations

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\nF"
CLEAN, CORRUPTED = "JULIET:\nO Romeo, Romeo! wherefore art thou R", "JULIET:\nO Paris, Paris! wherefore art thou R"


@pytest.fixture(scope="module")
def tiny():
    return make_tiny(seed=4, hidden_size=24, num_layers=3)


def ids(model, text):
    return [model.vocab.index(c) for c in text]


@pytest.mark.parametrize("step", [0, 20, len(TEXT) - 2])
def test_the_last_layers_terms_are_the_products_and_sum_to_the_logit_difference(shipped, step):
    result = attribute(shipped, TEXT, step, top=None)
    _, values, logits = step_equations(shipped, ids(shipped, TEXT[: step + 1]))
    a, b = shipped.vocab.index(result["char_a"]), shipped.vocab.index(result["char_b"])
    assert result["char_a"] == TEXT[step + 1]  # the character the text has next, against the runner-up
    others = logits[step].clone()
    others[a] = -np.inf
    assert b == int(others.argmax())
    weights, bias = shipped.head.weight.detach().double(), shipped.head.bias.detach().double()
    products = values[0, -1, step] * (weights[a] - weights[b])
    by_unit = {row["unit"]: row["contribution"] for row in result["units"]}
    assert len(by_unit) == shipped.hidden_size and all(row["layer"] == 3 for row in result["units"])
    assert np.allclose([by_unit[u] for u in range(shipped.hidden_size)], products.numpy(), atol=1e-9)
    assert result["bias"] == pytest.approx(float(bias[a] - bias[b]), abs=1e-6)
    assert sum(by_unit.values()) + result["bias"] == pytest.approx(result["logit_diff"], abs=1e-6)
    assert result["logit_diff"] == pytest.approx(float(logits[step, a] - logits[step, b]), abs=1e-6)
    contributions = [abs(row["contribution"]) for row in result["units"]]
    assert contributions == sorted(contributions, reverse=True)
    # gradient x activation is exact for the last layer at the step: its sum is the difference less the bias
    last = result["coverage"][-1]
    assert last["sum"] == pytest.approx(result["logit_diff"] - result["bias"], abs=1e-6)


def test_gradient_times_activation_is_the_gradient_of_the_equations(tiny):
    """An earlier layer's term: its gradient checked by a finite difference of the float64 equations."""
    text = TEXT[:30]
    result = attribute(tiny, text, 29, "e", "a", top=5)
    entry = result["approximate"][0]  # the largest: an earlier layer at this step, or any layer before it
    _, values, _ = step_equations(tiny, ids(tiny, text))
    value = float(values[0, entry["layer"] - 1, entry["step"], entry["unit"]])
    eps = 1e-6

    def difference(delta):
        moved = Intervention(entry["layer"], "hidden", entry["unit"], value + delta, entry["step"])
        _, _, logits = forced_once(tiny, ids(tiny, text), moved)
        return float(logits[29, tiny.vocab.index("e")] - logits[29, tiny.vocab.index("a")])

    gradient = (difference(eps) - difference(-eps)) / (2 * eps)
    assert gradient * value == pytest.approx(entry["contribution"], rel=1e-4, abs=1e-8)


def forced_once(model, token_ids, intervention):
    """step_equations with the hidden unit set at its step only (not every step after)."""
    def hook(layer, step, h):
        if (layer + 1, step) == (intervention.layer, intervention.from_step):
            h[intervention.unit] = intervention.value
    return step_equations(model, token_ids, after_layer=hook)


def float64_patched(model, clean: str, corrupted: str, layer: int, step: int) -> torch.Tensor:
    """The corrupted text read by the GRU equations in float64, layer `layer` (from 0)'s state after step `step`
    replaced by the clean run's: the logits after the last character."""
    _, clean_values, _ = step_equations(model, ids(model, clean))

    def patch_in(k, t, h):
        if (k, t) == (layer, step):
            h.copy_(clean_values[0, k, t])
    return step_equations(model, ids(model, corrupted), after_layer=patch_in)[2][-1]


def test_patching_restores_one_at_the_end_zero_with_its_own_values_and_a_cell_as_the_equations(shipped):
    result = patch(shipped, CLEAN, CORRUPTED, "o", "y")
    grid = np.array(result["grid"])
    assert grid.shape == (3, len(CLEAN))
    assert grid[-1, -1] == pytest.approx(1.0, abs=1e-9)  # the last layer's state at the last step: all of it
    same = [t for t, (a, b) in enumerate(zip(CLEAN, CORRUPTED)) if t < CLEAN.index("Romeo")]
    assert np.abs(grid[:, same]).max() < 1e-9  # before the texts differ the states are the same: nothing restored
    token = lambda c: shipped.vocab.index(c)  # noqa: E731
    _, _, clean_logits = step_equations(shipped, ids(shipped, CLEAN))
    _, _, corrupted_logits = step_equations(shipped, ids(shipped, CORRUPTED))
    ld = lambda logits: float(logits[token("o")] - logits[token("y")])  # noqa: E731
    assert result["clean"] == pytest.approx(ld(clean_logits[-1]), abs=1e-4)
    assert result["corrupted"] == pytest.approx(ld(corrupted_logits[-1]), abs=1e-4)
    layer, step = 1, CLEAN.index("Romeo") + 4  # layer 2 at the end of the name
    expected = (ld(float64_patched(shipped, CLEAN, CORRUPTED, layer, step)) - ld(corrupted_logits[-1])) / (
        ld(clean_logits[-1]) - ld(corrupted_logits[-1]))
    assert grid[layer, step] == pytest.approx(expected, abs=1e-9)
    # Patched with the corrupted run's own states: nothing changes anywhere.
    corrupted_ids = shipped.tokenizer.encode_tensor(CORRUPTED)
    with torch.inference_mode():
        own = read_states(shipped, corrupted_ids)
        logits, _ = run_rows(shipped, corrupted_ids, 0, None, own, [(k, t, None) for k in range(3) for t in (0, 9, 40)])
    restored = (logits[:, token("o")] - logits[:, token("y")] - result["corrupted"]) / (
        result["clean"] - result["corrupted"])
    assert restored.abs().max() < 1e-9
    units = patch(shipped, CLEAN, CORRUPTED, "o", "y", layer=3, step=len(CLEAN) - 1)["units"]
    assert len(units) == 512 and sum(units) == pytest.approx(1.0, abs=0.5)  # each unit a part of the whole


def test_a_dose_of_one_value_writes_intervenes_texts_and_rho_is_spearmans(shipped):
    result = dose_response(shipped, "ROMEO:\n", 60, 3, "hidden", 99, [0.9], 3, from_step=7)
    for seed in range(3):
        pair = intervene(shipped, "ROMEO:\n", DecodeSettings(60, 0.8, 0, 0.95, seed),
                         Intervention(3, "hidden", 99, 0.9, 7))
        assert result["texts"]["unit"][0][seed] == pair.changed.generated
        assert result["runs"]["unit"][0][seed] == pytest.approx(mean_line_length(pair.changed.generated))
    assert result["control"] != 99 and result["rho"]["unit"] is None  # one value: no rank correlation
    x, y = [1, 2, 2, 3, 4, 4, 5], [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]
    rank = lambda v: np.array([np.mean([i for i, w in enumerate(sorted(v)) if w == u]) for u in v])  # noqa: E731
    assert spearman(x, y) == pytest.approx(np.corrcoef(rank(x), rank(y))[0, 1])
    assert regex_rates(["abab", "xx\nab"], "ab") == [50.0, 20.0]
    assert regex_rates(["a", "b"], "a\n") == [0.0, 0.0]  # a match across the texts' separator is not counted


@pytest.mark.parametrize("call,message", [
    (lambda m: attribute(m, TEXT, len(TEXT)), "step must be a whole number from 0 to"),
    (lambda m: attribute(m, TEXT, 3, "é"), "char_a must be one character of the model's vocabulary"),
    (lambda m: attribute(m, TEXT, 3, "a", "a"), "two different characters"),
    (lambda m: patch(m, "ROMEO", "ROME", "a", "b"), "the same length"),
    (lambda m: patch(m, "ROMEO", "ROMEO", "a", "b"), "the same logit difference"),
    (lambda m: patch(m, "A" * 301, "A" * 301, "a", "b"), "at most 300"),
    (lambda m: dose_response(m, "A", 500, 3, "hidden", 99, [0.0] * 11, 32), "at most 60,000 characters per sweep"),
    (lambda m: dose_response(m, "A", 50, 3, "forget", 99, [0.5], 2), "kind must be one of hidden, reset, update"),
    (lambda m: dose_response(m, "A", 50, 3, "hidden", 99, [2.0], 2), "from -1 to 1"),
    (lambda m: dose_response(m, "A", 50, 3, "hidden", 99, [0.5], 2, "(unclosed"), "not a valid regular expression"),
])
def test_bad_requests_say_what_is_allowed(shipped, call, message):
    with pytest.raises((AttributionError, DoseError, ValueError), match=message):
        call(shipped)
