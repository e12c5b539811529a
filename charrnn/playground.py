"""What the playground page does, apart from its layout: checking inputs, the models (charrnn.registry),
streaming a generation and turning its Trace into figures. app.py wires these to Gradio components."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path


from . import figures
from .gates import Trace
from .compute import on_compute_thread
from .model import CharRNN
from .registry import ModelKey, ModelRegistry, describe_model, device_description  # noqa: F401 (the page's)
from .sampling import MAX_SEED, DecodeSettings
from .shipped_models import shipped_model
from .vocab import UnknownCharactersError

SHIPPED_MODEL = shipped_model()  # weights/tiny-shakespeare, in a checkout or an installed package
MAX_NEW_CHARS = 2000  # the page's caps; the library has none
MAX_PROMPT_CHARS = 2000  # a run records every step it reads: the prompt is bounded like what is written
MAX_TEMPERATURE = 5.0
# The page's sliders (a link's values must fit them too: Gradio refuses a slider value outside its range).
PAGE_MAX_TEMPERATURE, PAGE_MIN_TOP_P = 2.0, 0.01
MAX_PINNED = 32
STREAM_EVERY_S = 0.25  # how often the page receives the growing text (more often slows 2-core machines)
MAX_SOURCE_CHARS, MAX_REVISION_CHARS = 500, 200


# For the page's <head>. gr.Plot (Gradio 6) draws every new figure twice: its plotly component first redraws
# the plot that is about to be replaced, then Gradio re-creates the component, which draws into a new element.
# A plot drawn before is redrawn only after the current task, and not at all if it has left the page by then;
# a new element is drawn at once (so nothing blinks). One draw per figure: in headless Chromium on 2 cores,
# 300 characters went from 1.7-2.0 s to 1.4 s from click to all figures (python bench/page.py).
DRAW_EACH_PLOT_ONCE = """<script>
(() => {
  const patch = (plotly) => {
    if (!plotly || plotly.charrnnDrawOnce) return;
    const react = plotly.react;
    const counts = {drawn: 0, skipped: 0};  // read by the browser test
    const draw = (plot, args) => {
      const shown = plot.isConnected;
      counts[shown ? "drawn" : "skipped"] += 1;
      if (!shown) return Promise.resolve(plot);
      const page = window.charrnnPage;  // charrnn/page.js: compact figures expanded, heatmap clicks
      if (page) page.expand(args[0], args[1]);
      const done = react.call(plotly, plot, ...args);
      return page ? Promise.resolve(done).then((result) => { page.drawn(plot); return result; }) : done;
    };
    plotly.react = (plot, ...args) => plot._fullLayout
      ? new Promise((done) => setTimeout(() => done(draw(plot, args)), 0))
      : draw(plot, args);
    plotly.charrnnDrawOnce = counts;
  };
  let current = window.Plotly;
  patch(current);
  Object.defineProperty(window, "Plotly", {configurable: true, get: () => current,
                                           set: (plotly) => { patch(plotly); current = plotly; }});
})();
</script>"""


# The rest of the page's script: the compact figures and texts of charrnn.figures expanded in the browser.
PAGE_SCRIPT = f"<script>\n{(Path(__file__).with_name('page.js')).read_text(encoding='utf-8')}</script>"
HEAD = DRAW_EACH_PLOT_ONCE + PAGE_SCRIPT


def default_model() -> str:
    return os.environ.get("CHARRNN_MODEL") or SHIPPED_MODEL


class InputError(ValueError):
    """Something the person typed or chose cannot be used; the message says what is allowed."""


def model_key(source: str | None, revision: str | None) -> ModelKey:
    source, revision = (source or "").strip(), (revision or "").strip() or None
    if not source:
        raise InputError("Model: give a Hugging Face Hub repo id (owner/name) or a local folder")
    if len(source) > MAX_SOURCE_CHARS or len(revision or "") > MAX_REVISION_CHARS:
        raise InputError(f"Model: the repo id or folder may have up to {MAX_SOURCE_CHARS} characters and the "
                         f"revision up to {MAX_REVISION_CHARS}")
    return ModelKey(source, revision)


def whole_number(value, name: str, low: int, high: int) -> int:
    if isinstance(value, str):
        value = value.strip()
        try:
            value = int(value) if value.lstrip("+-").isdigit() else float(value)  # int(): seeds up to 2**63 - 1
        except ValueError:
            raise InputError(f"{name} must be a whole number from {low:,} to {high:,}, not {value!r}") from None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value != int(value) or not low <= value <= high:
        raise InputError(f"{name} must be a whole number from {low:,} to {high:,}, not {value!r}")
    return int(value)


def number(value, name: str, low: float, high: float, low_open: bool = False) -> float:
    given = value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    bad = (value is None or isinstance(value, bool) or not isinstance(value, (int, float))
           or not math.isfinite(value) or value > high or (value <= low if low_open else value < low))
    if bad:
        interval = f"{'above' if low_open else 'from'} {low:g} {'up to' if low_open else 'to'} {high:g}"
        raise InputError(f"{name} must be a number {interval}, not {given!r}")
    return float(value)


def check_prompt(model: CharRNN, prompt) -> str:
    if not isinstance(prompt, str) or not prompt:
        raise InputError("The prompt is empty: type at least one character for the model to start from")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"The prompt is {len(prompt):,} characters long; the page takes at most "
                         f"{MAX_PROMPT_CHARS:,} (the library has no limit)")
    check_known(model, prompt)
    return prompt


def check_inputs(model: CharRNN, prompt, max_new_chars, temperature, top_k, top_p, seed) -> DecodeSettings:
    """The page's inputs as DecodeSettings, or InputError naming what is wrong and what is allowed."""
    check_prompt(model, prompt)
    return DecodeSettings(
        max_new_chars=whole_number(max_new_chars, "Number of characters", 1, MAX_NEW_CHARS),
        temperature=number(temperature, "Temperature", 0, MAX_TEMPERATURE),
        top_k=whole_number(top_k, "Top-k", 0, len(model.vocab)),
        top_p=number(top_p, "Top-p", 0, 1, low_open=True),
        seed=whole_number(seed, "Seed", 0, MAX_SEED),
    )


def check_known(model, text: str) -> None:
    """InputError naming the characters of `text` outside the model's vocabulary, and those allowed."""
    unknown = model.tokenizer.unknown(text)
    if unknown:
        raise InputError(str(UnknownCharactersError(unknown, model.vocab)).replace(
            " (or drop unknown characters instead)", ": remove or replace them"))


@dataclass(frozen=True)
class View:
    """How the gate figures and the unit text view are shown; changing it redraws from the stored trace."""

    layer: int = 0  # 0-based
    order: str = "variance"
    max_units: int = 64
    pinned: tuple[int, ...] = ()  # units shown first
    window: int | None = None  # None: the whole run; else MAX_COLUMNS steps from this one (figures.step_columns)
    unit_kind: str = "hidden"
    unit_layer: int = 0
    unit: int = 0

    def fitted(self, trace: Trace) -> "View":
        """The view clamped to the trace's model (a smaller model may have fewer layers or units) and run."""
        layers, steps, hidden = trace.hidden.shape
        window = self.window if self.window is not None and self.window < steps else None
        return replace(self, layer=min(self.layer, layers - 1), unit_layer=min(self.unit_layer, layers - 1),
                       unit=min(self.unit, hidden - 1), pinned=tuple(u for u in self.pinned if u < hidden),
                       window=window)


def pinned_units(text, hidden: int) -> tuple[int, ...]:
    """ "99, 337" -> (99, 337): the units to pin on top of the heatmaps, or InputError saying what is allowed."""
    text = (text or "").strip()
    if len(text) > 400:
        raise InputError(f"Pinned units: at most {MAX_PINNED} unit numbers, separated by commas or spaces")
    parts = [p for p in text.replace(",", " ").split() if p]
    if len(parts) > MAX_PINNED:
        raise InputError(f"Pinned units: at most {MAX_PINNED}, not {len(parts)}")
    return tuple(dict.fromkeys(whole_number(p, "Pinned unit", 0, hidden - 1) for p in parts))


NO_GATES = ("This model has no recurrent layers, so it has no gates: each next character depends on the last "
            "character alone (a bigram).")


def has_gates(trace: Trace) -> bool:
    return trace.hidden.shape[0] > 0


@on_compute_thread
def gate_figures(trace: Trace, view: View, timescale=None):
    """The reset and update gate heatmaps; `timescale` [layers, H] labels the units (Site.timescale)."""
    if not has_gates(trace):
        return figures.message_figure(NO_GATES), figures.message_figure(NO_GATES)
    view = view.fitted(trace)
    layer_timescale = None if timescale is None else timescale[view.layer]
    rows = figures.heatmap_rows(trace, view.layer, view.order, view.max_units, view.pinned, view.window)
    return tuple(figures.gate_figure(trace, kind, view.layer, view.order, pinned=view.pinned, rows=rows,
                                     timescale=layer_timescale, window=view.window) for kind in ("reset", "update"))


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
    yield dict(zip(("reset", "update"), gate_figures(trace, view, timescale)))
    yield {"saturation": saturation_figure(trace)}


def all_figures(trace: Trace, view: View, timescale=None) -> dict:
    return {name: figure for part in figures_in_turn(trace, view, timescale) for name, figure in part.items()}


def summary(written: int, steps: int, seconds: float, model: CharRNN) -> str:
    return (f"Wrote {written:,} characters in {seconds:.2f} s on {device_description(model)} "
            f"({written / max(seconds, 1e-9):,.0f} chars/s); figures cover all {steps:,} steps.")
