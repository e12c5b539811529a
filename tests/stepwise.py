"""The reference every unit analysis is checked against: the textbook GRU equations stepped one character at a
time in float64, from the zero state, written out here independently of the package."""

from functools import lru_cache
from pathlib import Path

import torch

from charrnn.analysis.activations import one_thread


def float64_weights(model):
    """The embedding, the head's weight and bias, and each layer's [W_ih, W_hh, b_ih, b_hh], in float64."""
    params = [[getattr(model.rnn, f"{name}_l{k}").detach().double()
               for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")] for k in range(model.num_layers)]
    return (model.embedding.weight.detach().double(), model.head.weight.detach().double(),
            model.head.bias.detach().double(), params)


@torch.no_grad()
def step_equations(model, ids: list[int], *, new_chars: int = 0, intervention=None, after_layer=None):
    """Read `ids` one character at a time from the zero state (then write `new_chars` more, greedily), by the
    GRU equations in float64; `intervention` (charrnn.interventions.Intervention) forces its unit from its step
    on; after_layer(layer from 0, step, h) may change a layer's new state in place (a patch). Returns every token
    id, the values [3 (hidden h_t, reset r_t, update z_t), layers, T, H] after each step and the logits [T, vocab]
    for the character after each."""
    ids = list(ids)
    hidden = model.hidden_size
    embedding, head_w, head_b, params = float64_weights(model)
    h = [torch.zeros(hidden, dtype=torch.float64) for _ in params]
    total = len(ids) + new_chars
    out = torch.empty(3, model.num_layers, total, hidden, dtype=torch.float64)
    logits = torch.empty(total, len(model.vocab), dtype=torch.float64)
    prompt_len = len(ids)
    with one_thread():  # small products: one thread is far faster on a busy 2-core machine
        for t in range(total):
            x = embedding[ids[t]]
            for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(params):
                gi, gh = w_ih @ x + b_ih, w_hh @ h[k] + b_hh
                r = torch.sigmoid(gi[:hidden] + gh[:hidden])
                z = torch.sigmoid(gi[hidden : 2 * hidden] + gh[hidden : 2 * hidden])
                forced = intervention is not None and intervention.layer == k + 1 and t >= intervention.from_step
                if forced and intervention.kind == "reset":
                    r[intervention.unit] = intervention.value
                if forced and intervention.kind == "update":
                    z[intervention.unit] = intervention.value
                n = torch.tanh(gi[2 * hidden :] + r * gh[2 * hidden :])
                h[k] = (1 - z) * n + z * h[k]
                if forced and intervention.kind == "hidden":
                    h[k][intervention.unit] = intervention.value
                if after_layer is not None:
                    after_layer(k, t, h[k])
                out[0, k, t], out[1, k, t], out[2, k, t] = h[k], r, z
                x = h[k]
            logits[t] = head_w @ x + head_b
            if t >= prompt_len - 1 and len(ids) < total:  # the prompt is read first; then each step writes one
                ids.append(int(logits[t].argmax()))
    return ids, out, logits


def stepwise_values(model, text: str) -> torch.Tensor:
    """[3 (hidden h_t, reset r_t, update z_t), layers, T, H] float64 after each character of `text`."""
    return step_equations(model, [model.vocab.index(c) for c in text])[1]


REFERENCE_TEXT = Path(__file__).resolve().parents[1] / "weights" / "tiny-shakespeare" / "reference.txt"
START_CHARS = 1500  # the start of the shipped model's reference text checked step by step (about 3 s)


@lru_cache(maxsize=2)
def reference_start(model) -> tuple[str, torch.Tensor]:
    """The first START_CHARS characters of the shipped reference text and their stepwise values (computed once)."""
    text = REFERENCE_TEXT.read_text(encoding="utf-8")[:START_CHARS]
    return text, stepwise_values(model, text)


@torch.no_grad()
def lstm_step_equations(model, ids: list[int], *, new_chars: int = 0, intervention=None):
    """The LSTM's counterpart of step_equations: i, f, g, o in nn.LSTM's order, c_t = f c + i g, h_t = o tanh(c_t),
    in float64 from the zero state. Returns every token id, the values [5 (hidden h_t, cell c_t, input i_t,
    forget f_t, output o_t), layers, T, H] and the logits [T, vocab]."""
    ids = list(ids)
    hidden = model.hidden_size
    embedding, head_w, head_b, params = float64_weights(model)
    h = [torch.zeros(hidden, dtype=torch.float64) for _ in params]
    c = [torch.zeros(hidden, dtype=torch.float64) for _ in params]
    total = len(ids) + new_chars
    out = torch.empty(5, model.num_layers, total, hidden, dtype=torch.float64)
    logits = torch.empty(total, len(model.vocab), dtype=torch.float64)
    prompt_len = len(ids)
    with one_thread():
        for t in range(total):
            x = embedding[ids[t]]
            for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(params):
                pre = (w_ih @ x + b_ih + w_hh @ h[k] + b_hh).view(4, hidden)
                i, f, g, o = pre[0].sigmoid(), pre[1].sigmoid(), pre[2].tanh(), pre[3].sigmoid()
                forced = intervention is not None and intervention.layer == k + 1 and t >= intervention.from_step
                if forced and intervention.kind in ("input", "forget", "output"):
                    {"input": i, "forget": f, "output": o}[intervention.kind][intervention.unit] = intervention.value
                c[k] = f * c[k] + i * g
                if forced and intervention.kind == "cell":
                    c[k][intervention.unit] = intervention.value
                h[k] = o * c[k].tanh()
                if forced and intervention.kind == "hidden":
                    h[k][intervention.unit] = intervention.value
                out[:, k, t] = torch.stack([h[k], c[k], i, f, o])
                x = h[k]
            logits[t] = head_w @ x + head_b
            if t >= prompt_len - 1 and len(ids) < total:
                ids.append(int(logits[t].argmax()))
    return ids, out, logits
