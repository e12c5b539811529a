"""What the Write tab shows of a run, apart from its layout: how its figures are viewed (View), the figures of a
Trace built on the compute thread a few at a time, the status line, and the Model panel's description. The page's
script (page.js) goes into its <head>."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from ..decoding.trace import Trace
from ..decoding.unit import GRU_KINDS, KIND_NAMES, gates_of
from ..figures import run as figures
from ..models.shipped import shipped_model
from ..serving.compute import on_compute_thread
from ..serving.registry import ModelKey
from ..vocab import show_vocab

SHIPPED_MODEL = shipped_model()  # weights/tiny-shakespeare, in a checkout or an installed package
STREAM_EVERY_S = 0.25  # how often the page receives the growing text (more often slows 2-core machines)
MAX_VOCAB_SHOWN = 300
HEAD = f"<script>\n{Path(__file__).with_name('page.js').read_text(encoding='utf-8')}</script>"


def default_model() -> str:
    return os.environ.get("CHARRNN_MODEL") or SHIPPED_MODEL


@dataclass(frozen=True)
class View:
    """How the gate figures and the unit text view are shown; changing it redraws from the stored trace."""

    layer: int = 1  # from 1, as every layer a person sees
    order: str = "variance"
    max_units: int = 64
    pinned: tuple[int, ...] = ()  # units shown first
    window: int | None = None  # None: the whole run; else MAX_COLUMNS steps from this one (figures.step_columns)
    unit_kind: str = "hidden"
    unit_layer: int = 1
    unit: int = 0
    heatmaps: str = "gates"  # or "states": the kinds the heatmaps show (heatmap_kinds)

    def fitted(self, trace: Trace) -> "View":
        """The view clamped to the trace's model (a smaller model may have fewer layers or units) and run."""
        layers, steps, hidden = trace.hidden.shape
        window = self.window if self.window is not None and self.window < steps else None
        unit_kind = self.unit_kind if self.unit_kind in trace.kinds else "hidden"
        return replace(self, layer=min(self.layer, layers), unit_layer=min(self.unit_layer, layers),
                       unit=min(self.unit, hidden - 1), pinned=tuple(u for u in self.pinned if u < hidden),
                       window=window, unit_kind=unit_kind)


HEATMAPS = ("heatmap-1", "heatmap-2", "heatmap-3")  # the page's heatmap slots: a GRU shows two gates, an LSTM three


def heatmap_kinds(kinds: tuple, shown: str = "gates") -> tuple:
    """What the heatmaps show of a model of these kinds: its gates (a GRU's reset and update, an LSTM's input,
    forget and output), or its states (the hidden state; an LSTM's cell state too)."""
    gates = gates_of(kinds)
    return gates if shown == "gates" else tuple(kind for kind in kinds if kind not in gates)


def kind_choices(kinds: tuple) -> list[tuple[str, str]]:
    """(what it is, kind) for each of a model's kinds (a bigram's: the GRU's, as placeholders)."""
    return [(KIND_NAMES[kind], kind) for kind in (kinds or GRU_KINDS)]


NO_GATES = ("This model has no recurrent layers, so it has no gates: each next character depends on the last "
            "character alone (a bigram).")


def has_gates(trace: Trace) -> bool:
    return trace.hidden.shape[0] > 0


@on_compute_thread
def gate_figures(trace: Trace, view: View, timescale=None) -> dict:
    """{slot: the heatmap of one kind, or None for a slot this model leaves empty}: the view's kinds of the layer
    (heatmap_kinds), the same units in the same rows; `timescale` [layers, H] labels the units
    (Site.timescale)."""
    if not has_gates(trace):
        return dict(zip(HEATMAPS, [figures.message_figure(NO_GATES), figures.message_figure(NO_GATES), None]))
    view = view.fitted(trace)
    layer_timescale = None if timescale is None else timescale[view.layer - 1]
    rows = figures.heatmap_rows(trace, view.layer, view.order, view.max_units, view.pinned, view.window)
    kinds = heatmap_kinds(trace.kinds, view.heatmaps)
    return {slot: figures.gate_figure(trace, kind, view.layer, view.order, pinned=view.pinned, rows=rows,
                                      timescale=layer_timescale, window=view.window) if kind else None
            for slot, kind in zip(HEATMAPS, kinds + (None,) * (len(HEATMAPS) - len(kinds)))}


@on_compute_thread
def unit_view(trace: Trace, view: View) -> str:
    if not has_gates(trace):
        return f"<p>{NO_GATES}</p>"
    view = view.fitted(trace)
    return figures.activation_html(trace, view.unit_kind, view.unit_layer, view.unit)


@on_compute_thread
def text_figures(trace: Trace, view: View) -> dict:
    return {"probabilities": figures.probability_figure(trace), "surprisal": figures.surprisal_html(trace),
            "unit": unit_view(trace, view)}


@on_compute_thread
def saturation_figure(trace: Trace):
    return figures.saturation_figure(trace) if has_gates(trace) else figures.message_figure(NO_GATES)


def figures_in_turn(trace: Trace, view: View, timescale=None):
    """The page's figures of a run, a few at a time ({name: figure}), so that the browser draws the first while
    the next are built: the probabilities and the coloured texts, the gate heatmaps, the gate saturation."""
    yield text_figures(trace, view)
    yield gate_figures(trace, view, timescale)
    yield {"saturation": saturation_figure(trace)}


def all_figures(trace: Trace, view: View, timescale=None) -> dict:
    return {name: figure for part in figures_in_turn(trace, view, timescale) for name, figure in part.items()}


def earlier_summary(written: int, steps: int) -> str:
    return (f"Wrote {written:,} characters earlier (a recent run with these very settings, by you or another visitor: "
            f"the same settings write the same text); figures cover all {steps:,} steps.")


def summary(written: int, steps: int, seconds: float, model) -> str:
    return (f"Wrote {written:,} characters in {seconds:.2f} s on {device_description(model)} "
            f"({written / max(seconds, 1e-9):,.0f} chars/s); figures cover all {steps:,} steps.")


# ---- the Model panel ----

def device_description(model: nn.Module) -> str:
    device = next(model.parameters()).device
    if device.type == "cuda":
        return f"GPU ({torch.cuda.get_device_name(device)})"
    return f"CPU ({torch.get_num_threads()} threads)"


def describe_model(key: ModelKey, model: nn.Module) -> str:
    """The Model panel's Markdown: what the model is, how it was trained (what of that is well formed), and where
    it runs. The training figures come from config.json as published: anything malformed is left out."""
    parameters = sum(p.numel() for p in model.parameters())
    facts = [model.architecture, f"{parameters / 1e6:.1f}M parameters",
             *training_facts(getattr(model, "training_info", None))]
    vocab = show_vocab(model.vocab[:MAX_VOCAB_SHOWN])[1:-1]
    more = len(model.vocab) - MAX_VOCAB_SHOWN
    return (f"**{markdown_text(str(key))}**: {', '.join(facts)}. Sampling on **{device_description(model)}**.  \n"
            f"Vocabulary ({len(model.vocab):,} characters): {code_span(vocab)}"
            + (f" and {more:,} more" if more > 0 else ""))


def training_facts(training) -> list[str]:
    """What config.json's "training" says about the run, each fact only when its value is well formed."""
    if not isinstance(training, dict):
        return []
    facts = []
    loss = training.get("val_loss")
    if isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss) and loss >= 0:
        facts.append(f"validation loss {loss:.3f} nats/char")
    steps = training.get("steps_done")
    if isinstance(steps, int) and not isinstance(steps, bool) and 0 < steps < 10**12:
        facts.append(f"{steps:,} training steps")
    data = training.get("data")
    if short_line(data):
        facts.append(f"data {markdown_text(os.path.basename(data) or data)}")
    hardware = training.get("hardware")
    if short_line(hardware):
        facts.append(f"trained on {markdown_text(hardware)}")
    return facts


def short_line(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100 and value.isprintable()


def markdown_text(text: str) -> str:
    """text shown as itself in Markdown: no emphasis, links, images or HTML from a repo id or a config."""
    return re.sub(r"([\\`*_\[\]<>|!#~])", r"\\\1", text)


def code_span(text: str) -> str:
    """text as inline code, whatever backticks it holds."""
    longest = max(map(len, re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"`{text}`"
