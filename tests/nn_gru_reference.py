"""torch.nn.GRU's own computation of a model's states and gates: the reference the traces are checked against."""

import copy

import torch
import torch.nn as nn

TOL = 1e-5


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


def nn_gru_differences(model, trace, layers=None) -> dict:
    """The largest |trace - nn.GRU| of the states (every layer) and of each layer's reset and update gates (the
    given 0-based layers, all by default), nn.GRU running on the trace's own text from a zero state."""
    states, inputs = nn_gru_states(model, trace.tokens)
    found = {"hidden": (trace.hidden - states).abs().max().item()}
    for k, layer in enumerate(single_layers(model)):
        if layers is None or k in layers:
            h_prev = torch.cat([torch.zeros(1, model.hidden_size), states[k, :-1]])
            reset_gate, update_gate = nn_gru_gates(layer, inputs[k], h_prev)
            found[f"reset gate, layer {k}"] = (trace.reset_gate[k] - reset_gate).abs().max().item()
            found[f"update gate, layer {k}"] = (trace.update_gate[k] - update_gate).abs().max().item()
    return found
