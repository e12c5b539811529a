"""The trace's states and gates against torch.nn.GRU's own computation on the same weights (|diff| <= 1e-5)."""

import pytest
import torch

from charrnn import DecodeSettings
from charrnn.decoding.trace import saturation

from conftest import make_tiny
from nn_gru_reference import TOL, nn_gru_differences, nn_gru_states

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 3


@pytest.fixture(params=["shipped", "tiny"])
def model(request, shipped):
    return shipped if request.param == "shipped" else make_tiny(hidden_size=24, num_layers=3)


def test_hidden_states_equal_nn_gru(model):
    trace = model.trace(TEXT)
    states, _ = nn_gru_states(model, trace.tokens)
    assert trace.hidden.shape == (model.num_layers, len(TEXT), model.hidden_size)
    assert (trace.hidden - states).abs().max() <= TOL
    with torch.no_grad():  # and the multi-layer module's own top-layer output agrees
        top, h_n = model.gru(model.embedding(trace.tokens[None]))
    assert (trace.hidden[-1] - top[0]).abs().max() <= TOL
    assert (trace.hidden[:, -1] - h_n[:, 0]).abs().max() <= TOL


def test_gates_equal_the_gates_inside_nn_gru(model):
    differences = nn_gru_differences(model, model.trace(TEXT))
    assert len(differences) == 1 + 2 * model.num_layers
    assert all(d <= TOL for d in differences.values()), differences


def test_gates_satisfy_the_gru_equations_in_float64(model):
    """An independent float64 evaluation of the textbook equations from the recorded states."""
    trace = model.trace(TEXT[:200])
    hidden = model.hidden_size
    x = model.embedding.weight.detach().double()[trace.tokens]
    for k in range(model.num_layers):
        w_ih, w_hh, b_ih, b_hh = (getattr(model.gru, f"{n}_l{k}").detach().double()
                                  for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        h = trace.hidden[k].double()
        h_prev = torch.cat([torch.zeros(1, hidden, dtype=torch.float64), h[:-1]])
        gi, gh = x @ w_ih.T + b_ih, h_prev @ w_hh.T + b_hh
        r = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])
        z = torch.sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
        n = torch.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
        assert (trace.reset_gate[k].double() - r).abs().max() <= TOL
        assert (trace.update_gate[k].double() - z).abs().max() <= TOL
        assert (h - ((1 - z) * n + z * h_prev)).abs().max() <= TOL
        x = h


def test_generated_text_trace_matches_nn_gru_on_that_text(shipped):
    trace = shipped.generate("KING:", DecodeSettings(max_new_chars=300, temperature=0.9, top_p=0.9, seed=5))
    differences = nn_gru_differences(shipped, trace, layers=[1])
    assert len(differences) == 3 and all(d <= TOL for d in differences.values()), differences


def test_gate_values_are_probabilities_and_vary(shipped):
    trace = shipped.trace(TEXT)
    for gate in (trace.reset_gate, trace.update_gate):
        assert gate.min() >= 0 and gate.max() <= 1
        assert gate.std(dim=1).mean() > 0.01  # units respond to the text


def test_saturation_fractions():
    gate = torch.tensor([[0.05, 0.5, 0.95], [0.01, 0.2, 0.99], [0.5, 0.5, 0.91], [0.09, 0.8, 0.5]])  # [T=4, H=3]
    left, right = saturation(gate)
    assert left.tolist() == [0.75, 0.0, 0.0]
    assert right.tolist() == [0.0, 0.0, 0.75]
