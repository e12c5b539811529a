"""Figures of a Trace: next-character probabilities per step, gate heatmaps, gate saturation, text views.

Plotly figures (drawn by gr.Plot in the page) and HTML strings (gr.HTML). Every builder takes a Trace and
nothing else from the model, so each can be tested without a browser. (text_html also colours a plain string,
for views of other analyses, such as charrnn.memory_gain's.)
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .gates import Trace, saturation
from .vocab import visible_char

KEPT, CUT, TAKEN = "#4c78a8", "#cfd4dc", "#f58518"
MAX_CELLS = 100_000  # per heatmap: plotly stays responsive up to about this many cells
GATES = {"reset": "reset gate r_t", "update": "update gate z_t", "hidden": "hidden state h_t"}
LAYER_COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#72b7b2"]
# One small template instead of plotly's default, which would add ~10 kB to every figure sent to the page.
TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family="system-ui, sans-serif", size=12), paper_bgcolor="white", plot_bgcolor="white",
    margin=dict(l=60, r=20, t=60, b=40), hoverlabel=dict(font_size=13)))


def gate_values(trace: Trace, kind: str) -> torch.Tensor:
    """[layers, T, H] of the reset gates, update gates or hidden states."""
    return {"reset": trace.reset_gate, "update": trace.update_gate, "hidden": trace.hidden}[kind]


def step_labels(trace: Trace) -> list[str]:
    """One unique label per step, "t c" with c the character read at step t."""
    return [f"{t} {visible_char(c)}" for t, c in enumerate(trace.text)]


def context(trace: Trace, t: int, width: int = 24) -> str:
    """The title of step t: the last characters read, and the one that came next."""
    before = "".join(visible_char(c) for c in trace.text[max(0, t - width + 1) : t + 1])
    after = visible_char(trace.text[t + 1]) if t + 1 < len(trace.text) else "(end)"
    where = "prompt" if t + 1 < trace.prompt_len else "generated"
    return f"step {t} ({where}): …{html.escape(before)} → <b>{html.escape(after)}</b>"


def probability_figure(trace: Trace, top_n: int = 12) -> go.Figure:
    """The most likely next characters at each step, raw (temperature 1) beside what was sampled from, with a
    slider over every step that restyles the bars in the browser (no round trip to the server)."""
    steps = len(trace.text)
    top_n = min(top_n, len(trace.vocab))
    raw, order = trace.probs.topk(top_n, dim=-1)
    taken = torch.cat([trace.tokens[1:], torch.tensor([-1])])
    # Make sure the character actually taken is among the bars, even if it was not in the top n.
    missing = (order != taken[:, None]).all(-1) & (taken >= 0)
    order[missing, -1] = taken[missing]
    raw = trace.probs.gather(1, order)
    filtered = trace.filtered.gather(1, order)
    is_taken = order == taken[:, None]
    raw_colors = torch.where(is_taken, 2, torch.where(filtered > 0, 0, 1)).tolist()
    filtered_colors = torch.where(is_taken, 2, 0).tolist()
    labels = [[visible_char(trace.vocab[i]) for i in row] for row in order.tolist()]
    raw, filtered = raw.double().numpy().round(3).tolist(), filtered.double().numpy().round(3).tolist()

    def data_at(t):
        return {"x": [labels[t], labels[t]], "y": [raw[t], filtered[t]],
                "marker.color": [raw_colors[t], filtered_colors[t]]}

    first = max(0, trace.prompt_len - 1)
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06, subplot_titles=(
        "raw: softmax at temperature 1", "sampled from: after temperature, top-k, top-p"))
    colorscale = [[0, KEPT], [1 / 3, KEPT], [1 / 3, CUT], [2 / 3, CUT], [2 / 3, TAKEN], [1, TAKEN]]
    for col, name in ((1, "raw"), (2, "filtered")):
        figure.add_trace(go.Bar(
            x=labels[first], y=(raw if col == 1 else filtered)[first], name=name, showlegend=False,
            marker=dict(color=(raw_colors if col == 1 else filtered_colors)[first], colorscale=colorscale,
                        cmin=0, cmax=2), hovertemplate="%{x}: p = %{y:.4f}<extra>" + name + "</extra>"),
            row=1, col=col)
    for color, name in ((KEPT, "kept by the settings"), (CUT, "cut by top-k / top-p"), (TAKEN, "character taken")):
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                    marker=dict(symbol="square", size=12, color=color)))
    figure.update_yaxes(range=[0, 1], title_text="probability", row=1, col=1)
    figure.update_xaxes(type="category", tickfont=dict(size=15))
    figure.update_layout(
        template=TEMPLATE, height=430, bargap=0.15, title=dict(text=context(trace, first), x=0.01, font_size=14),
        legend=dict(orientation="h", y=-0.28, x=0), margin=dict(t=80, b=150),
        # No step labels: plotly measures every label's text, which took seconds for 2,000 steps; the title
        # names the step instead.
        sliders=[dict(
            active=first, len=1.0, x=0, y=-0.42, pad=dict(t=0), ticklen=0, minorticklen=0,
            currentvalue=dict(visible=False),
            steps=[dict(method="update", label="", args=[data_at(t), {"title.text": context(trace, t)}, [0, 1]])
                   for t in range(steps)],
        )],
    )
    return figure


def unit_order(values: torch.Tensor, order: str) -> torch.Tensor:
    """Units [H] of values [T, H], most variable first ("variance") or in index order ("index")."""
    if order == "variance":
        return values.var(dim=0, unbiased=False).argsort(descending=True)
    if order == "index":
        return torch.arange(values.shape[1])
    raise ValueError(f"order must be 'variance' or 'index', not {order!r}")


def units_shown(steps: int, hidden: int, max_units: int | None) -> int:
    """How many units fit in one heatmap of at most MAX_CELLS cells."""
    return max(1, min(hidden, max_units or hidden, MAX_CELLS // max(1, steps)))


def gate_figure(trace: Trace, kind: str, layer: int, order: str = "variance", max_units: int | None = 64) -> go.Figure:
    """Heatmap of one layer's reset gates, update gates or hidden states: x = step (the character read),
    y = unit; the most variable units first, as many as keep the figure near MAX_CELLS cells."""
    values = gate_values(trace, kind)[layer]
    steps, hidden = values.shape
    units = unit_order(values, order)[: units_shown(steps, hidden, max_units)]
    z = values[:, units].T.contiguous().numpy()
    low, high = (-1.0, 1.0) if kind == "hidden" else (0.0, 1.0)
    figure = go.Figure(go.Heatmap(
        z=z, x=step_labels(trace), y=[f"unit {u}" for u in units.tolist()], zmin=low, zmax=high,
        colorscale="RdBu_r", colorbar=dict(thickness=12, len=0.9),
        hovertemplate="step %{x}<br>%{y}<br>" + kind + " = %{z:.3f}<extra></extra>"))
    picked = f"{len(units)} of {hidden} units" + (", most variable first" if order == "variance" else "")
    labels = figure.data[0].x
    # Explicit ticks, about 40 of them: letting plotly place ticks over thousands of categories costs the
    # browser hundreds of milliseconds of text measuring.
    ticks = labels[:: max(1, -(-len(labels) // 40))]
    figure.update_layout(
        template=TEMPLATE, height=min(900, 140 + 9 * len(units)),
        title=dict(text=f"{GATES[kind]}, layer {layer + 1} <span style='font-size:12px;color:#666'>({picked})</span>",
                   x=0.01),
        xaxis=dict(type="category", title="step: character read", tickangle=0, tickmode="array", tickvals=ticks),
        yaxis=dict(type="category", autorange="reversed", showticklabels=len(units) <= 48),
    )
    if 0 < trace.prompt_len < steps:
        figure.add_vline(x=trace.prompt_len - 0.5, line=dict(color="black", width=2, dash="dot"))
        figure.add_annotation(x=trace.prompt_len - 0.5, y=1.0, yref="paper", text="generated →", showarrow=False,
                              xanchor="left", yanchor="bottom", font=dict(size=11))
    return figure


def message_figure(message: str, height: int = 160) -> go.Figure:
    """An empty figure that says why there is nothing to draw."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font_size=14)
    figure.update_layout(template=TEMPLATE, height=height, xaxis_visible=False, yaxis_visible=False)
    return figure


def saturation_figure(trace: Trace, low: float = 0.1, high: float = 0.9) -> go.Figure:
    """Each unit's fraction of steps left-saturated (< low) against right-saturated (> high), per gate and layer,
    as in Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks", fig. 3."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("reset gate r_t", "update gate z_t"),
                           horizontal_spacing=0.08)
    for col, kind in ((1, "reset"), (2, "update")):
        left, right = saturation(gate_values(trace, kind), low, high)
        for layer in range(left.shape[0]):
            figure.add_trace(go.Scatter(
                x=left[layer].double().numpy().round(4), y=right[layer].double().numpy().round(4), mode="markers",
                name=f"layer {layer + 1}", legendgroup=f"layer {layer + 1}", showlegend=col == 1,
                marker=dict(size=5, opacity=0.6, color=LAYER_COLORS[layer % len(LAYER_COLORS)]),
                customdata=np.arange(left.shape[1]),
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


def surprisal_html(trace: Trace, saturate_at: float = 6.0) -> str:
    """The text coloured by surprisal, -log p of each character under the raw distribution of the step before."""
    surprisal = trace.surprisal().tolist()
    colors, titles = ["transparent"], [f"step 0 {visible_char(trace.text[0])!r}: first character, no prediction"]
    for t, s in enumerate(surprisal, start=1):
        colors.append(f"rgba(228,87,86,{min(1.0, s / saturate_at):.2f})")
        titles.append(f"step {t} {visible_char(trace.text[t])!r}: p = {np.exp(-s):.3f}, surprisal {s:.2f} nats")
    mean = sum(surprisal[trace.prompt_len - 1 :]) / max(1, len(surprisal) - trace.prompt_len + 1)
    legend = (f"Redder = more surprising to the model (−log p; full colour at {saturate_at:g} nats). "
              f"Mean over the generated characters: {mean:.2f} nats/char. Prompt underlined.")
    return text_html(trace, colors, titles, legend)


def activation_html(trace: Trace, kind: str, layer: int, unit: int) -> str:
    """The text coloured by one unit's reset gate, update gate or hidden state after reading each character."""
    values = gate_values(trace, kind)
    if not 0 <= layer < values.shape[0]:
        raise ValueError(f"layer must be from 1 to {values.shape[0]}")
    if not 0 <= unit < values.shape[2]:
        raise ValueError(f"unit must be from 0 to {values.shape[2] - 1}")
    series = values[layer, :, unit].tolist()
    low = -1.0 if kind == "hidden" else 0.0
    colors = [value_color(v, low) for v in series]
    titles = [f"step {t} {visible_char(c)!r}: {kind} = {v:.3f}" for t, (c, v) in enumerate(zip(trace.text, series))]
    legend = (f"Layer {layer + 1}, unit {unit}, {GATES[kind]} after reading each character: "
              f"<span style='background:rgba(76,120,168,.9);color:white'>&nbsp;{low:g}&nbsp;</span> … "
              f"<span style='background:rgba(228,87,86,.9);color:white'>&nbsp;1&nbsp;</span>")
    return text_html(trace, colors, titles, legend)
