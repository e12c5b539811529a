"""Figures for "why this character?": the attribution's bars (each a unit the page opens on a click), the patching
grid (layer x step), and the dose-response curves of a forced unit beside its control. Each takes the dict its
analysis (charrnn.analysis.attribution, charrnn.analysis.dose) returns."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from ..decoding.unit import KIND_NAMES, Unit
from ..vocab import visible_char
from .run import LAYER_COLORS, TEMPLATE

UP, DOWN = "#4c78a8", "#e45756"  # towards char_a, towards char_b
BARS = 15


def attribution_figure(result: dict, bars: int = BARS) -> go.Figure:
    """The last layer's largest exact terms and the largest gradient x activation terms before it, as horizontal
    bars labelled by unit ("L3 hidden 480"; a click opens the unit: layout.meta.charrnn.unit_bars)."""
    a, b = visible_char(result["char_a"]), visible_char(result["char_b"])
    exact = result["units"][:bars]
    approximate = result["approximate"][:bars]
    figure = go.Figure()
    figure.add_bar(y=[str(Unit(u["layer"], "hidden", u["unit"])) for u in exact][::-1],
                   x=[u["contribution"] for u in exact][::-1], orientation="h", name="exact (last layer)",
                   marker_color=[UP if u["contribution"] > 0 else DOWN for u in exact][::-1],
                   hovertemplate="%{y}: %{x:+.3f}<extra>exact</extra>")
    figure.add_bar(y=[f"{Unit(u['layer'], 'hidden', u['unit'])} @ step {u['step']}" for u in approximate][::-1],
                   x=[u["contribution"] for u in approximate][::-1], orientation="h",
                   name="gradient x activation (approximate)", marker_color="rgba(120,120,120,0.6)",
                   hovertemplate="%{y}: %{x:+.3f}<extra>approximate</extra>")
    figure.update_layout(
        template=TEMPLATE, height=max(320, 18 * (len(exact) + len(approximate)) + 120), barmode="overlay",
        title=dict(text=f"logit[{a!r}] − logit[{b!r}] = {result['logit_diff']:+.3f} at step {result['step']}: "
                        f"where it comes from", x=0.01, font_size=14),
        xaxis_title=f"contribution (→ {a!r}, ← {b!r})", legend=dict(orientation="h", y=-0.15),
        meta={"charrnn": {"unit_bars": True}}, margin=dict(l=170))
    return figure


def attribution_html(result: dict) -> str:
    """The split in words: the exact sum and the bias, and how much of the difference each layer's gradient x
    activation accounts for at that step (the approximation's coverage)."""
    a, b = visible_char(result["char_a"]), visible_char(result["char_b"])
    exact = sum(u["contribution"] for u in result["units"])
    shown = len(result["units"])
    coverage = "; ".join(f"layer {c['layer']} {c['sum']:+.3f}" + (f" ({c['fraction']:.0%})" if c["fraction"] is not None
                                                                 else "") for c in result["coverage"])
    return (f"<p>After reading step {result['step']}, the model gave {html.escape(repr(a))} a logit "
            f"{result['logit_diff']:+.3f} above {html.escape(repr(b))}. Exactly: the last layer's units add "
            f"{exact:+.3f} (the {shown} largest shown add up to that when all are listed) and the head's bias "
            f"{result['bias']:+.3f}. Earlier layers and steps have no exact split: their bars are gradient × "
            f"activation, a first-order approximation. Summed over each layer's units at this step it gives "
            f"{html.escape(coverage)} of the difference (exact for the last layer, less its bias). Click a bar to "
            f"open the unit.</p>")


def patch_figure(result: dict, corrupted: str) -> go.Figure:
    """Layer x step heatmap of the fraction restored; columns labelled by the corrupted text's characters."""
    grid = np.array(result["grid"])
    labels = [f"{t} {visible_char(c)}" for t, c in enumerate(corrupted)]
    figure = go.Figure(go.Heatmap(z=grid, x=labels, y=[f"layer {k}" for k in range(1, len(grid) + 1)],
                                  colorscale="RdBu", zmid=0, zmin=-1, zmax=1, colorbar=dict(title="restored"),
                                  hovertemplate="%{y}, step %{x}: %{z:.3f} restored<extra></extra>"))
    target, foil = visible_char(result["target"]), visible_char(result["foil"])
    figure.update_layout(template=TEMPLATE, height=140 + 50 * len(grid), title=dict(
        text=f"Patching the clean run's state into the corrupted one: how much of logit[{target!r}] − "
             f"logit[{foil!r}] comes back (clean {result['clean']:+.2f}, corrupted {result['corrupted']:+.2f})",
        x=0.01, font_size=13), xaxis=dict(type="category", tickangle=0, title="step: the corrupted character read"))
    return figure


def dose_figure(result: dict) -> go.Figure:
    """The statistic against the forced value: each sample a dot, the mean a line, the unit beside its control."""
    figure = go.Figure()
    values = result["values"]
    for i, (name, unit) in enumerate((("unit", result["unit"]), ("control", result["control"]))):
        runs = np.array(result["runs"][name])
        label = f"{Unit(result['layer'], result['kind'], unit)}" + (" (control)" if name == "control" else "")
        rho = result["rho"][name]
        color = LAYER_COLORS[i]
        figure.add_scatter(x=np.repeat(values, runs.shape[1]), y=runs.reshape(-1), mode="markers", showlegend=False,
                           marker=dict(color=color, opacity=0.35, size=6), hoverinfo="skip")
        figure.add_scatter(x=values, y=runs.mean(1), mode="lines+markers", marker_color=color,
                           name=f"{label}: Spearman ρ {'undefined' if rho is None else f'{rho:+.2f}'}")
    figure.update_layout(template=TEMPLATE, height=380, title=dict(
        text=f"{html.escape(result['statistic'])} of the text written with the unit forced "
             f"({result['samples']} samples per value)", x=0.01, font_size=14),
        xaxis_title=f"forced value of the {KIND_NAMES[result['kind']]}", yaxis_title=result["statistic"],
        legend=dict(orientation="h", y=-0.25))
    return figure
