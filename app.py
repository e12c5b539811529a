"""charrnn playground: watch a character-level GRU write, with its next-character probabilities and gates.

Layout and event wiring only; the logic lives in charrnn.playground and charrnn.figures.
Run: python app.py (CHARRNN_MODEL picks the model; the shipped weights/tiny-shakespeare by default).
"""

from __future__ import annotations

from dataclasses import replace

import gradio as gr
import torch

from charrnn import ModelLoadError
from charrnn import playground as pg

try:  # On a ZeroGPU Space, sampling asks for a GPU per call; elsewhere the decorator is not needed.
    import spaces

    on_gpu = spaces.GPU(duration=60)
except ImportError:
    def on_gpu(fn):
        return fn

MODELS = pg.ModelRegistry()
DEFAULT_KEY = pg.model_key(pg.default_model(), None)
DEFAULT_MODEL = MODELS.get(DEFAULT_KEY)
EXAMPLES = [
    ["ROMEO:\n", 300, 0.8, 0, 0.95, 1],
    ["First Citizen:\nBefore we proceed any further, hear me speak.\n\n", 400, 1.0, 0, 1.0, 7],
    ["KING RICHARD III:\nNow is the winter of our discontent\n", 300, 0, 0, 1.0, 0],
    ["JULIET:\nO Romeo, Romeo! ", 300, 1.2, 5, 1.0, 42],
    ["To be, or not to be", 200, 0.5, 0, 0.9, 3],
]
CSS = """
.gradio-container {max-width: 1400px !important}
#generated-text textarea {font-family: ui-monospace, monospace; font-size: 15px}
/* Figures lay out on their own: the streaming text must not make the browser lay out every plot again. */
#probabilities, #reset-gate, #update-gate, #saturation, #surprisal, #unit-text {contain: content}
"""


def layer_choices(model):
    return [(f"layer {k + 1}", k) for k in range(model.num_layers)]


def first_example():
    """The page opens with the first example already written, so its figures show what to expect."""
    prompt, max_new_chars, temperature, top_k, top_p, seed = EXAMPLES[0]
    trace = pg.generate(DEFAULT_MODEL, prompt, pg.check_inputs(DEFAULT_MODEL, *EXAMPLES[0]))
    return trace, pg.all_figures(trace, pg.View())


@on_gpu
def generate(prompt, max_new_chars, temperature, top_k, top_p, seed, model_key):
    """Write after the prompt, streaming the text; the API endpoint /generate. The figures follow (draw)."""
    model = MODELS.get(model_key)
    try:
        settings = pg.check_inputs(model, prompt, max_new_chars, temperature, top_k, top_p, seed)
    except pg.InputError as e:
        raise gr.Error(str(e), title="Cannot generate") from None
    for text, trace, seconds in pg.stream(model, prompt, settings):
        if trace is None:
            yield text, f"Writing… {len(text) - len(prompt):,} characters", gr.skip()
    yield trace.text, pg.summary(trace, seconds), trace


def draw(trace, view):
    shown = pg.all_figures(trace or OPENING_TRACE, view)
    return (shown["probabilities"], shown["reset"], shown["update"], shown["saturation"], shown["surprisal"],
            shown["unit"])


def load_model(source, revision):
    try:
        key = pg.model_key(source, revision)
        model = MODELS.get(key)
    except (pg.InputError, ModelLoadError) as e:
        raise gr.Error(f"{e}. The previous model stays in use.", title="Cannot load the model") from None
    gr.Info(f"Loaded {key}")
    choices = layer_choices(model)
    return (key, pg.describe_model(key, model), gr.update(choices=choices, value=0),
            gr.update(choices=choices, value=0), gr.update(maximum=model.hidden_size - 1, value=0),
            gr.update(maximum=model.hidden_size))


def redraw_gates(trace, view, layer, order, max_units):
    view = replace(view, layer=int(layer), order=order, max_units=int(max_units))
    return view, *pg.gate_figures(trace or OPENING_TRACE, view)


def redraw_unit(trace, view, kind, layer, unit):
    trace = trace or OPENING_TRACE
    hidden = trace.hidden.shape[2]
    try:
        unit = pg.whole_number(unit, "Unit", 0, hidden - 1)
    except pg.InputError as e:
        gr.Warning(str(e))
        return view, gr.skip()
    view = replace(view, unit_kind=kind, unit_layer=int(layer), unit=unit)
    return view, pg.unit_view(trace, view)


OPENING_TRACE, OPENING = first_example()

with gr.Blocks(title="charrnn: watch a GRU write") as demo:
    model_key = gr.State(DEFAULT_KEY)
    view = gr.State(pg.View())
    # The run being shown; None = the opening example (gr.State deep-copies its initial value for every
    # session: copying the tensors would be wasted work, and torch work off pg's compute thread slows decoding).
    trace = gr.State(None, time_to_live=3600)

    gr.Markdown(
        "# charrnn: watch a character-level GRU write\n"
        "Type a prompt, choose how to pick each next character, and watch the model write. Then step through "
        "what it predicted at every character, and how its reset and update gates responded.")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            prompt = gr.Textbox(EXAMPLES[0][0], lines=3, max_lines=8, label="Prompt")
            max_new_chars = gr.Slider(1, pg.MAX_NEW_CHARS, 300, step=1, label="Characters to write")
            temperature = gr.Slider(0, 2, 0.8, step=0.05, label="Temperature",
                                    info="0 = greedy: always the most likely character")
            top_k = gr.Slider(0, len(DEFAULT_MODEL.vocab), 0, step=1, label="Top-k",
                              info="keep only the k most likely characters; 0 = off")
            top_p = gr.Slider(0.01, 1, 0.95, step=0.01, label="Top-p",
                              info="keep the smallest most-likely-first set that reaches p; 1 = off")
            with gr.Row():
                seed = gr.Number(1, precision=0, label="Seed", info="same seed + settings = same text")
                new_seed = gr.Button("🎲 New seed", size="sm", scale=0, min_width=110)
            run = gr.Button("Generate", variant="primary")
        with gr.Column(scale=3):
            text = gr.Textbox(OPENING_TRACE.text, label="Text", lines=16, max_lines=16, interactive=False, buttons=["copy"],
                              elem_id="generated-text", autoscroll=True)
            status = gr.Markdown("An example, written when the page started: change the settings and press Generate.",
                                 elem_id="status")
            with gr.Accordion("Model", open=False):
                model_info = gr.Markdown(pg.describe_model(DEFAULT_KEY, DEFAULT_MODEL), elem_id="model-info")
                with gr.Row():
                    model_source = gr.Textbox(str(DEFAULT_KEY.source), label="Hub repo id or local folder", scale=3)
                    revision = gr.Textbox(label="Revision (optional)", placeholder="main", scale=1)
                load = gr.Button("Load model", size="sm")
    gr.Examples(EXAMPLES, [prompt, max_new_chars, temperature, top_k, top_p, seed], label="Examples")

    gr.Markdown("## Next-character probabilities, step by step\nLeft: the model's distribution (temperature 1). "
                "Right: what the settings left to sample from. Drag the slider through every step.")
    probabilities = gr.Plot(OPENING["probabilities"], label="Next-character probabilities", elem_id="probabilities")

    gr.Markdown("## Gates\nEach column is a step (the character read), each row a unit. The reset gate r_t "
                "decides how much of the previous state feeds the candidate; the update gate z_t near 1 keeps "
                "the old state, near 0 overwrites it.")
    with gr.Row():
        gate_layer = gr.Radio(layer_choices(DEFAULT_MODEL), value=0, label="Layer")
        order = gr.Radio([("most variable first", "variance"), ("unit index", "index")], value="variance",
                         label="Order units by")
        max_units = gr.Slider(8, DEFAULT_MODEL.hidden_size, 64, step=8, label="Units at most",
                              info="long texts show fewer, to keep each heatmap near 100,000 cells")
    reset_plot = gr.Plot(OPENING["reset"], label="Reset gate", elem_id="reset-gate")
    update_plot = gr.Plot(OPENING["update"], label="Update gate", elem_id="update-gate")

    gr.Markdown("## Gate behaviour at a glance\nEach dot is a unit: how often its gate was below 0.1 "
                "(left-saturated) against above 0.9 (right-saturated), as in Karpathy, Johnson & Fei-Fei (2015).")
    saturation_plot = gr.Plot(OPENING["saturation"], label="Gate saturation", elem_id="saturation")

    gr.Markdown("## The text, coloured\nHover a character for its numbers.")
    surprisal = gr.HTML(OPENING["surprisal"], elem_id="surprisal")
    with gr.Row():
        unit_kind = gr.Radio([("hidden state", "hidden"), ("reset gate", "reset"), ("update gate", "update")],
                             value="hidden", label="Colour by")
        unit_layer = gr.Radio(layer_choices(DEFAULT_MODEL), value=0, label="Layer")
        unit = gr.Number(0, precision=0, minimum=0, maximum=DEFAULT_MODEL.hidden_size - 1, label="Unit")
    unit_text = gr.HTML(OPENING["unit"], elem_id="unit-text")

    figures_out = [probabilities, reset_plot, update_plot, saturation_plot, surprisal, unit_text]
    # Two events: while the text streams only the text and status change (each streamed update costs the
    # browser work per output of the event), then the figures are drawn from the stored trace.
    run.click(generate, [prompt, max_new_chars, temperature, top_k, top_p, seed, model_key],
              [text, status, trace], api_name="generate", show_progress="hidden",
              concurrency_limit=4 if torch.cuda.is_available() else 2
              ).success(draw, [trace, view], figures_out, api_visibility="private", show_progress="hidden")
    new_seed.click(None, None, seed, js="() => Math.floor(Math.random() * 2147483647)")
    load.click(load_model, [model_source, revision],
               [model_key, model_info, gate_layer, unit_layer, unit, max_units], api_name="load_model")
    for control in (gate_layer, order, max_units):
        control.change(redraw_gates, [trace, view, gate_layer, order, max_units], [view, reset_plot, update_plot],
                       api_visibility="private")
    for control in (unit_kind, unit_layer, unit):
        control.change(redraw_unit, [trace, view, unit_kind, unit_layer, unit], [view, unit_text],
                       api_visibility="private")

demo.queue(default_concurrency_limit=2, max_size=64)
# No run history: it would copy every run's figures (megabytes) into the browser's localStorage.
LAUNCH = dict(css=CSS, theme=gr.themes.Soft(), head=pg.DRAW_EACH_PLOT_ONCE, show_error=True, run_history=False)

if __name__ == "__main__":
    demo.launch(**LAUNCH)
