"""Figures of a Trace: next-character probabilities per step, gate heatmaps, gate saturation, text views.

Plotly figures (drawn by gr.Plot in the page) and HTML strings (gr.HTML). Every builder takes a Trace and
nothing else from the model, so each can be tested without a browser. (text_html also colours a plain string,
for views of other analyses, such as charrnn.analysis.memory_gain's.)

The page's figures are compact, so that 2,000 characters stay light (about 0.4 MB for all of them, against 3 MB
when every step's bars, every cell's value and every character's span travelled as JSON and HTML): numbers go in
binary, what a person cannot see is left out (a long run's heatmap is averaged to the pixels it has), and what
follows from other numbers is derived in the browser by the page's script, charrnn/page/page.js (the slider's bars
and titles, the colours and titles of the coloured texts). Each such function names its counterpart here.
"""

from __future__ import annotations

import base64
import html
import json
import re

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..analysis.units import order_units, unit_labels
from ..decoding.trace import Trace, saturation
from ..decoding.unit import KIND_NAMES, KIND_RANGES, Unit, gates_of
from ..vocab import visible_char

KEPT, CUT, TAKEN = "#4c78a8", "#cfd4dc", "#f58518"
MAX_CELLS = 100_000  # per heatmap: plotly stays responsive up to about this many cells
LAYER_COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#72b7b2"]
# One small template instead of plotly's default, which would add ~10 kB to every figure sent to the page.
TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family="system-ui, sans-serif", size=12), paper_bgcolor="white", plot_bgcolor="white",
    margin=dict(l=60, r=20, t=60, b=40), hoverlabel=dict(font_size=13)))


def gate_values(trace: Trace, kind: str) -> torch.Tensor:
    """[layers, T, H] of one kind of value: a gate, or a state."""
    return trace.of(kind)


def checked_layer(trace: Trace, layer: int) -> int:
    """The index of a layer numbered from 1, or UnitError naming the layers there are."""
    Unit(layer, "hidden", 0).check(trace.hidden.shape[0], max(1, trace.hidden.shape[2]))
    return layer - 1


def context(trace: Trace, t: int, width: int = 24) -> str:
    """The title of step t: the last characters read, and the one that came next. (The page's script builds
    the same titles in the browser for the slider: keep the two alike.)"""
    before = "".join(visible_char(c) for c in trace.text[max(0, t - width + 1) : t + 1])
    after = visible_char(trace.text[t + 1]) if t + 1 < len(trace.text) else "(end)"
    where = "prompt" if t + 1 < trace.prompt_len else "generated"
    return f"step {t} ({where}): …{html.escape(before)} → <b>{html.escape(after)}</b>"


# ---- numbers for the browser ----
# Figures reach the page as JSON. Arrays go as plotly's typed-array spec ({"dtype", "bdata": base64, "shape"}),
# which plotly.py (6+) writes for numpy arrays in the data and plotly.js (2.28+, the page bundles 3.3.1) reads.
# What plotly.js cannot read from such arrays (a slider's steps, gate values quantised to 16 bits) goes in
# layout.meta["charrnn"] as the same spec, and the page's script (charrnn/page/page.js) expands it before drawing.
QUANTUM = 65535  # probabilities and gate values go as uint16: value = low + code / QUANTUM * (high - low)


def typed_array(values: np.ndarray) -> dict:
    """numpy array -> plotly's typed-array spec (little-endian, as browsers read it)."""
    values = np.ascontiguousarray(values)
    dtype = values.dtype.newbyteorder("<")
    spec = {"dtype": f"{dtype.kind}{dtype.itemsize}", "bdata": base64.b64encode(values.astype(dtype).tobytes()).decode()}
    if values.ndim > 1:
        spec["shape"] = ", ".join(map(str, values.shape))
    return spec


def from_typed_array(spec: dict) -> np.ndarray:
    """The inverse of typed_array (also reads the arrays plotly.py writes)."""
    values = np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
    shape = spec.get("shape")
    return values.reshape([int(n) for n in str(shape).split(",")]) if shape is not None else values


def quantise(values, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Values in [low, high] as uint16 codes (the nearest of QUANTUM + 1 levels)."""
    values = np.asarray(values, dtype=np.float64)
    return np.rint((values.clip(low, high) - low) / (high - low) * QUANTUM).astype(np.uint16)


def dequantise(codes: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    return low + codes.astype(np.float64) / QUANTUM * (high - low)


# ---- next-character probabilities ----


def probability_figure(trace: Trace, top_n: int = 12) -> go.Figure:
    """The most likely next characters at each step, raw (temperature 1) beside what was sampled from; the page
    steps through every step in the browser (no round trip to the server).

    The figure's bars show the first generated step; every step's bars travel in layout.meta["charrnn"]["bars"],
    compactly: `chars` [T, top_n] the vocabulary indices of the bars (most likely first; the character taken is
    always among them), `raw` and `filtered` [T, top_n] their probabilities quantised to uint16. The colours
    follow from them (taken: the next character of the text; cut: filtered == 0) and the titles from the text:
    the page's script (charrnn/page/page.js) puts a step control under the plot that restyles the bars with what
    bar_data gives here. (A plotly slider with a step per character took a quarter of a second to draw.)"""
    top_n = min(top_n, len(trace.vocab))
    _, order = trace.probs.topk(top_n, dim=-1)
    taken = torch.cat([trace.tokens[1:], torch.tensor([-1])])
    # Make sure the character actually taken is among the bars, even if it was not in the top n.
    missing = (order != taken[:, None]).all(-1) & (taken >= 0)
    order[missing, -1] = taken[missing]
    bars = {"chars": order.numpy().astype(np.uint8 if len(trace.vocab) <= 256 else np.uint16),
            "raw": quantise(trace.probs.gather(1, order).numpy()),
            "filtered": quantise(trace.filtered.gather(1, order).numpy())}
    first = max(0, trace.prompt_len - 1)
    meta = {"charrnn": {"text": text_meta(trace), "bars": {
        "active": first, "top_n": top_n, **{name: typed_array(values) for name, values in bars.items()}}}}
    shown = bar_data(trace, bars, first)

    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06, subplot_titles=(
        "raw: softmax at temperature 1", "sampled from: after temperature, top-k, top-p"))
    colorscale = [[0, KEPT], [1 / 3, KEPT], [1 / 3, CUT], [2 / 3, CUT], [2 / 3, TAKEN], [1, TAKEN]]
    for col, name in ((1, "raw"), (2, "filtered")):
        figure.add_trace(go.Bar(
            x=shown["x"][col - 1], y=shown["y"][col - 1], name=name, showlegend=False,
            marker=dict(color=shown["marker.color"][col - 1], colorscale=colorscale, cmin=0, cmax=2),
            hovertemplate="%{x}: p = %{y:.4f}<extra>" + name + "</extra>"), row=1, col=col)
    for color, name in ((KEPT, "kept by the settings"), (CUT, "cut by top-k / top-p"), (TAKEN, "character taken")):
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                    marker=dict(symbol="square", size=12, color=color)))
    figure.update_yaxes(range=[0, 1], title_text="probability", row=1, col=1)
    figure.update_xaxes(type="category", tickfont=dict(size=15))
    figure.update_layout(
        template=TEMPLATE, height=400, bargap=0.15, title=dict(text=context(trace, first), x=0.01, font_size=14),
        legend=dict(orientation="h", y=-0.12, x=0), margin=dict(t=80, b=70), meta=meta)
    return figure


def text_meta(trace: Trace) -> dict:
    """What the page's script needs to name steps: the text (its tokens), the prompt's length and the vocabulary
    as shown."""
    tokens = trace.tokens.numpy().astype(np.uint8 if len(trace.vocab) <= 256 else np.uint16)
    return {"tokens": typed_array(tokens), "prompt_len": trace.prompt_len,
            "vocab": [visible_char(c) for c in trace.vocab]}


def bar_data(trace: Trace, bars: dict, t: int) -> dict:
    """The bars of step t as a slider step restyles them ({"x", "y", "marker.color"}, raw then filtered):
    colour 2 = the character taken next, 1 = cut by the settings (filtered probability 0), 0 = kept."""
    chars = bars["chars"][t].tolist()
    raw, filtered = dequantise(bars["raw"][t]).round(4).tolist(), dequantise(bars["filtered"][t]).round(4).tolist()
    taken = trace.tokens[t + 1].item() if t + 1 < len(trace.text) else -1
    raw_colors = [2 if i == taken else 1 if f == 0 else 0 for i, f in zip(chars, bars["filtered"][t].tolist())]
    filtered_colors = [2 if i == taken else 0 for i in chars]
    labels = [visible_char(trace.vocab[i]) for i in chars]
    return {"x": [labels, labels], "y": [raw, filtered], "marker.color": [raw_colors, filtered_colors]}


# ---- gate heatmaps ----

MAX_COLUMNS = 500  # about the pixels a heatmap is wide: a longer run is averaged over a few steps per column
ORDERS = {"signal": "alike units together", "variance": "most variable first", "index": "unit index"}


def unit_order(values: torch.Tensor, order: str, text: str | None = None) -> tuple[list[int], list[str]]:
    """Units [H] of values [T, H] in the order to show them, and a note per unit (the built-in signal it follows for
    "signal", else ""): "signal" groups alike units (charrnn.analysis.units.order_units over `text`), "variance" puts
    the most variable first, "index" keeps index order."""
    if order == "signal":
        if text is None:
            raise ValueError("order 'signal' needs the text the values were read over")
        found = order_units(text, values)
        return found["units"], found["signal"]
    if order == "variance":
        units = values.var(dim=0, unbiased=False).argsort(descending=True, stable=True).tolist()
    elif order == "index":
        units = list(range(values.shape[1]))
    else:
        raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, not {order!r}")
    return units, [""] * len(units)


def units_shown(columns: int, hidden: int, max_units: int | None) -> int:
    """How many units fit in one heatmap of at most MAX_CELLS cells."""
    return max(1, min(hidden, max_units or hidden, MAX_CELLS // max(1, columns)))


def step_columns(steps: int, window: int | None = None) -> tuple[int, int, int]:
    """(first step, end step, steps per column) of a heatmap: the whole run (window None), averaged over as few
    steps per column as keep it within MAX_COLUMNS columns, or MAX_COLUMNS steps from `window` one per column."""
    if window is None:
        return 0, steps, max(1, -(-steps // MAX_COLUMNS))
    start = min(max(0, int(window)), max(0, steps - 1))
    return start, min(steps, start + MAX_COLUMNS), 1


def windows(steps: int) -> list[tuple[str, int | None]]:
    """The choices of what a heatmap shows, for a run of `steps` steps: (label, window)."""
    if steps <= MAX_COLUMNS:
        return [(f"all {steps:,} steps", None)]
    per = step_columns(steps)[2]
    return [(f"all {steps:,} steps ({per} per column, averaged)", None)] + [
        (f"steps {a:,}–{min(steps, a + MAX_COLUMNS) - 1:,}, one per column", a) for a in range(0, steps, MAX_COLUMNS)]


def column_labels(text: str, start: int, stop: int, per: int) -> list[str]:
    """One unique label per column: "t c" (step, character read), or "a–b chars" for a column of several steps."""
    if per == 1:
        return [f"{t} {visible_char(text[t])}" for t in range(start, stop)]
    return [f"{a}–{min(a + per, stop) - 1} {''.join(visible_char(c) for c in text[a : min(a + per, stop)])}"
            for a in range(start, stop, per)]


NICE_STEPS = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000)
PLOT_WIDTH_PX = 1000  # about the width of a heatmap's plot area on the page


def step_ticks(text: str, start: int, stop: int, per: int, width_px: int = PLOT_WIDTH_PX) -> tuple[list[int], list[str]]:
    """Where the x axis is labelled (column indices) and with what, so that no two labels overlap: each
    character read when every column is one step and there is room for it (about 10 px a column), else the
    step numbers at round intervals (one label per 50 px at most)."""
    columns = -(-(stop - start) // per)
    if per == 1 and width_px / max(1, columns) >= 10:
        return list(range(columns)), [visible_char(c) for c in text[start:stop]]
    steps_per_px = (stop - start) / width_px
    every = next((n for n in NICE_STEPS if n >= 50 * steps_per_px), NICE_STEPS[-1])
    first = -(-start // every) * every
    ticks = list(range(first, stop, every))
    return [(t - start) // per for t in ticks], [f"{t:,}" for t in ticks]


def heatmap_rows(trace: Trace, layer: int, order: str = "variance", max_units: int | None = 64, pinned=(),
                 window: int | None = None) -> tuple[list[int], list[str]]:
    """The units a layer's (from 1) gate heatmaps show, top to bottom, and a note for each (the built-in signal it
    follows, for order "signal"): the `pinned` units first, then the rest in `order` of their hidden states
    h_t (unit_order), as many as keep a heatmap of that window within MAX_CELLS cells. The reset and update
    heatmaps show the same rows, so a row is the same unit position in both."""
    values = trace.hidden[checked_layer(trace, layer)]
    steps, hidden = values.shape
    start, stop, per = step_columns(steps, window)
    pinned = list(dict.fromkeys(int(u) for u in pinned))
    if any(not 0 <= u < hidden for u in pinned):
        raise ValueError(f"pinned units must be from 0 to {hidden - 1}")
    order_of, notes = unit_order(values, order, trace.text)
    note = dict(zip(order_of, notes))
    units = (pinned + [u for u in order_of if u not in set(pinned)])[: units_shown(-(-(stop - start) // per), hidden,
                                                                                   max_units)]
    return units, ["" if u in pinned else note[u] for u in units]


def gate_figure(trace: Trace, kind: str, layer: int, order: str = "variance", max_units: int | None = 64, *,
                pinned=(), timescale=None, window: int | None = None, rows=None) -> go.Figure:
    """Heatmap of one layer's (from 1) reset gates, update gates or hidden states: x = step (the character read),
    y = unit, labelled with its name, "L3 reset 99 (τ 12)", and its memory timescale when `timescale` ([H] of this
    layer) is given. The rows are heatmap_rows(trace, layer, order, max_units, pinned, window) (or `rows`, when the
    caller has them already): pinned units marked ★ and a line under them, for order "signal" each group of
    units that follow the same signal named at its first row. x covers the whole run (a few steps averaged
    per column when it is long) or MAX_COLUMNS steps from `window` (see step_columns).

    z travels quantised to uint16 (layout.meta["charrnn"]["heatmap"] says how; heatmap_values reads it back);
    the page's script turns it back into values before plotly draws, and sends a click on a row to the page
    as its name, "L3 reset 99"."""
    values = gate_values(trace, kind)[checked_layer(trace, layer)]
    steps, hidden = values.shape
    start, stop, per = step_columns(steps, window)
    columns = -(-(stop - start) // per)
    units, notes = rows if rows is not None else heatmap_rows(trace, layer, order, max_units, pinned, window)
    pinned = set(int(u) for u in pinned)
    shown = values[start:stop, units].double().numpy()
    if per > 1:  # the mean of each column's steps
        edges = np.arange(0, stop - start, per)
        shown = np.add.reduceat(shown, edges, axis=0) / np.diff(np.append(edges, stop - start))[:, None]
    low, high = KIND_RANGES[kind]
    labels = unit_labels(layer, kind, units, None if timescale is None else timescale)
    labels = [("★ " if u in pinned else "") + label for u, label in zip(units, labels)]
    x = column_labels(trace.text, start, stop, per)
    figure = go.Figure(go.Heatmap(
        z=quantise(shown.T, low, high), x=x, y=labels, zmin=low, zmax=high,
        colorscale="RdBu_r", colorbar=dict(orientation="h", thickness=10, len=0.25, x=1.0, xanchor="right", y=1.0,
                                           yanchor="bottom", ypad=4, tickfont=dict(size=10)),
        hovertemplate="%{y}<br>step %{x}<br>" + kind + (" (mean)" if per > 1 else "") + " = %{z:.3f}<extra></extra>"))
    picked = f"{len(units)} of {hidden} units" + ("" if order == "index" else f", {ORDERS[order]} by h_t")
    picked += f"; {per} steps per column" if per > 1 else "" if (start, stop) == (0, steps) else f"; steps {start:,}–{stop - 1:,}"
    tickvals, ticktext = step_ticks(trace.text, start, stop, per)
    rows_px = max(3, min(14, 800 // len(units)))
    figure.update_layout(
        template=TEMPLATE, height=170 + rows_px * len(units),
        margin=dict(l=150, r=150 if order == "signal" else 30, t=110, b=50),
        # under the label Gradio puts over the plot's top left corner, above the colour bar
        title=dict(text=f"{KIND_NAMES[kind]}, layer {layer} <span style='font-size:12px;color:#666'>({picked})</span>",
                   x=0.01, y=1.0, yref="container", yanchor="top", pad=dict(t=38)),
        xaxis=dict(type="category", title="step: character read (hover for the step)", tickangle=0,
                   tickmode="array", tickvals=[x[i] for i in tickvals], ticktext=ticktext),
        yaxis=dict(type="category", autorange="reversed", tickfont=dict(size=min(12, max(8, rows_px - 2)))),
        meta={"charrnn": {"heatmap": {"kind": kind, "layer": layer, "low": low, "high": high,
                                      "quantum": QUANTUM}}},
    )
    shown_pinned = sum(u in pinned for u in units)
    if 0 < shown_pinned < len(units):
        figure.add_hline(y=shown_pinned - 0.5, line=dict(color="black", width=1))
    if order == "signal":  # a line above each group of units that follow the same signal, named where it fits
        groups = signal_groups(notes)
        for (row, name), end in zip(groups, [row for row, _ in groups[1:]] + [len(units)]):
            if row > shown_pinned:
                figure.add_hline(y=row - 0.5, line=dict(color="black", width=1.5))
            if (end - row) * rows_px >= 14:
                figure.add_annotation(x=1.0, xref="paper", xanchor="left", xshift=4, y=row - 0.5, yanchor="top",
                                      showarrow=False, text=name, font=dict(size=11, color="#555"))
    boundary = (trace.prompt_len - start) / per
    if 0 < trace.prompt_len < steps and 0 < boundary < columns:
        figure.add_vline(x=boundary - 0.5, line=dict(color="black", width=2, dash="dot"))
        figure.add_annotation(x=boundary - 0.5, y=1.0, yref="paper", text="generated →", showarrow=False,
                              xanchor="left", yanchor="bottom", font=dict(size=11))
    return figure


def signal_groups(notes: list[str]) -> list[tuple[int, str]]:
    """(first row, "word position (+)") of each run of rows that follow the same built-in signal with the same
    sign (notes as charrnn.analysis.units.order_units gives them: "word position +0.74", or "" for none)."""
    keys = []
    for note in notes:
        name, _, r = note.rpartition(" ")
        keys.append(f"{name} ({'+' if r.startswith('+') else '−'})" if note else "")
    return [(row, key) for row, key in enumerate(keys) if key and (row == 0 or keys[row - 1] != key)]


def heatmap_values(figure: go.Figure) -> np.ndarray:
    """The values a gate_figure shows [units, columns], read back from its quantised z."""
    heat = figure.layout.meta["charrnn"]["heatmap"]
    z = figure.data[0].z
    codes = from_typed_array(z) if isinstance(z, dict) else np.asarray(z)
    return dequantise(codes, heat["low"], heat["high"])


def message_figure(message: str, height: int = 160) -> go.Figure:
    """An empty figure that says why there is nothing to draw."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font_size=14)
    figure.update_layout(template=TEMPLATE, height=height, xaxis_visible=False, yaxis_visible=False)
    return figure


def saturation_figure(trace: Trace, low: float = 0.1, high: float = 0.9) -> go.Figure:
    """Each unit's fraction of steps left-saturated (< low) against right-saturated (> high), per gate and layer,
    as in Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks", fig. 3."""
    gates = gates_of(trace.kinds)
    figure = make_subplots(rows=1, cols=len(gates), subplot_titles=[KIND_NAMES[gate] for gate in gates],
                           horizontal_spacing=0.08)
    for col, kind in enumerate(gates, start=1):
        left, right = saturation(gate_values(trace, kind), low, high)
        for layer in range(left.shape[0]):
            figure.add_trace(go.Scatter(
                x=left[layer].numpy().astype(np.float32), y=right[layer].numpy().astype(np.float32), mode="markers",
                name=f"layer {layer + 1}", legendgroup=f"layer {layer + 1}", showlegend=col == 1,
                marker=dict(size=5, opacity=0.6, color=LAYER_COLORS[layer % len(LAYER_COLORS)]),
                customdata=np.arange(left.shape[1], dtype=np.uint16 if left.shape[1] < 2**16 else np.uint32),
                hovertemplate=f"layer {layer + 1}, unit %{{customdata}}<br>left-saturated %{{x:.0%}}"
                              "<br>right-saturated %{y:.0%}<extra></extra>"), row=1, col=col)
        figure.add_trace(go.Scatter(x=[0, 1], y=[1, 0], mode="lines", showlegend=False, hoverinfo="skip",
                                    line=dict(color="#bbb", dash="dot")), row=1, col=col)
    figure.update_xaxes(range=[-0.02, 1.02], title_text=f"fraction of steps < {low} (left-saturated)")
    figure.update_yaxes(range=[-0.02, 1.02], title_text=f"fraction of steps > {high} (right-saturated)", col=1)
    figure.update_layout(template=TEMPLATE, height=440, legend=dict(orientation="h", y=-0.2))
    return figure


def value_color(value: float, low: float) -> str:
    """A background for a value in [low, 1]: blue below the middle of the range, red above, stronger further out."""
    x = (value - low) / (1.0 - low) * 2 - 1  # -1 .. 1
    return f"rgba(228,87,86,{x:.2f})" if x >= 0 else f"rgba(76,120,168,{-x:.2f})"


def text_html(text: Trace | str, colors: list[str], titles: list[str], legend: str) -> str:
    """The text (a Trace's, its prompt underlined, or a plain string) as spans coloured one per character,
    whitespace made visible."""
    text, prompt_len = (text.text, text.prompt_len) if isinstance(text, Trace) else (text, 0)
    spans = []
    for t, c in enumerate(text):
        shown = html.escape(visible_char(c)) + ("<br>" if c == "\n" else "")
        style = f"background:{colors[t]}" + (";border-bottom:1px dotted #888" if t < prompt_len else "")
        spans.append(f'<span style="{style}" title="{html.escape(titles[t], quote=True)}">{shown}</span>')
    return (f'<div class="charrnn-text-legend" style="font-size:13px;color:#555;margin-bottom:6px">{legend}</div>'
            '<div class="charrnn-text" style="font-family:ui-monospace,monospace;font-size:15px;line-height:1.7;'
            f'white-space:pre-wrap;word-break:break-all">{"".join(spans)}</div>')


SURPRISAL_SCALE = 1000  # surprisal travels as uint16 codes of millinats; the last code means "no prediction"


def coded_text_html(trace: Trace, codes: np.ndarray, legend: str, **data) -> str:
    """A Trace's text with one uint16 code per character, coloured in the browser: the page's script turns
    <div class="charrnn-text" data-codes=...> into one span per character (its colour and its title from the
    code; data-kind says how: "surprisal", or a unit's values between data-low and data-high), prompt underlined.
    A few bytes per character instead of a styled, titled span each (a quarter of a megabyte for 2,000)."""
    symbols = {c: visible_char(c) for c in sorted(set(trace.text)) if visible_char(c) != c}
    data = {"prompt": trace.prompt_len, "symbols": json.dumps(symbols, ensure_ascii=False), **data}
    attributes = " ".join(f'data-{name}="{html.escape(str(value), quote=True)}"' for name, value in data.items())
    codes = base64.b64encode(np.ascontiguousarray(codes, dtype="<u2").tobytes()).decode()
    return (f'<div class="charrnn-text-legend" style="font-size:13px;color:#555;margin-bottom:6px">{legend}</div>'
            f'<div class="charrnn-text" {attributes} data-codes="{codes}" style="font-family:ui-monospace,monospace;'
            f'font-size:15px;line-height:1.7;white-space:pre-wrap;word-break:break-all">{html.escape(trace.text)}</div>')


def surprisal_html(trace: Trace, saturate_at: float = 6.0) -> str:
    """The text coloured by surprisal, -log p of each character under the raw distribution of the step before
    (full colour at `saturate_at` nats); hovering a character shows its p and surprisal."""
    surprisal = trace.surprisal().double().numpy()
    codes = np.concatenate([[QUANTUM], np.rint(surprisal * SURPRISAL_SCALE).clip(0, QUANTUM - 1)])
    mean = surprisal[trace.prompt_len - 1 :].sum() / max(1, len(surprisal) - trace.prompt_len + 1)
    legend = (f"Redder = more surprising to the model (−log p; full colour at {saturate_at:g} nats). "
              f"Mean over the generated characters: {mean:.2f} nats/char. Prompt underlined.")
    return coded_text_html(trace, codes, legend, kind="surprisal", scale=SURPRISAL_SCALE, saturate=saturate_at)


def activation_html(trace: Trace, kind: str, layer: int, unit: int) -> str:
    """The text coloured by one unit's (layer from 1) reset gate, update gate or hidden state after reading each
    character (blue below the middle of its range, red above); hovering a character shows the value."""
    values = gate_values(trace, kind)
    Unit(layer, kind, unit).check(values.shape[0], values.shape[2], trace.kinds)
    low, high = KIND_RANGES[kind]
    legend = (f"Layer {layer}, unit {unit}, {KIND_NAMES[kind]} after reading each character: "
              f"<span style='background:rgba(76,120,168,.9);color:white'>&nbsp;{low:g}&nbsp;</span> … "
              f"<span style='background:rgba(228,87,86,.9);color:white'>&nbsp;{high:g}&nbsp;</span>")
    return coded_text_html(trace, quantise(values[layer - 1, :, unit].numpy(), low, high), legend, kind="value",
                           name=kind, low=low, high=high)


def text_codes(page: str) -> np.ndarray:
    """The codes of a coded_text_html, read back."""
    found = re.search(r'data-codes="([^"]*)"', page)
    return np.frombuffer(base64.b64decode(found.group(1)), dtype="<u2")
