"""Why this character? Two answers for a recurrent model's choice, in the units of its layers.

Attribution (`attribute`): at step t (after reading text[t]), the logit difference between two characters a and b
is exactly a sum over the last layer's hidden units plus the bias term, since the head is linear:

    logit[a] - logit[b] = sum_u h_t[u] (W[a, u] - W[b, u]) + (bias[a] - bias[b])

For earlier layers and earlier steps there is no such exact split (the cell is not linear); gradient x activation,
d(logit difference)/d(value) * value, is the first-order approximation TransformerLens and others use. How much of
the difference it accounts for is reported beside it (`coverage`): at the last layer and step it is exact (1).

Activation patching (`patch`): two texts of one length, a clean and a corrupted one; for every layer k and step t,
the corrupted run with layer k's state at step t replaced by the clean run's (after the layer's update, so the next
layer and the later steps see it, as the hidden intervention does; an LSTM's cell state is patched with its hidden
state), and the fraction of the clean-vs-corrupted logit difference at the last step that this restores.

Steps count the characters read, from 0, as the export does.
"""

from __future__ import annotations

from typing import Generator

import torch

from ..vocab import show_char
from .activations import encode, layer_parameters, one_thread, run_steps

MAX_ATTRIBUTE_CHARS = 4_000  # a prompt and a run of the page (2,000 each)
MAX_PATCH_CHARS = 300  # layers x steps patched runs, each read from its step on: a few seconds for 3 x 512
TOP_UNITS = 20
WINDOW = 32  # the steps before the attributed one whose gradient x activation is reported
BLOCK_STEPS = 4  # the patches of this many steps run together, from the first of them: a piece of work each


class AttributionError(ValueError):
    """The step, the characters or the texts cannot be attributed or patched; the message says why."""


def char_id(model, char, what: str) -> int:
    if not isinstance(char, str) or len(char) != 1 or char not in model.vocab:
        raise AttributionError(f"{what} must be one character of the model's vocabulary, not {char!r:.20}")
    return model.vocab.index(char)


def check_recurrent(model) -> None:
    if not model.kinds:
        raise AttributionError(f"the {type(model).__name__} has no recurrent units to attribute to")


# ---- the layers' outputs, with their gradients ----


def layer_outputs(model, ids: torch.Tensor, initial=None, dtype=torch.float64) -> tuple[torch.Tensor, list]:
    """Every layer's hidden states [T, H] over `ids`, from `initial` (each layer's (h,) or (h, c) [H], zero when
    None), computed in `dtype` by torch's own GRU or LSTM one layer at a time, each kept in the graph (retain_grad)
    so a backward pass gives its gradient; and the head's logits [T, vocab]."""
    params = [[p.to(dtype) for p in layer] for layer in layer_parameters(model)]
    x = model.embedding.weight.detach().to(dtype)[ids].requires_grad_()  # so every layer's output is in the graph
    outputs = []
    for k, layer in enumerate(params):
        out, _ = run_layer(model, x, layer, None if initial is None else initial[k])
        x = out
        x.retain_grad()
        outputs.append(x)
    logits = x @ model.head.weight.detach().to(dtype).T + model.head.bias.detach().to(dtype)
    return logits, outputs


def run_layer(model, x: torch.Tensor, layer: list, start=None) -> tuple[torch.Tensor, tuple]:
    """One layer over x [T, in] from `start` ((h,) or (h, c), zero when None): its outputs [T, H] and last state."""
    zeros = torch.zeros(1, 1, model.hidden_size, dtype=x.dtype)
    state = [zeros if start is None else value.reshape(1, 1, -1) for value in (start or (None, None))]
    if model.CELL == "lstm":
        out, h, c = torch._VF.lstm(x[None], tuple(state), layer, True, 1, 0.0, False, False, True)
        return out[0], (h.reshape(-1), c.reshape(-1))
    out, h = torch._VF.gru(x[None], state[0], layer, True, 1, 0.0, False, False, True)
    return out[0], (h.reshape(-1),)


def states_after(model, ids: torch.Tensor, dtype=torch.float64) -> list[tuple] | None:
    """Each layer's state after reading `ids` from zero (None for no ids), with no graph kept."""
    if len(ids) == 0:
        return None
    params = [[p.to(dtype) for p in layer] for layer in layer_parameters(model)]
    x, states = model.embedding.weight.detach().to(dtype)[ids], []
    with torch.no_grad():
        for layer in params:
            x, last = run_layer(model, x, layer)
            states.append(last)
    return states


def pick_chars(model, logits: torch.Tensor, text: str, step: int, char_a, char_b) -> tuple[int, int]:
    """a: the given character, else the one the text has next, else the most likely; b: the given one, else the
    most likely other than a (the runner-up)."""
    if char_a in (None, ""):
        a = model.vocab.index(text[step + 1]) if step + 1 < len(text) else int(logits.argmax())
    else:
        a = char_id(model, char_a, "char_a")
    if char_b in (None, ""):
        others = logits.clone()
        others[a] = float("-inf")
        b = int(others.argmax())
    else:
        b = char_id(model, char_b, "char_b")
    if a == b:
        raise AttributionError(f"char_a and char_b are both {show_char(model.vocab[a])}: choose two different "
                               "characters")
    return a, b


def attribute(model, text: str, step: int | None = None, char_a: str | None = None, char_b: str | None = None, *,
              top: int | None = TOP_UNITS, max_chars: int = MAX_ATTRIBUTE_CHARS) -> dict:
    """The logit difference logit[a] - logit[b] after reading text[step] (the last character when step is None),
    split exactly over the last layer's units, and approximately (gradient x activation) over the earlier layers
    at that step and over every layer at earlier steps.

    Returns {"step", "char_a", "char_b", "logit_diff", "bias", "units": [{"layer", "unit", "value",
    "contribution"}, ...] (the last layer's, the `top` largest |contribution| first, all of them when top is None:
    those sum with the bias to logit_diff), "approximate": [{"layer", "step", "unit", "contribution"}, ...] (the
    `top` largest |gradient x activation| among the earlier layers at this step and every layer at the WINDOW
    steps before), "coverage":
    [{"layer", "sum", "fraction"}, ...] (per layer at this step: the sum of its gradient x activation and its
    fraction of the logit difference), "by_step": [[sum over the layer's units for each of the steps shown] for
    each layer], "steps": the steps of by_step}. Layers from 1."""
    check_recurrent(model)
    ids = encode(model, text, max_chars)
    step = len(text) - 1 if step is None else step
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < len(text):
        raise AttributionError(f"step must be a whole number from 0 to {len(text) - 1} (the characters read, from "
                               f"0), not {step!r}")
    first = max(0, step - WINDOW)  # the text before is read without a graph: its gradients are not reported
    with torch.enable_grad(), one_thread():
        logits, outputs = layer_outputs(model, ids[first : step + 1], states_after(model, ids[:first]))
        a, b = pick_chars(model, logits[-1].detach(), text, step, char_a, char_b)
        weights, bias = model.head.weight.detach().double(), model.head.bias.detach().double()
        difference = logits[-1, a] - logits[-1, b]
        difference.backward()
    last = outputs[-1][-1].detach()
    exact = last * (weights[a] - weights[b])
    order = exact.abs().argsort(descending=True, stable=True)[:top]
    layers = len(outputs)
    units = [{"layer": layers, "unit": int(u), "value": float(last[u]), "contribution": float(exact[u])}
             for u in order]
    total = float(difference.detach())
    return {"step": step, "char_a": model.vocab[a], "char_b": model.vocab[b], "logit_diff": total,
            "bias": float(bias[a] - bias[b]), "units": units, **approximations(outputs, first, total, top or TOP_UNITS)}


def approximations(outputs: list[torch.Tensor], first: int, difference: float, top: int) -> dict:
    """Gradient x activation of every layer's units at the steps `outputs` cover (first .. the attributed step)."""
    products = torch.stack([out.grad * out.detach() for out in outputs])  # [layers, steps, H]
    layers, steps, hidden = products.shape
    eligible = products.clone()
    eligible[-1, -1] = 0  # the last layer at the attributed step is split exactly
    flat = eligible.abs().reshape(-1).argsort(descending=True, stable=True)[:top]
    approximate = [{"layer": int(i // (steps * hidden)) + 1, "step": first + int(i // hidden % steps),
                    "unit": int(i % hidden), "contribution": float(products.reshape(-1)[i])} for i in flat]
    sums = products.sum(-1)  # [layers, steps]
    coverage = [{"layer": k + 1, "sum": float(sums[k, -1]),
                 "fraction": float(sums[k, -1]) / difference if difference else None} for k in range(layers)]
    return {"approximate": approximate, "coverage": coverage, "by_step": sums.tolist(),
            "steps": list(range(first, first + steps))}


# ---- activation patching ----


def check_pair(model, clean: str, corrupted: str, max_chars: int) -> tuple[torch.Tensor, torch.Tensor]:
    clean_ids, corrupted_ids = encode(model, clean, max_chars), encode(model, corrupted, max_chars)
    if len(clean) != len(corrupted):
        raise AttributionError(f"the clean and corrupted texts must have the same length (they have {len(clean)} "
                               f"and {len(corrupted)} characters): change characters, do not add or remove them")
    return clean_ids, corrupted_ids


def cell_step(model, params, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """One layer's step for rows [R, in] from state (h,) or (h, c): torch's own cell."""
    if model.CELL == "lstm":
        return tuple(torch.lstm_cell(x, state, *params))
    return (torch.gru_cell(x, state[0], *params),)


def read_states(model, ids: torch.Tensor) -> torch.Tensor:
    """[layers, state kinds (h, and c for an LSTM), T, H] in float64: every layer's state after each step."""
    return run_rows(model, ids, 0, None, None, [], keep=True)[1]


def run_rows(model, ids: torch.Tensor, start: int, before, clean_states, patches: list[tuple], keep: bool = False):
    """Read ids[start:] in float64 with one row per patch (one plain row when there are none), every row starting
    from the states `before` [layers, kinds, H] (those after step start - 1; zero when None). The row of patch
    (layer k from 0, step t >= start, units or None for all) has layer k's state after step t replaced by
    clean_states' [layers, kinds, T, H]. Returns the logits [rows, vocab] after the last step, and the first
    row's states [layers, kinds, T, H] when `keep` (from a start of 0)."""
    params = [[p.double() for p in layer] for layer in layer_parameters(model)]
    embedding = model.embedding.weight.detach().double()
    rows, layers, kinds = max(1, len(patches)), len(params), 2 if model.CELL == "lstm" else 1
    if before is None:
        before = torch.zeros(layers, kinds, model.hidden_size, dtype=torch.float64)
    state = [tuple(before[k, kind].expand(rows, -1) for kind in range(kinds)) for k in range(layers)]
    kept = torch.empty(layers, kinds, len(ids), model.hidden_size, dtype=torch.float64) if keep else None
    at = {}  # (layer, step) -> [(row, units)]
    for row, (layer, step, units) in enumerate(patches):
        at.setdefault((layer, step), []).append((row, units))
    for t in range(start, len(ids)):
        x = embedding[ids[t]].expand(rows, -1)
        for k, layer in enumerate(params):
            new = cell_step(model, layer, x, state[k])
            for row, units in at.get((k, t), ()):
                where = slice(None) if units is None else units
                for kind, values in enumerate(new):
                    values[row, where] = clean_states[k, kind, t, where]
            state[k] = new
            if keep:
                for kind, values in enumerate(new):
                    kept[k, kind, t] = values[0]
            x = new[0]
    return x @ model.head.weight.detach().double().T + model.head.bias.detach().double(), kept


def patch_steps(model, clean: str, corrupted: str, target: str, foil: str, *, layer: int | None = None,
                step: int | None = None, max_chars: int = MAX_PATCH_CHARS) -> Generator[None, None, dict]:
    """patch as steps: checked now, then one block of patched runs per step. The runs are read in float64 (so a
    patch that changes nothing restores exactly 0), a block of BLOCK_STEPS steps' patches together from the
    corrupted run's states before their first step: a patched run equals the corrupted one until its patch."""
    check_recurrent(model)
    clean_ids, corrupted_ids = check_pair(model, clean, corrupted, max_chars)
    target_id, foil_id = char_id(model, target, "target"), char_id(model, foil, "foil")
    if target_id == foil_id:
        raise AttributionError("target and foil must be two different characters")
    per_unit = layer is not None or step is not None
    if per_unit:
        check_cell(model, layer, step, len(clean))

    def difference(logits):
        return logits[..., target_id] - logits[..., foil_id]

    def steps():
        with torch.inference_mode(), one_thread():
            clean_logits, clean_states = run_rows(model, clean_ids, 0, None, None, [], keep=True)
            corrupted_logits, corrupted_states = run_rows(model, corrupted_ids, 0, None, None, [], keep=True)
        yield
        ld_clean, ld_corrupted = float(difference(clean_logits[0])), float(difference(corrupted_logits[0]))
        if abs(ld_clean - ld_corrupted) < 1e-9:
            raise AttributionError(f"the clean and corrupted texts give the same logit difference "
                                   f"({ld_clean:.4f}) between {show_char(target)} and {show_char(foil)}: "
                                   "there is nothing to restore; change the corrupted text or the characters")
        blocks = ([(step, [(layer - 1, step, [u]) for u in range(model.hidden_size)])] if per_unit else
                  [(t0, [(k, t, None) for t in range(t0, min(t0 + BLOCK_STEPS, len(clean)))
                         for k in range(model.num_layers)]) for t0 in range(0, len(clean), BLOCK_STEPS)])
        restored = {}
        for t0, patches in blocks:
            before = corrupted_states[:, :, t0 - 1] if t0 else None
            with torch.inference_mode(), one_thread():
                logits, _ = run_rows(model, corrupted_ids, t0, before, clean_states, patches)
            fractions = ((difference(logits) - ld_corrupted) / (ld_clean - ld_corrupted)).tolist()
            restored.update(zip([(k, t, tuple(units or ())) for k, t, units in patches], fractions))
            yield
        result = {"clean": ld_clean, "corrupted": ld_corrupted, "target": target, "foil": foil,
                  "steps": len(clean)}
        if per_unit:
            return {**result, "layer": layer, "step": step,
                    "units": [restored[(layer - 1, step, (u,))] for u in range(model.hidden_size)]}
        return {**result, "grid": [[restored[(k, t, ())] for t in range(len(clean))] for k in range(model.num_layers)]}

    return steps()


def check_cell(model, layer, step, length: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= model.num_layers:
        raise AttributionError(f"layer must be a whole number from 1 to {model.num_layers}, not {layer!r}")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < length:
        raise AttributionError(f"step must be a whole number from 0 to {length - 1}, not {step!r}")


def patch(model, clean: str, corrupted: str, target: str, foil: str, *, layer: int | None = None,
          step: int | None = None, max_chars: int = MAX_PATCH_CHARS) -> dict:
    """Activation patching of the corrupted text with the clean one's states. The logit difference LD =
    logit[target] - logit[foil] after the last character; for each layer (from 1) and step (from 0) the fraction
    restored, (LD_patched - LD_corrupted) / (LD_clean - LD_corrupted): {"clean", "corrupted" (the two LDs),
    "target", "foil", "steps", "grid": [[restored for each step] for each layer]}. Given `layer` and `step`, each
    unit of that layer patched alone at that step instead: {..., "layer", "step", "units": [restored per unit]}."""
    return run_steps(patch_steps(model, clean, corrupted, target, foil, layer=layer, step=step, max_chars=max_chars))
