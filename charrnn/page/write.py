"""The Write tab: a prompt and decoding settings in, the text streamed out, then the run's figures
(next-character probabilities step by step, gate heatmaps, gate saturation, the text coloured); a link to the
run and its numbers as files (charrnn.page.share). Opening the page with a link's query writes that run."""

from __future__ import annotations

import time
from dataclasses import replace

import gradio as gr

from ..figures import run as figures
from ..models.loading import ModelLoadError
from ..serving.runs import Recipe
from ..serving.server import ServerBusy
from . import inputs, share
from .site import EXAMPLES, START_S, Site
from .views import (HEATMAPS, STREAM_EVERY_S, View, all_figures, describe_model, earlier_summary, figures_in_turn,
                    gate_figures, kind_choices, summary, unit_view)
from .whatif import branch_panel
from .why import Why

FIGURES = ("probabilities", *HEATMAPS, "saturation", "surprisal", "unit")  # as draw_out, after view and window


def shown_in(slot: str, figure, kinds: tuple):
    """A heatmap slot's update. The first two always hold a figure; the third holds an LSTM's third gate, and is
    hidden while an LSTM's states are shown; a GRU leaves it hidden (model_controls), untouched here: an update
    of a component's visibility makes Gradio mount it again."""
    if slot != HEATMAPS[-1]:
        return figure
    if figure is not None:
        return gr.update(value=figure, visible=True)
    return gr.update(visible=False) if len(kinds) > len(HEATMAPS) else gr.skip()


def place(request: gr.Request | None):
    """Where a visitor's runs on this tab replace one another (Site.begin): their session's, on the Write tab."""
    session = getattr(request, "session_hash", None)
    return (session, "write") if session else None


def layer_choices(model):
    return [(f"layer {k}", k) for k in range(1, model.num_layers + 1)]


def window_choices(steps: int):
    """What the heatmaps may show of a run (figures.windows), -1 standing for the whole run."""
    return [(label, -1 if start is None else start) for label, start in figures.windows(steps)]


class WriteTab:
    """Builds the tab inside the current gr.Tab: the controls and the text, the figures, then the events."""

    def __init__(self, site: Site, model_key: gr.State, why: Why):
        self.site, self.model_key = site, model_key
        self.view = gr.State(View())
        self.recipe = gr.State(None)  # the visitor's last run (None: the opening example)
        self.writing_panel(site.default_model, why)
        opening = all_figures(site.opening_trace, View(), site.timescale(site.default_key))
        self.figure_panels(site.default_model, opening)
        self.wire()

    def components(self) -> dict:
        """What the other tabs use."""
        return {"prompt": self.prompt, "max_new_chars": self.max_new_chars, "temperature": self.temperature,
                "top_k": self.top_k, "top_p": self.top_p, "seed": self.seed, "text": self.text,
                "recipe": self.recipe, "run": self.run, "heatmap_unit": self.heatmap_unit}

    # ---- the layout ----

    def writing_panel(self, model, why: Why) -> None:
        site = self.site
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                self.prompt = gr.Textbox(EXAMPLES[0][0], lines=3, max_lines=8, label="Prompt")
                self.max_new_chars = gr.Slider(1, inputs.MAX_NEW_CHARS, 300, step=1, label="Characters to write")
                self.temperature = gr.Slider(0, inputs.PAGE_MAX_TEMPERATURE, 0.8, step=0.05, label="Temperature",
                                             info="0 = greedy: always the most likely character")
                self.top_k = gr.Slider(0, len(model.vocab), 0, step=1, label="Top-k", elem_id="top-k",
                                       info="keep only the k most likely characters; 0 = off")
                self.top_p = gr.Slider(inputs.PAGE_MIN_TOP_P, 1, 0.95, step=0.01, label="Top-p",
                                       info="keep the smallest most-likely-first set that reaches p; 1 = off")
                with gr.Row():
                    self.seed = gr.Number(1, precision=0, label="Seed", info="same seed + settings = same text")
                    self.new_seed = gr.Button("🎲 New seed", size="sm", scale=0, min_width=110)
                self.run = gr.Button("Generate", variant="primary")
                self.draw_figures = gr.Button("Draw the figures", visible="hidden", elem_id="draw-figures")
                self.draw_link_figures = gr.Button("Draw the link's figures", visible="hidden",
                                                   elem_id="draw-link-figures")
            with gr.Column(scale=3):
                self.text = gr.Textbox(site.opening_trace.text, label="Text", lines=16, max_lines=16,
                                       interactive=False, buttons=["copy"], elem_id="generated-text", autoscroll=True)
                self.status = gr.Markdown("An example, written when the page started: change the settings and press "
                                          "Generate.", elem_id="status")
                # click a character: write another one there (What-if), or ask why the model chose it
                branch_panel(site, self.text, self.recipe, why)
                with gr.Row():
                    self.copy_link = gr.Button("🔗 Copy link to this run", size="sm", scale=0, min_width=200)
                    self.export = gr.Button("⬇ Export this run (.npz, .csv)", size="sm", scale=0, min_width=220)
                self.link = gr.Textbox(label="Link to this run", placeholder="Copy link shows it here",
                                       interactive=False, buttons=["copy"], elem_id="share-link", max_lines=2)
                self.export_files = gr.File(label="This run's numbers: gates, states and probabilities (.npz), "
                                                  "steps (.csv)", file_count="multiple", interactive=False,
                                            visible=False, elem_id="export-files")
                with gr.Accordion("Model", open=False):
                    self.model_info = gr.Markdown(describe_model(site.default_key, model), elem_id="model-info")
                    with gr.Row():
                        self.model_source = gr.Textbox(str(site.default_key.source),
                                                       label="Hub repo id or local folder", scale=3)
                        self.revision = gr.Textbox(label="Revision (optional)", placeholder="main", scale=1)
                    self.load = gr.Button("Load model", size="sm")
        gr.Examples(EXAMPLES, self.settings_in[:-1], label="Examples")

    @property
    def settings_in(self) -> list:
        return [self.prompt, self.max_new_chars, self.temperature, self.top_k, self.top_p, self.seed, self.model_key]

    def figure_panels(self, model, opening: dict) -> None:
        gr.Markdown("## Next-character probabilities, step by step\nLeft: the model's distribution (temperature 1). "
                    "Right: what the settings left to sample from. Drag the slider under the chart through every "
                    "step (or use the arrow keys).")
        self.probabilities = gr.Plot(opening["probabilities"], label="Next-character probabilities",
                                     elem_id="probabilities")

        gr.Markdown("## Gates\nEach column is a step (the character read; hover for it), each row a unit, labelled "
                    "`L3 reset 99 (τ 12)`: layer, kind, unit and its memory timescale in steps, 1 / (1 − mean z_t) "
                    "(an LSTM's 1 / (1 − mean f_t)) over the model's reference text. A GRU's reset gate r_t decides "
                    "how much of the previous state feeds the candidate; its update gate z_t near 1 keeps the old "
                    "state, near 0 overwrites it. An LSTM's input gate i_t lets the candidate into the cell state, "
                    "its forget gate f_t near 1 keeps the cell, its output gate o_t lets the cell out into h_t. "
                    "Click a row to open that unit's profile.")
        with gr.Row():
            self.gate_layer = gr.Radio(layer_choices(model), value=1, label="Layer")
            self.heatmaps = gr.Radio([("gates", "gates"), ("states", "states")], value="gates", label="Heatmaps of",
                                     info="the states: h_t, and an LSTM's cell state c_t")
            self.order = gr.Radio([(label, name) for name, label in figures.ORDERS.items()], value=View().order,
                                  label="Order units",
                                  info="alike: grouped by the built-in signal they follow (line position, vowel, ...)")
            self.max_units = gr.Slider(8, max(16, model.hidden_size), 64, step=8, label="Units at most",
                                       info="fewer for long views, to keep each heatmap near 100,000 cells")
        with gr.Row():
            self.pinned = gr.Textbox(label="Pin units on top", placeholder="e.g. 99, 337", max_lines=1,
                                     info="unit numbers of the layer shown; Enter to apply")
            self.window = gr.Dropdown(window_choices(len(self.site.opening_trace.text)), value=-1,
                                      label="Steps shown",
                                      info="a long run is averaged over a few steps per column; pick a part for "
                                           "every step")
        self.heatmap_plots = [gr.Plot(opening[slot], label="Heatmap", elem_id=slot, visible=opening[slot] is not None)
                              for slot in HEATMAPS]
        # Written by the page's script when a heatmap row is clicked ("L3 reset 99"); the Units tab opens that unit.
        self.heatmap_unit = gr.Textbox(visible="hidden", elem_id="heatmap-unit", label="Unit clicked")

        gr.Markdown("## Gate behaviour at a glance\nEach dot is a unit: how often its gate was below 0.1 "
                    "(left-saturated) against above 0.9 (right-saturated), as in Karpathy, Johnson & Fei-Fei (2015).")
        self.saturation_plot = gr.Plot(opening["saturation"], label="Gate saturation", elem_id="saturation")

        gr.Markdown("## The text, coloured\nHover a character for its numbers.")
        self.surprisal = gr.HTML(opening["surprisal"], elem_id="surprisal")
        with gr.Row():
            self.unit_kind = gr.Radio(kind_choices(model.kinds), value="hidden", label="Colour by")
            self.unit_layer = gr.Radio(layer_choices(model), value=1, label="Layer")
            self.unit = gr.Number(0, precision=0, minimum=0, maximum=model.hidden_size - 1, label="Unit")
        self.unit_text = gr.HTML(opening["unit"], elem_id="unit-text")

    # ---- writing a run ----

    def stream_run(self, key, model, values, place=None):
        """Write a run through the decode server, streaming (text, status, recipe); InputError or ServerBusy
        become a gr.Error. The run becomes the latest at `place` (Site.begin): once another replaces it there, its
        stream stops with no further update, and its job is let go."""
        site = self.site
        try:
            settings = inputs.check_inputs(model, *values)
            run = Recipe(key, values[0], settings)
            site.begin(place, run)
            kept = site.runs.text(run)  # written before, by anyone: the same recipe writes the same text
            if kept is not None:
                yield kept, earlier_summary(len(kept) - len(values[0]), len(kept)), run
                return
            job = site.server.submit(model, run.request(model))  # shared with anyone writing it now
        except (inputs.InputError, ServerBusy) as e:
            raise gr.Error(str(e), title="Cannot generate") from None
        started = time.perf_counter()
        with site.writing(run, job):  # the figures' event of the same click waits for it (draw_written)
            try:
                while not job.wait(STREAM_EVERY_S):
                    if not site.is_latest(place, run):
                        return  # replaced by the visitor's next run
                    yield job.text, f"Writing… {job.written:,} characters", gr.skip()
                job.result()
            finally:
                job.cancel()  # a visitor who leaves mid-run (or replaced it) frees the row at the next step
            site.runs.keep(run, job)
        if site.is_latest(place, run):
            yield job.text, summary(job.written, len(job.text), time.perf_counter() - started, model), run

    def generate(self, prompt, max_new_chars, temperature, top_k, top_p, seed, key, request: gr.Request):
        """Write after the prompt, streaming the text; the API endpoint /generate. The figures follow (draw). A
        new run replaces the visitor's run in progress."""
        yield from self.stream_run(key, self.site.model(key), (prompt, max_new_chars, temperature, top_k, top_p, seed),
                                   place(request))

    def export_run(self, prompt, max_new_chars, temperature, top_k, top_p, seed, key):
        """The run these settings write, as a .npz file (charrnn.page.share); the API endpoint /export."""
        model = self.site.model(key)
        for *_, run in self.stream_run(key, model, (prompt, max_new_chars, temperature, top_k, top_p, seed)):
            pass
        return str(self.site.exports.export(self.site.trace(run), key)[0])

    # ---- its figures ----

    def draw(self, run, view, request: gr.Request, trace=None):
        """The figures of the visitor's last run (nothing before their first, e.g. a page opened without a link),
        sent a few at a time: the browser draws the first while the server builds the next; nothing more once
        another run has replaced it. The last update changes nothing, so that Gradio's closing message does not
        send a figure again."""
        nothing = (gr.skip(),) * len(self.draw_out)
        if run is None:
            yield nothing
            return
        trace, view = trace or self.site.trace(run), replace(view, window=None)
        first = True
        for shown in figures_in_turn(trace, view, self.site.timescale(run.model)):
            if not self.site.is_latest(place(request), run):
                break
            yield ((view, gr.update(choices=window_choices(len(trace.text)), value=-1)) if first
                   else (gr.skip(), gr.skip())) + tuple(
                (shown_in(name, shown[name], trace.kinds) if name in HEATMAPS else shown[name]) if name in shown
                else gr.skip()
                for name in FIGURES)
            first = False
        yield nothing

    def draw_written(self, prompt, max_new_chars, temperature, top_k, top_p, seed, key, view, request: gr.Request):
        """The figures of the run that Generate writes, started with it: drawn as soon as the run is written,
        not after the text has gone to the browser and a new event come back. Nothing when it is not written
        (generate says why)."""
        try:
            model = self.site.model(key)
            settings = inputs.check_inputs(model, prompt, max_new_chars, temperature, top_k, top_p, seed)
        except (inputs.InputError, ModelLoadError):
            yield (gr.skip(),) * len(self.draw_out)
            return
        run = Recipe(key, prompt, settings)
        trace = self.site.written(run)
        # A run written before is found at once, maybe before the text's event has begun it (Site.begin).
        if trace is None or not self.site.became_latest(place(request), run, START_S):
            yield (gr.skip(),) * len(self.draw_out)
            return
        yield from self.draw(run, view, request, trace)

    def redraw_gates(self, run, view, layer, order, max_units, pinned, window, heatmaps):
        trace = self.site.trace(run)
        try:
            pinned = inputs.pinned_units(pinned, trace.hidden.shape[2])
        except inputs.InputError as e:
            gr.Warning(str(e))
            return (gr.skip(),) * (1 + len(HEATMAPS))
        window = None if window is None or int(window) < 0 else int(window)
        view = replace(view, layer=int(layer), order=order, max_units=int(max_units), pinned=pinned, window=window,
                       heatmaps=heatmaps)
        shown = gate_figures(trace, view, self.site.timescale(run.model if run else self.site.default_key))
        return view, *(shown_in(slot, shown[slot], trace.kinds) for slot in HEATMAPS)

    def redraw_unit(self, run, view, kind, layer, unit):
        trace = self.site.trace(run)
        try:
            unit = inputs.whole_number("Unit", unit, 0, trace.hidden.shape[2] - 1)
        except inputs.InputError as e:
            gr.Warning(str(e))
            return view, gr.skip()
        view = replace(view, unit_kind=kind, unit_layer=int(layer), unit=unit)
        return view, unit_view(trace, view)

    # ---- the model, links and exports ----

    def model_controls(self, key, model, top_k=None):
        """The model's key and description, and the controls whose range is the model's: the gate and unit
        layers, the unit, the units shown, Top-k (up to the vocabulary's size; set to `top_k` when given), the
        kinds to colour by."""
        top_k_range = gr.update(maximum=len(model.vocab), **({} if top_k is None else {"value": top_k}))
        if not model.kinds:  # a bigram: no layers or units to choose (its figures say so); the controls stay
            return key, describe_model(key, model), *[gr.skip()] * 4, top_k_range, gr.skip()
        choices = layer_choices(model)
        return (key, describe_model(key, model), gr.update(choices=choices, value=1),
                gr.update(choices=choices, value=1), gr.update(maximum=model.hidden_size - 1, value=0),
                gr.update(maximum=max(16, model.hidden_size)), top_k_range,  # at most: more than there are is all
                gr.update(choices=kind_choices(model.kinds), value="hidden"))

    def third_heatmap(self, key):
        """The third heatmap shown for an LSTM (its third gate), hidden for a GRU or a bigram."""
        return gr.update(visible=len(self.site.model(key).kinds) > len(HEATMAPS))

    def load_model(self, source, revision, request: gr.Request):
        try:
            key = inputs.model_key(source, revision)
            model = self.site.model(key)
        except (inputs.InputError, ModelLoadError) as e:
            raise gr.Error(f"{e}. The previous model stays in use.", title="Cannot load the model") from None
        self.site.begin(place(request), None)  # a run of the previous model in progress stops here
        gr.Info(f"Loaded {key}")
        return self.model_controls(key, model)

    def open_link(self, request: gr.Request):
        """A page opened with a link's query: its values in the controls, its run written (streamed)."""
        query = request.query_params if request is not None else {}
        if not share.is_link(query):
            yield (gr.skip(),) * len(self.link_out)
            return
        link = share.read_link(query, dict(zip(share.SETTINGS, EXAMPLES[0])), self.site.default_key, self.site.model)
        for warning in link.warnings:
            gr.Warning(warning, title="Part of the link was not used")
        prompt, chars, temperature, top_k, top_p, seed = link.settings
        controls = (prompt, chars, temperature, top_p, seed, link.model_key.source, link.model_key.revision or "",
                    *self.model_controls(link.model_key, link.model, top_k))
        try:
            runs = self.stream_run(link.model_key, link.model, link.settings, place(request))
            for i, (text, status, run) in enumerate(runs):
                yield *(controls if i == 0 else (gr.skip(),) * len(controls)), text, status, run
        except gr.Error as e:  # the page still opens, with the link's values in place
            gr.Warning(str(e), title="Cannot write the link's run")
            yield *controls, gr.skip(), gr.skip(), gr.skip()

    def link_to(self, run):
        return share.link_query(run or self.site.opening, self.site.default_key)

    def export_last(self, run):
        """The files of the visitor's last run (the opening example before their first)."""
        run = run or self.site.opening
        files = self.site.exports.export(self.site.trace(run), run.model)
        return gr.update(value=[str(f) for f in files], visible=True)

    # ---- the events ----

    def wire(self) -> None:
        limits = self.site.server.limits
        busy = limits.max_rows + limits.max_waiting
        private = dict(api_visibility="private", show_progress="hidden")
        self.draw_out = [self.view, self.window, self.probabilities, *self.heatmap_plots, self.saturation_plot,
                         self.surprisal, self.unit_text]
        self.link_out = [self.prompt, self.max_new_chars, self.temperature, self.top_p, self.seed, self.model_source,
                         self.revision, self.model_key, self.model_info, self.gate_layer, self.unit_layer, self.unit,
                         self.max_units, self.top_k, self.unit_kind, self.text, self.status, self.recipe]
        # Two events for one run: the text streams in one (only the text and status change: each streamed update
        # costs the browser work per output of the event); the other waits on the server for the run to be written
        # and sends its figures from the trace. Gradio runs the events of one trigger one after the other, so the
        # figures' event has a trigger of its own, a hidden button the run's start presses first. Every visitor's
        # request reaches the decode server at once (it batches them); the server bounds how many it takes.
        # A click while a run is being written is not skipped (trigger_mode "multiple"): the new run replaces the
        # visitor's run in progress (Site.begin), whose stream and figures stop there.
        self.run.click(None, js="() => charrnnPage.drawFigures()")
        self.run.click(self.generate, self.settings_in, [self.text, self.status, self.recipe], api_name="generate",
                       show_progress="hidden", trigger_mode="multiple", concurrency_limit=busy)
        self.draw_figures.click(self.draw_written, [*self.settings_in, self.view], self.draw_out,
                                trigger_mode="multiple", concurrency_limit=busy, **private)
        # A link's run is written as the page opens; its figures are sent once the page has drawn its own (the
        # opening example's): figures that reached plots still being mounted were lost, and the page kept showing
        # the opening example's probabilities beside the link's text.
        gr.context.Context.root_block.load(  # the Blocks being built: its load event reads the page's address
            self.open_link, None, self.link_out, concurrency_limit=busy, **private
        ).success(None, js="() => charrnnPage.whenFiguresDrawn('#draw-link-figures')")
        self.draw_link_figures.click(self.draw, [self.recipe, self.view], self.draw_out, **private)
        self.copy_link.click(self.link_to, self.recipe, self.link, api_visibility="private").then(
            None, self.link, self.link, js="(query) => charrnnPage.copyLink(query)")
        self.export.click(self.export_last, self.recipe, self.export_files, api_visibility="private")
        # /export takes the settings, as /generate does; the page's button above exports the visitor's last run.
        export_api, export_file = gr.Button(visible=False), gr.File(visible=False)
        export_api.click(self.export_run, self.settings_in, export_file, api_name="export")
        self.new_seed.click(None, None, self.seed, js="() => charrnnPage.newSeed()")
        self.load.click(self.load_model, [self.model_source, self.revision],
                        [self.model_key, self.model_info, self.gate_layer, self.unit_layer, self.unit,
                         self.max_units, self.top_k, self.unit_kind], api_name="load_model"
                        ).success(self.third_heatmap, self.model_key, self.heatmap_plots[-1], **private)
        gate_view = [self.recipe, self.view, self.gate_layer, self.order, self.max_units, self.pinned, self.window,
                     self.heatmaps]
        gates_out = [self.view, *self.heatmap_plots]
        for control in (self.gate_layer, self.order, self.max_units, self.heatmaps):
            control.change(self.redraw_gates, gate_view, gates_out, api_visibility="private")
        # the person's choice only: a new run resets the choices (draw), which must not draw the heatmaps again
        self.window.input(self.redraw_gates, gate_view, gates_out, api_visibility="private")
        self.pinned.submit(self.redraw_gates, gate_view, gates_out, api_visibility="private")
        for control in (self.unit_kind, self.unit_layer, self.unit):
            control.change(self.redraw_unit, [self.recipe, self.view, self.unit_kind, self.unit_layer, self.unit],
                           [self.view, self.unit_text], api_visibility="private")


def write_tab(site: Site, model_key: gr.State, why: Why) -> dict:
    """Build the tab inside the current gr.Tab; returns the components other tabs use."""
    return WriteTab(site, model_key, why).components()
