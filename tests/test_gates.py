"""The trace's states and gates against torch.nn.GRU's own computation on the same weights (|diff| <= 1e-5)."""

import copy

import pytest
import torch
import torch.nn as nn

from charrnn import DecodeSettings
from charrnn.gates import saturation

from conftest import make_tiny

TOL = 1e-5
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 3


def single_layers(model):
    """One single-layer nn.GRU per layer of model.gru, holding that layer's weights."""
    layers = []
    for k in range(model.num_layers):
        layer = nn.GRU(model.gru.input_size if k == 0 else model.hidden_size, model.hidden_size, 1, batch_first=True)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").data.copy_(getattr(model.gru, f"{name}_l{k}").data)
        layers.append(layer.eval())
    return layers


@torch.no_grad()
def nn_gru_states(model, tokens):
    """Every layer's states [layers, T, H] and inputs, as nn.GRU computes them from a zero state."""
    x = model.embedding(tokens[None])
    inputs, states = [], []
    for layer in single_layers(model):
        inputs.append(x[0])
        x, _ = layer(x)
        states.append(x[0])
    return torch.stack(states), inputs


@torch.no_grad()
def nn_gru_gates(layer, x, h_prev):
    """r_t and z_t as computed inside nn.GRU itself, read out by running one step (all t as a batch) of copies
    whose other weights are set so that the output reveals the gate."""
    hidden = h_prev.shape[-1]
    rows = slice(2 * hidden, 3 * hidden)
    # Reset gate: z forced to 0 and n_t = tanh(r_t * 0.5), so r_t = 2 atanh(h_t).
    reveal_r = copy.deepcopy(layer)
    for w in (reveal_r.weight_ih_l0, reveal_r.weight_hh_l0):
        w[hidden : 3 * hidden] = 0
    reveal_r.bias_ih_l0[hidden:] = 0
    reveal_r.bias_ih_l0[hidden : 2 * hidden] = -100.0
    reveal_r.bias_hh_l0[hidden:] = 0
    reveal_r.bias_hh_l0[rows] = 0.5
    out, _ = reveal_r(x[:, None], h_prev[None])
    reset_gate = 2 * torch.atanh(out[:, 0])
    # Update gate: n_t forced to +1 (or -1), so h_t = (1 - z_t) n + z_t h_{t-1}; use the better-conditioned one.
    estimates = []
    for sign in (1.0, -1.0):
        reveal_z = copy.deepcopy(layer)
        reveal_z.weight_ih_l0[rows] = 0
        reveal_z.weight_hh_l0[rows] = 0
        reveal_z.bias_hh_l0[rows] = 0
        reveal_z.bias_ih_l0[rows] = 20.0 * sign
        out, _ = reveal_z(x[:, None], h_prev[None])
        estimates.append(((sign - out[:, 0]) / (sign - h_prev), (sign - h_prev).abs()))
    (z_pos, d_pos), (z_neg, d_neg) = estimates
    return reset_gate, torch.where(d_pos >= d_neg, z_pos, z_neg)


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
    trace = model.trace(TEXT)
    states, inputs = nn_gru_states(model, trace.tokens)
    for k, layer in enumerate(single_layers(model)):
        h_prev = torch.cat([torch.zeros(1, model.hidden_size), states[k, :-1]])
        reset_gate, update_gate = nn_gru_gates(layer, inputs[k], h_prev)
        assert (trace.reset_gate[k] - reset_gate).abs().max() <= TOL, f"reset gate, layer {k}"
        assert (trace.update_gate[k] - update_gate).abs().max() <= TOL, f"update gate, layer {k}"


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
    states, inputs = nn_gru_states(shipped, trace.tokens)
    assert (trace.hidden - states).abs().max() <= TOL
    layer = single_layers(shipped)[1]
    h_prev = torch.cat([torch.zeros(1, shipped.hidden_size), states[1, :-1]])
    reset_gate, update_gate = nn_gru_gates(layer, inputs[1], h_prev)
    assert (trace.reset_gate[1] - reset_gate).abs().max() <= TOL
    assert (trace.update_gate[1] - update_gate).abs().max() <= TOL


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
