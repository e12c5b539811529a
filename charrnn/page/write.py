"""The Write tab: a prompt and decoding settings in, the text streamed out, then the run's figures
(next-character probabilities step by step, gate heatmaps, gate saturation, the text coloured); a link to the
run and its numbers as files (charrnn.share). Opening the page with a link's query writes that run."""

from __future__ import annotations

import time
from dataclasses import replace

import gradio as gr

from .. import figures
from .. import playground as pg
from .. import share
from ..model import ModelLoadError
from ..runs import Recipe
from ..serving import ServerBusy
from .site import EXAMPLES, Site
from .whatif import branch_panel


def layer_choices(model):
    return [(f"layer {k + 1}", k) for k in range(model.num_layers)]


FIGURES = ("probabilities", "reset", "update", "saturation", "surprisal", "unit")  # as draw_out, after view, window


def window_choices(steps: int):
    """What the heatmaps may show of a run (figures.windows), -1 standing for the whole run."""
    return [(label, -1 if start is None else start) for label, start in figures.windows(steps)]


# The link's address is the page's own (wherever it is served), with the query built in Python (share.link_query).
COPY_LINK = """(query) => {
  const url = location.origin + location.pathname + query;
  if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
  return url;
}"""


def write_tab(site: Site, model_key: gr.State) -> dict:
    """Build the tab inside the current gr.Tab; returns the components other tabs use."""
    model = site.default_model
    opening = pg.all_figures(site.opening_trace, pg.View(), site.timescale(site.default_key))
    view = gr.State(pg.View())
    recipe = gr.State(None)  # the visitor's last run (None: the opening example)

    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            prompt = gr.Textbox(EXAMPLES[0][0], lines=3, max_lines=8, label="Prompt")
            max_new_chars = gr.Slider(1, pg.MAX_NEW_CHARS, 300, step=1, label="Characters to write")
            temperature = gr.Slider(0, pg.PAGE_MAX_TEMPERATURE, 0.8, step=0.05, label="Temperature",
                                    info="0 = greedy: always the most likely character")
            top_k = gr.Slider(0, len(model.vocab), 0, step=1, label="Top-k", elem_id="top-k",
                              info="keep only the k most likely characters; 0 = off")
            top_p = gr.Slider(pg.PAGE_MIN_TOP_P, 1, 0.95, step=0.01, label="Top-p",
                              info="keep the smallest most-likely-first set that reaches p; 1 = off")
            with gr.Row():
                seed = gr.Number(1, precision=0, label="Seed", info="same seed + settings = same text")
                new_seed = gr.Button("🎲 New seed", size="sm", scale=0, min_width=110)
            run = gr.Button("Generate", variant="primary")
            draw_figures = gr.Button("Draw the figures", visible="hidden", elem_id="draw-figures")
        with gr.Column(scale=3):
            text = gr.Textbox(site.opening_trace.text, label="Text", lines=16, max_lines=16, interactive=False,
                              buttons=["copy"], elem_id="generated-text", autoscroll=True)
            status = gr.Markdown("An example, written when the page started: change the settings and press Generate.",
                                 elem_id="status")
            branch_panel(site, text, recipe)  # click a character of the text: write another one there (What-if)
            with gr.Row():
                copy_link = gr.Button("🔗 Copy link to this run", size="sm", scale=0, min_width=200)
                export = gr.Button("⬇ Export this run (.npz, .csv)", size="sm", scale=0, min_width=220)
            link = gr.Textbox(label="Link to this run", placeholder="Copy link shows it here", interactive=False,
                              buttons=["copy"], elem_id="share-link", max_lines=2)
            export_files = gr.File(label="This run's numbers: gates, states and probabilities (.npz), steps (.csv)",
                                   file_count="multiple", interactive=False, visible=False, elem_id="export-files")
            with gr.Accordion("Model", open=False):
                model_info = gr.Markdown(pg.describe_model(site.default_key, model), elem_id="model-info")
                with gr.Row():
                    model_source = gr.Textbox(str(site.default_key.source), label="Hub repo id or local folder", scale=3)
                    revision = gr.Textbox(label="Revision (optional)", placeholder="main", scale=1)
                load = gr.Button("Load model", size="sm")
    gr.Examples(EXAMPLES, [prompt, max_new_chars, temperature, top_k, top_p, seed], label="Examples")

    gr.Markdown("## Next-character probabilities, step by step\nLeft: the model's distribution (temperature 1). "
                "Right: what the settings left to sample from. Drag the slider under the chart through every step "
                "(or use the arrow keys).")
    probabilities = gr.Plot(opening["probabilities"], label="Next-character probabilities", elem_id="probabilities")

    gr.Markdown("## Gates\nEach column is a step (the character read; hover for it), each row a unit, labelled "
                "`L3 u99 (τ 12)`: layer, unit and its memory timescale in steps, 1 / (1 − mean z_t) over the "
                "model's reference text. The reset gate r_t decides how much of the previous state feeds the "
                "candidate; the update gate z_t near 1 keeps the old state, near 0 overwrites it. Click a row to "
                "open that unit's profile.")
    with gr.Row():
        gate_layer = gr.Radio(layer_choices(model), value=0, label="Layer")
        order = gr.Radio([(label, name) for name, label in figures.ORDERS.items()], value=pg.View().order,
                         label="Order units",
                         info="alike: grouped by the built-in signal they follow (line position, vowel, ...)")
        max_units = gr.Slider(8, max(16, model.hidden_size), 64, step=8, label="Units at most",
                              info="fewer for long views, to keep each heatmap near 100,000 cells")
    with gr.Row():
        pinned = gr.Textbox(label="Pin units on top", placeholder="e.g. 99, 337", max_lines=1,
                            info="unit numbers of the layer shown; Enter to apply")
        window = gr.Dropdown(window_choices(len(site.opening_trace.text)), value=-1, label="Steps shown",
                             info="a long run is averaged over a few steps per column; pick a part for every step")
    reset_plot = gr.Plot(opening["reset"], label="Reset gate", elem_id="reset-gate")
    update_plot = gr.Plot(opening["update"], label="Update gate", elem_id="update-gate")
    # Written by the page's script when a heatmap row is clicked ("L3 reset 99"); the Units tab opens that unit.
    heatmap_unit = gr.Textbox(visible="hidden", elem_id="heatmap-unit", label="Unit clicked")

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

    def stream_run(key, model, values):
        """Write a run through the decode server, streaming (text, status, recipe); InputError or ServerBusy
        become a gr.Error."""
        try:
            settings = pg.check_inputs(model, *values)
            run = Recipe(key, values[0], settings)
            job = site.server.submit(model, run.request(model))
        except (pg.InputError, ServerBusy) as e:
            raise gr.Error(str(e), title="Cannot generate") from None
        started = time.perf_counter()
        with site.writing(run, job):  # the figures' event of the same click waits for it (draw_written)
            try:
                while not job.wait(pg.STREAM_EVERY_S):
                    yield job.text, f"Writing… {job.written:,} characters", gr.skip()
                job.result()
            finally:
                job.cancel()  # a visitor who leaves mid-run frees the row at the next step
            site.runs.keep(run, job)
        yield job.text, pg.summary(job.written, len(job.text), time.perf_counter() - started, model), run

    def generate(prompt, max_new_chars, temperature, top_k, top_p, seed, key):
        """Write after the prompt, streaming the text; the API endpoint /generate. The figures follow (draw)."""
        yield from stream_run(key, site.model(key), (prompt, max_new_chars, temperature, top_k, top_p, seed))

    def draw(run, view, trace=None):
        """The figures of the visitor's last run (nothing before their first, e.g. a page opened without a link),
        sent a few at a time: the browser draws the first while the server builds the next. The last update
        changes nothing, so that Gradio's closing message does not send a figure again."""
        if run is None:
            yield (gr.skip(),) * len(draw_out)
            return
        trace, view = trace or site.trace(run), replace(view, window=None)
        first = True
        for shown in pg.figures_in_turn(trace, view, site.timescale(run.model)):
            yield ((view, gr.update(choices=window_choices(len(trace.text)), value=-1)) if first
                   else (gr.skip(), gr.skip())) + tuple(shown.get(name, gr.skip()) for name in FIGURES)
            first = False
        yield (gr.skip(),) * len(draw_out)

    def draw_written(prompt, max_new_chars, temperature, top_k, top_p, seed, key, view):
        """The figures of the run that Generate writes, started with it: drawn as soon as the run is written,
        not after the text has gone to the browser and a new event come back. Nothing when it is not written
        (generate says why)."""
        try:
            model = site.model(key)
            settings = pg.check_inputs(model, prompt, max_new_chars, temperature, top_k, top_p, seed)
        except (pg.InputError, ModelLoadError):
            yield (gr.skip(),) * len(draw_out)
            return
        run = Recipe(key, prompt, settings)
        trace = site.written(run)
        if trace is None:
            yield (gr.skip(),) * len(draw_out)
            return
        yield from draw(run, view, trace)

    def model_controls(key, model, top_k=None):
        """The model's key and description, and the controls whose range is the model's: the gate and unit
        layers, the unit, the units shown, Top-k (up to the vocabulary's size; set to `top_k` when given)."""
        top_k_range = gr.update(maximum=len(model.vocab), **({} if top_k is None else {"value": top_k}))
        if not model.num_layers:  # a bigram: no layers or units to choose (its figures say so); the controls stay
            return key, pg.describe_model(key, model), *[gr.skip()] * 4, top_k_range
        choices = layer_choices(model)
        return (key, pg.describe_model(key, model), gr.update(choices=choices, value=0),
                gr.update(choices=choices, value=0), gr.update(maximum=model.hidden_size - 1, value=0),
                gr.update(maximum=max(16, model.hidden_size)), top_k_range)  # at most: more than there are is all

    def load_model(source, revision):
        try:
            key = pg.model_key(source, revision)
            model = site.model(key)
        except (pg.InputError, ModelLoadError) as e:
            raise gr.Error(f"{e}. The previous model stays in use.", title="Cannot load the model") from None
        gr.Info(f"Loaded {key}")
        return model_controls(key, model)

    link_defaults = dict(zip(share.SETTINGS, EXAMPLES[0]))

    def open_link(request: gr.Request):
        """A page opened with a link's query: its values in the controls, its run written (streamed)."""
        query = request.query_params if request is not None else {}
        if not share.is_link(query):
            yield (gr.skip(),) * len(link_out)
            return
        link = share.read_link(query, link_defaults, site.default_key, site.model)
        for warning in link.warnings:
            gr.Warning(warning, title="Part of the link was not used")
        prompt_now, chars_now, temperature_now, top_k_now, top_p_now, seed_now = link.settings
        controls = (prompt_now, chars_now, temperature_now, top_p_now, seed_now, link.model_key.source,
                    link.model_key.revision or "", *model_controls(link.model_key, link.model, top_k_now))
        try:
            for i, (text_now, status_now, run_now) in enumerate(stream_run(link.model_key, link.model, link.settings)):
                yield *(controls if i == 0 else (gr.skip(),) * len(controls)), text_now, status_now, run_now
        except gr.Error as e:  # the page still opens, with the link's values in place
            gr.Warning(str(e), title="Cannot write the link's run")
            yield *controls, gr.skip(), gr.skip(), gr.skip()

    def link_to(run):
        return share.link_query(run or site.opening, site.default_key)

    def export_last(run):
        """The files of the visitor's last run (the opening example before their first)."""
        run = run or site.opening
        files = site.exports.export(site.trace(run), run.model)
        return gr.update(value=[str(f) for f in files], visible=True)

    def export_run(prompt, max_new_chars, temperature, top_k, top_p, seed, key):
        """The run these settings write, as a .npz file (charrnn.share); the API endpoint /export."""
        model = site.model(key)
        for *_, run in stream_run(key, model, (prompt, max_new_chars, temperature, top_k, top_p, seed)):
            pass
        return str(site.exports.export(site.trace(run), key)[0])

    def redraw_gates(run, view, layer, order, max_units, pinned, window):
        trace = site.trace(run)
        try:
            pinned = pg.pinned_units(pinned, trace.hidden.shape[2])
        except pg.InputError as e:
            gr.Warning(str(e))
            return gr.skip(), gr.skip(), gr.skip()
        window = None if window is None or int(window) < 0 else int(window)
        view = replace(view, layer=int(layer), order=order, max_units=int(max_units), pinned=pinned, window=window)
        return view, *pg.gate_figures(trace, view, site.timescale(run.model if run else site.default_key))

    def redraw_unit(run, view, kind, layer, unit):
        trace = site.trace(run)
        try:
            unit = pg.whole_number(unit, "Unit", 0, trace.hidden.shape[2] - 1)
        except pg.InputError as e:
            gr.Warning(str(e))
            return view, gr.skip()
        view = replace(view, unit_kind=kind, unit_layer=int(layer), unit=unit)
        return view, pg.unit_view(trace, view)

    draw_out = [view, window, probabilities, reset_plot, update_plot, saturation_plot, surprisal, unit_text]
    limits = site.server.limits
    # Two events for one click: the text streams in one (only the text and status change: each streamed update
    # costs the browser work per output of the event); the other waits on the server for the run to be written
    # and sends its figures from the trace. Gradio runs the events of one trigger one after the other, so the
    # figures' event has a trigger of its own, a hidden button the click presses first. Every visitor's request
    # reaches the decode server at once (it batches them); the server bounds how many it takes.
    settings_in = [prompt, max_new_chars, temperature, top_k, top_p, seed, model_key]
    run.click(None, js="() => { document.querySelector('#draw-figures').click(); }")
    run.click(generate, settings_in, [text, status, recipe], api_name="generate", show_progress="hidden",
              concurrency_limit=limits.max_rows + limits.max_waiting)
    draw_figures.click(draw_written, [*settings_in, view], draw_out, api_visibility="private",
                       show_progress="hidden", concurrency_limit=limits.max_rows + limits.max_waiting)
    link_out = [prompt, max_new_chars, temperature, top_p, seed, model_source, revision, model_key, model_info,
                gate_layer, unit_layer, unit, max_units, top_k, text, status, recipe]
    gr.context.Context.root_block.load(  # the Blocks being built: its load event reads the page's address
        open_link, None, link_out, api_visibility="private", show_progress="hidden",
        concurrency_limit=limits.max_rows + limits.max_waiting
    ).success(draw, [recipe, view], draw_out, api_visibility="private", show_progress="hidden")
    copy_link.click(link_to, recipe, link, api_visibility="private").then(None, link, link, js=COPY_LINK)
    export.click(export_last, recipe, export_files, api_visibility="private")
    # /export takes the settings, as /generate does; the page's button above exports the visitor's last run.
    export_api, export_file = gr.Button(visible=False), gr.File(visible=False)
    export_api.click(export_run, settings_in, export_file, api_name="export")
    new_seed.click(None, None, seed, js="() => Math.floor(Math.random() * 2147483647)")
    load.click(load_model, [model_source, revision],
               [model_key, model_info, gate_layer, unit_layer, unit, max_units, top_k], api_name="load_model")
    gate_view = [recipe, view, gate_layer, order, max_units, pinned, window]
    for control in (gate_layer, order, max_units):
        control.change(redraw_gates, gate_view, [view, reset_plot, update_plot], api_visibility="private")
    # the person's choice only: a new run resets the choices (draw), which must not draw the heatmaps again
    window.input(redraw_gates, gate_view, [view, reset_plot, update_plot], api_visibility="private")
    pinned.submit(redraw_gates, gate_view, [view, reset_plot, update_plot], api_visibility="private")
    for control in (unit_kind, unit_layer, unit):
        control.change(redraw_unit, [recipe, view, unit_kind, unit_layer, unit], [view, unit_text],
                       api_visibility="private")
    return {"prompt": prompt, "max_new_chars": max_new_chars, "temperature": temperature, "top_k": top_k,
            "top_p": top_p, "seed": seed, "text": text, "recipe": recipe, "run": run, "heatmap_unit": heatmap_unit}
