"""The Write tab: a prompt and decoding settings in, the text streamed out, then the run's figures
(next-character probabilities step by step, gate heatmaps, gate saturation, the text coloured)."""

from __future__ import annotations

import time
from dataclasses import replace

import gradio as gr

from .. import playground as pg
from ..model import ModelLoadError
from ..runs import Recipe
from ..serving import ServerBusy
from .site import EXAMPLES, Site
from .whatif import branch_panel


def layer_choices(model):
    return [(f"layer {k + 1}", k) for k in range(model.num_layers)]


def write_tab(site: Site, model_key: gr.State) -> dict:
    """Build the tab inside the current gr.Tab; returns the components other tabs use."""
    model = site.default_model
    opening = pg.all_figures(site.opening_trace, pg.View())
    view = gr.State(pg.View())
    recipe = gr.State(None)  # the visitor's last run (None: the opening example)

    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            prompt = gr.Textbox(EXAMPLES[0][0], lines=3, max_lines=8, label="Prompt")
            max_new_chars = gr.Slider(1, pg.MAX_NEW_CHARS, 300, step=1, label="Characters to write")
            temperature = gr.Slider(0, 2, 0.8, step=0.05, label="Temperature",
                                    info="0 = greedy: always the most likely character")
            top_k = gr.Slider(0, len(model.vocab), 0, step=1, label="Top-k",
                              info="keep only the k most likely characters; 0 = off")
            top_p = gr.Slider(0.01, 1, 0.95, step=0.01, label="Top-p",
                              info="keep the smallest most-likely-first set that reaches p; 1 = off")
            with gr.Row():
                seed = gr.Number(1, precision=0, label="Seed", info="same seed + settings = same text")
                new_seed = gr.Button("🎲 New seed", size="sm", scale=0, min_width=110)
            run = gr.Button("Generate", variant="primary")
        with gr.Column(scale=3):
            text = gr.Textbox(site.opening_trace.text, label="Text", lines=16, max_lines=16, interactive=False,
                              buttons=["copy"], elem_id="generated-text", autoscroll=True)
            status = gr.Markdown("An example, written when the page started: change the settings and press Generate.",
                                 elem_id="status")
            branch_panel(site, text, recipe)  # click a character of the text: write another one there (What-if)
            with gr.Accordion("Model", open=False):
                model_info = gr.Markdown(pg.describe_model(site.default_key, model), elem_id="model-info")
                with gr.Row():
                    model_source = gr.Textbox(str(site.default_key.source), label="Hub repo id or local folder", scale=3)
                    revision = gr.Textbox(label="Revision (optional)", placeholder="main", scale=1)
                load = gr.Button("Load model", size="sm")
    gr.Examples(EXAMPLES, [prompt, max_new_chars, temperature, top_k, top_p, seed], label="Examples")

    gr.Markdown("## Next-character probabilities, step by step\nLeft: the model's distribution (temperature 1). "
                "Right: what the settings left to sample from. Drag the slider through every step.")
    probabilities = gr.Plot(opening["probabilities"], label="Next-character probabilities", elem_id="probabilities")

    gr.Markdown("## Gates\nEach column is a step (the character read), each row a unit. The reset gate r_t "
                "decides how much of the previous state feeds the candidate; the update gate z_t near 1 keeps "
                "the old state, near 0 overwrites it.")
    with gr.Row():
        gate_layer = gr.Radio(layer_choices(model), value=0, label="Layer")
        order = gr.Radio([("most variable first", "variance"), ("unit index", "index")], value="variance",
                         label="Order units by")
        max_units = gr.Slider(8, model.hidden_size, 64, step=8, label="Units at most",
                              info="long texts show fewer, to keep each heatmap near 100,000 cells")
    reset_plot = gr.Plot(opening["reset"], label="Reset gate", elem_id="reset-gate")
    update_plot = gr.Plot(opening["update"], label="Update gate", elem_id="update-gate")

    gr.Markdown("## Gate behaviour at a glance\nEach dot is a unit: how often its gate was below 0.1 "
                "(left-saturated) against above 0.9 (right-saturated), as in Karpathy, Johnson & Fei-Fei (2015).")
    saturation_plot = gr.Plot(opening["saturation"], label="Gate saturation", elem_id="saturation")

    gr.Markdown("## The text, coloured\nHover a character for its numbers.")
    surprisal = gr.HTML(opening["surprisal"], elem_id="surprisal")
    with gr.Row():
        unit_kind = gr.Radio([("hidden state", "hidden"), ("reset gate", "reset"), ("update gate", "update")],
                             value="hidden", label="Colour by")
        unit_layer = gr.Radio(layer_choices(model), value=0, label="Layer")
        unit = gr.Number(0, precision=0, minimum=0, maximum=model.hidden_size - 1, label="Unit")
    unit_text = gr.HTML(opening["unit"], elem_id="unit-text")

    def generate(prompt, max_new_chars, temperature, top_k, top_p, seed, key):
        """Write after the prompt, streaming the text; the API endpoint /generate. The figures follow (draw)."""
        model = site.model(key)
        try:
            settings = pg.check_inputs(model, prompt, max_new_chars, temperature, top_k, top_p, seed)
            run = Recipe(key, prompt, settings)
            job = site.server.submit(model, run.request(model))
        except (pg.InputError, ServerBusy) as e:
            raise gr.Error(str(e), title="Cannot generate") from None
        started = time.perf_counter()
        try:
            while not job.wait(pg.STREAM_EVERY_S):
                yield job.text, f"Writing… {job.written:,} characters", gr.skip()
            job.result()
        finally:
            job.cancel()  # a visitor who leaves mid-run frees the row at the next step
        site.runs.keep(run, job)
        yield job.text, pg.summary(job.written, len(job.text), time.perf_counter() - started, model), run

    def draw(run, view):
        shown = pg.all_figures(site.trace(run), view)
        return (shown["probabilities"], shown["reset"], shown["update"], shown["saturation"], shown["surprisal"],
                shown["unit"])

    def load_model(source, revision):
        try:
            key = pg.model_key(source, revision)
            model = site.model(key)
        except (pg.InputError, ModelLoadError) as e:
            raise gr.Error(f"{e}. The previous model stays in use.", title="Cannot load the model") from None
        gr.Info(f"Loaded {key}")
        if not model.num_layers:  # a bigram: no layers or units to choose (its figures say so); the controls stay
            return key, pg.describe_model(key, model), *[gr.skip()] * 4
        choices = layer_choices(model)
        return (key, pg.describe_model(key, model), gr.update(choices=choices, value=0),
                gr.update(choices=choices, value=0), gr.update(maximum=model.hidden_size - 1, value=0),
                gr.update(maximum=model.hidden_size))

    def redraw_gates(run, view, layer, order, max_units):
        view = replace(view, layer=int(layer), order=order, max_units=int(max_units))
        return view, *pg.gate_figures(site.trace(run), view)

    def redraw_unit(run, view, kind, layer, unit):
        trace = site.trace(run)
        try:
            unit = pg.whole_number(unit, "Unit", 0, trace.hidden.shape[2] - 1)
        except pg.InputError as e:
            gr.Warning(str(e))
            return view, gr.skip()
        view = replace(view, unit_kind=kind, unit_layer=int(layer), unit=unit)
        return view, pg.unit_view(trace, view)

    figures_out = [probabilities, reset_plot, update_plot, saturation_plot, surprisal, unit_text]
    limits = site.server.limits
    # Two events: while the text streams only the text and status change (each streamed update costs the
    # browser work per output of the event), then the figures are drawn from the run's trace. Every visitor's
    # request reaches the decode server at once (it batches them); the server bounds how many it takes.
    run.click(generate, [prompt, max_new_chars, temperature, top_k, top_p, seed, model_key],
              [text, status, recipe], api_name="generate", show_progress="hidden",
              concurrency_limit=limits.max_rows + limits.max_waiting
              ).success(draw, [recipe, view], figures_out, api_visibility="private", show_progress="hidden")
    new_seed.click(None, None, seed, js="() => Math.floor(Math.random() * 2147483647)")
    load.click(load_model, [model_source, revision],
               [model_key, model_info, gate_layer, unit_layer, unit, max_units], api_name="load_model")
    for control in (gate_layer, order, max_units):
        control.change(redraw_gates, [recipe, view, gate_layer, order, max_units], [view, reset_plot, update_plot],
                       api_visibility="private")
    for control in (unit_kind, unit_layer, unit):
        control.change(redraw_unit, [recipe, view, unit_kind, unit_layer, unit], [view, unit_text],
                       api_visibility="private")
    return {"prompt": prompt, "max_new_chars": max_new_chars, "temperature": temperature, "top_k": top_k,
            "top_p": top_p, "seed": seed, "text": text, "recipe": recipe, "run": run}
