"""The What-if tab: force a unit and watch the text change, write another character at one step, and compare
decoding settings side by side; and, on the Write tab, the branch panel (click a character of the text).

Every comparison shares its prompt, length and seed, so every random draw: the draw that picks generated character
s depends on the seed and s alone (charrnn.decoding.loop), and whatever differs comes from the one change. Both runs
of a pair go to the decode server together, so they are written in the same batch; the visitor keeps their Recipes
(a Comparison), and the figures come from the traces (site.trace).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import gradio as gr

from ..analysis.whatif import Pair, SettingsRun, branch_forcing
from ..figures import whatif as wf
from ..figures.whatif import SHARED_DRAWS
from ..serving.compute import on_compute_thread
from ..serving.runs import Recipe
from ..serving.server import ServerBusy
from ..vocab import visible_char
from . import inputs
from .site import Site
from .views import STREAM_EVERY_S, kind_choices
from .why import Why

PANEL_WIDTH = 60  # characters a row of the aligned texts in the Write tab's narrower column
FORCE_TITLE, BRANCH_TITLE, COMPARE_TITLE = "Cannot force the unit", "Cannot branch", "Cannot compare"
VALUE_CHOICES = [(inputs.ZERO, inputs.ZERO), ("its mean over the reference text", inputs.MEAN)]
SETTINGS = ("prompt", "max_new_chars", "temperature", "top_k", "top_p", "seed")  # mirrored from the Write tab


@dataclass(frozen=True)
class Comparison:
    """An original run and its changed twin (an intervention, or a character forced at one position): what a
    visitor keeps between events, a few hundred bytes."""

    original: Recipe
    changed: Recipe

    @property
    def labels(self) -> tuple[str, str]:
        return ("original", "forced" if self.changed.intervention else "branch")

    def marks(self) -> dict:
        """What the aligned texts and the figure flag: where forcing starts, or the character forced."""
        if self.changed.intervention is not None:
            start = self.changed.intervention.from_step
            return {"marked": start, "marked_title": f"forcing starts at step {start} (reading this character)"}
        return {"forced": len(self.original.prompt) + self.forced_step}

    @property
    def forced_step(self) -> int | None:
        """The generated position of a branch's forced character (None for an intervention)."""
        return self.changed.forced[0][0] if self.changed.forced else None


def place(request: gr.Request | None, part: str):
    """Where a visitor's comparisons of one kind replace one another (Site.begin)."""
    session = getattr(request, "session_hash", None)
    return (session, part) if session else None


def unit_mean(site: Site, key, layer: int, kind: str, unit: int) -> float:
    """A unit's mean over the model's reference text (the value "mean"), or InputError saying why there is none."""
    summary = site.unit_summary(key)
    if summary.mean is None:
        raise inputs.InputError(f'Value "mean" is not available for this model: {summary.missing}. Give a number or '
                            '"zero".')
    return float(summary.mean[summary.kinds.index(kind), layer - 1, unit])


def write_runs(site: Site, model, recipes: list[Recipe], title: str, place=None, latest=None):
    """Submit the recipes to the decode server together (so they are written in the same batch), wait for all of
    them and keep them in site.runs. A generator that yields while it waits: a visitor who leaves closes it, and
    the runs are let go (cancelled at the next step when nobody else holds them); so does the visitor's next
    comparison at the same `place`, which replaces `latest` (Site.begin). Runs the site holds already (the run on
    the Write tab, usually the original) are not written again."""
    site.begin(place, latest)
    recipes = [r for r in recipes if r != site.opening and not site.runs.has(r)]
    jobs = []
    try:
        try:
            for recipe in recipes:
                jobs.append(site.server.submit(model, recipe.request(model)))
        except (ServerBusy, ValueError) as e:
            raise gr.Error(str(e), title=title) from None
        for job in jobs:
            while not job.wait(STREAM_EVERY_S):
                if not site.is_latest(place, latest):
                    return
                yield
        for job in jobs:
            job.result()
    finally:
        for job in jobs:
            job.cancel()
    for recipe, job in zip(recipes, jobs):
        site.runs.keep(recipe, job)


def comparison_result(site: Site, comparison: Comparison) -> dict:
    """What /intervene and /branch return: whatif.Pair.summary() (both texts with the prompt, and where they
    part) and the change made."""
    pair = Pair(site.trace(comparison.original), site.trace(comparison.changed))
    result = pair.summary()
    if comparison.changed.intervention is not None:
        i = comparison.changed.intervention
        result["change"] = {"intervention": {"layer": i.layer, "kind": i.kind, "unit": i.unit, "value": i.value,
                                             "from_step": i.from_step}}
    else:
        (step, token), = comparison.changed.forced
        written = pair.original.text[pair.original.prompt_len + step]
        result["change"] = {"branch": {"step": step, "char": pair.changed.vocab[token], "replaced": written}}
    return result


@on_compute_thread
def comparison_views(pair: Pair, comparison: Comparison, figure: bool = True, width: int = wf.ALIGN_WIDTH):
    """(status HTML, aligned texts HTML `width` characters a row, divergence figure or None)."""
    marks = comparison.marks()
    aligned = wf.aligned_html(pair.original.text, pair.changed.text, pair.original.prompt_len,
                              labels=comparison.labels, width=width, **marks)
    described = wf.describe_html(pair, comparison.changed.intervention, comparison.forced_step, comparison.labels[1])
    status = f'<div class="wi-status">{described}</div>'
    if not figure:
        return status, aligned, None
    if "marked" in marks:
        marked, label = marks["marked"], f"forcing starts (step {marks['marked']})"
    else:
        marked, label = marks["forced"] - 1, f"step {marks['forced'] - 1} writes the forced character"
    return status, aligned, wf.divergence_figure(pair, marked=marked, marked_label=label, labels=comparison.labels)


def draw_comparison(site: Site, comparison: Comparison, figure: bool = True, width: int = wf.ALIGN_WIDTH):
    pair = Pair(site.trace(comparison.original), site.trace(comparison.changed))  # off the compute thread: it waits
    return comparison_views(pair, comparison, figure, width)


def python_index(text: str, utf16_index: int) -> int:
    """The index in `text` of a browser's (UTF-16) offset into it."""
    return len(text.encode("utf-16-le")[: 2 * utf16_index].decode("utf-16-le", errors="ignore"))


def comparison_outputs(name: str):
    """The status, aligned texts, figure and JSON of one kind of comparison."""
    status = gr.HTML('<div class="wi-status" style="color:#666">Press the button to write both runs.</div>',
                     elem_id=f"{name}-status")
    aligned = gr.HTML(elem_id=f"{name}-aligned")
    figure = gr.Plot(label="How far the next-character distribution moved", elem_id=f"{name}-divergence")
    with gr.Accordion(f"The numbers, as /{'intervene' if name == 'force' else 'branch'} returns them", open=False):
        result = gr.JSON(elem_id=f"{name}-result")
    return status, aligned, figure, result


class WhatifTab:
    """Builds the tab inside the current gr.Tab: the run's settings (mirroring the Write tab's), then a tab per kind
    of comparison, then the events."""

    def __init__(self, site: Site, model_key: gr.State, write: dict, why: Why):
        self.site, self.model_key = site, model_key
        model = site.default_model
        gr.Markdown(
            "Change one thing and write the run again beside the original: force a unit (a hidden state or a gate), "
            "write another character at one step, or decode with other settings. " + SHARED_DRAWS + " Or patch one "
            "text's states into another's, or sweep a forced unit's value.")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                self.run_settings(model, write)
            with gr.Column(scale=5):
                with gr.Tabs():
                    with gr.Tab("Force a unit", id="force"):
                        self.force_panel(model, write)
                    with gr.Tab("Branch at a character", id="branch"):
                        self.branch_at_panel()
                    with gr.Tab("Compare settings", id="compare"):
                        self.compare_panel(model)
                    with gr.Tab("Patch", id="patch"):
                        why.patch_panel()
                    with gr.Tab("Dose-response", id="dose"):
                        why.dose_panel(model)
        self.wire(write)
        why.wire(self.prompt)

    def components(self) -> dict:
        """What the other tabs use: "unit_to_force" is a hidden Textbox that takes a unit's name, such as
        "L3 hidden 99", and fills the unit to force."""
        return {"unit_to_force": self.unit_to_force, "layer": self.layer, "kind": self.kind, "unit": self.unit,
                "value": self.value, "from_step": self.from_step, "force": self.force}

    # ---- the layout ----

    def run_settings(self, model, write: dict) -> None:
        gr.Markdown("### The run\nCopied from the Write tab whenever you change it there; change it here to try "
                    "another.")
        self.prompt = gr.Textbox(write["prompt"].value, lines=3, max_lines=8, label="Prompt of the run",
                                 elem_id="whatif-prompt")
        self.max_new_chars = gr.Slider(1, inputs.MAX_NEW_CHARS, write["max_new_chars"].value, step=1,
                                       label="Characters to write in each run")
        self.temperature = gr.Slider(0, 2, write["temperature"].value, step=0.05, label="Temperature of the run",
                                     info="0 = greedy")
        self.top_k = gr.Slider(0, len(model.vocab), write["top_k"].value, step=1, label="Top-k of the run",
                               info="0 = off")
        self.top_p = gr.Slider(0.01, 1, write["top_p"].value, step=0.01, label="Top-p of the run", info="1 = off")
        self.seed = gr.Number(write["seed"].value, precision=0, label="Seed of the run")
        self.settings_in = [self.prompt, self.max_new_chars, self.temperature, self.top_k, self.top_p, self.seed]

    def force_panel(self, model, write: dict) -> None:
        gr.Markdown("Set one unit to a value at every step from a starting step on (prompt steps included), and see "
                    "where the text parts from the run as it is. Step t reads character t of prompt + text, from 0.")
        with gr.Row():
            self.layer = gr.Number(3 if model.num_layers >= 3 else 1, label="Layer", info=f"1 to {model.num_layers}",
                                   min_width=90, elem_id="force-layer")
            self.kind = gr.Dropdown(kind_choices(model.kinds), value="hidden", label="Kind", elem_id="force-kind",
                                    allow_custom_value=True, min_width=160)  # checked, with a clear message
            self.unit = gr.Number(min(99, model.hidden_size - 1), label="Unit", info=f"0 to {model.hidden_size - 1}",
                                  min_width=90, elem_id="force-unit")
        with gr.Row():
            self.value = gr.Dropdown(VALUE_CHOICES, value="0.9", allow_custom_value=True, label="Value",
                                     elem_id="force-value",
                                     info="type a number (hidden state −1 to 1, gates 0 to 1), or pick zero or the "
                                          "unit's mean (ablation)")
            with gr.Column(min_width=200):
                self.from_step = gr.Number(len(write["prompt"].value) - 1, label="From step", elem_id="force-from",
                                           info="forced at this step and every step after")
                self.first_generated = gr.Button("From the first generated character", size="sm")
        self.unit_to_force = gr.Textbox(visible="hidden", elem_id="unit-to-force", label="Unit to force")
        self.force = gr.Button("Force and compare", variant="primary", elem_id="force-button")
        self.forced = comparison_outputs("force")
        self.forced_shown = gr.State(None)  # the Comparison on show

    def branch_at_panel(self) -> None:
        gr.Markdown("Write another character at one generated position and let the model go on from there; every "
                    "other step keeps its own draw. (On the Write tab, click a character of the text to do the same "
                    "with the run shown there.)")
        with gr.Row():
            self.step = gr.Number(0, label="Generated character", elem_id="branch-step",
                                  info="0 = the first character written")
            self.branch_to = gr.Textbox("e", max_lines=1, label="Write this character there", elem_id="branch-char",
                                        info="␣ for a space, ↵ for a newline")
        self.branch = gr.Button("Branch and compare", variant="primary", elem_id="branch-button")
        self.branched = comparison_outputs("branch")
        self.branch_shown = gr.State(None)

    def compare_panel(self, model) -> None:
        gr.Markdown(
            "The prompt, length and seed of the run under two or three decoding settings. With the same seed every "
            "run draws the same random number at each generated position, so the comparison is about the settings "
            "alone: where the texts part, the settings made the choice differ; after that each run goes on from its "
            "own text.")
        self.compared_settings = []  # temperature, top-k, top-p of A, then B, then C
        with gr.Row():
            for name, (t, k, p) in zip("ABC", ((0.0, 0, 1.0), (0.8, 0, 0.95), (1.2, 0, 1.0))):
                with gr.Column(min_width=180):
                    if name == "C":
                        self.use_c = gr.Checkbox(True, label="Compare a third: C", elem_id="compare-use-c")
                    else:
                        gr.Markdown(f"**{name}**")
                    self.compared_settings += [
                        gr.Slider(0, 2, t, step=0.05, label=f"Temperature {name}", info="0 = greedy"),
                        gr.Slider(0, len(model.vocab), k, step=1, label=f"Top-k {name}", info="0 = off"),
                        gr.Slider(0.01, 1, p, step=0.01, label=f"Top-p {name}", info="1 = off")]
        self.compare = gr.Button("Compare", variant="primary", elem_id="compare-button")
        self.compare_text = gr.HTML(elem_id="compare-texts")
        self.compare_figure = gr.Plot(label="Entropy and rank, step by step", elem_id="compare-figure")
        self.compared = gr.State(None)  # the Recipes compared

    # ---- the endpoints ----

    def intervene(self, prompt, max_new_chars, temperature, top_k, top_p, seed, layer, kind, unit, value, from_step,
                  key, request: gr.Request):
        """Write the run as it is and with one unit forced at every step >= from_step; the API endpoint /intervene.
        Returns both texts (prompt included) and where they part."""
        model = self.site.model(key)
        try:
            settings = inputs.check_inputs(model, prompt, max_new_chars, temperature, top_k, top_p, seed)
            intervention = inputs.check_intervention(model, layer, kind, unit, value, from_step,
                                                     len(prompt) + settings.max_new_chars,
                                                     lambda *unit_: unit_mean(self.site, key, *unit_))
        except inputs.InputError as e:
            raise gr.Error(str(e), title=FORCE_TITLE) from None
        original = Recipe(key, prompt, settings)
        yield from self.compared_with(model, Comparison(original, replace(original, intervention=intervention)),
                                      FORCE_TITLE, place(request, "force"))

    def branch_at(self, prompt, max_new_chars, temperature, top_k, top_p, seed, step, char, key, request: gr.Request):
        """Write the run as it is and with `char` as generated character `step` (0 = the first written), every
        other draw kept; the API endpoint /branch. Returns both texts (prompt included) and where they part."""
        model = self.site.model(key)
        try:
            settings = inputs.check_inputs(model, prompt, max_new_chars, temperature, top_k, top_p, seed)
            step = inputs.branch_step(step, settings.max_new_chars)
            char = inputs.branch_char(model, char)
        except inputs.InputError as e:
            raise gr.Error(str(e), title=BRANCH_TITLE) from None
        original = Recipe(key, prompt, settings)
        forced = branch_forcing(model, prompt, settings, step, char)
        yield from self.compared_with(model, Comparison(original, replace(original, forced=forced)), BRANCH_TITLE,
                                      place(request, "branch"))

    def compared_with(self, model, comparison: "Comparison", title: str, where):
        """Both runs of a comparison written (a generator while they are), then (its result, itself); nothing more
        once the visitor's next comparison at the same place replaced it."""
        for _ in write_runs(self.site, model, [comparison.original, comparison.changed], title, where, comparison):
            yield gr.skip(), gr.skip()
        if self.site.is_latest(where, comparison):
            yield comparison_result(self.site, comparison), comparison

    def compare_runs(self, prompt, max_new_chars, seed, temperature_a, top_k_a, top_p_a, temperature_b, top_k_b,
                     top_p_b, temperature_c, top_k_c, top_p_c, use_c, key, request: gr.Request):
        """The same prompt, length and seed under the settings A, B (and C when ticked), written together."""
        model = self.site.model(key)
        rows = [(temperature_a, top_k_a, top_p_a), (temperature_b, top_k_b, top_p_b)] + (
            [(temperature_c, top_k_c, top_p_c)] if use_c else [])
        settings = []
        for name, (t, k, p) in zip("ABC", rows):
            try:
                settings.append(inputs.check_inputs(model, prompt, max_new_chars, t, k, p, seed))
            except inputs.InputError as e:
                raise gr.Error(f"{name}: {e}", title=COMPARE_TITLE) from None
        recipes = tuple(Recipe(key, prompt, s) for s in settings)
        where = place(request, "compare")
        for _ in write_runs(self.site, model, list(recipes), COMPARE_TITLE, where, recipes):
            yield gr.skip()
        if self.site.is_latest(where, recipes):
            yield recipes

    def draw_forced(self, comparison, request: gr.Request):
        return self.draw_latest(comparison, place(request, "force"))

    def draw_branched(self, comparison, request: gr.Request):
        return self.draw_latest(comparison, place(request, "branch"))

    def draw_latest(self, comparison, where):
        """The comparison's figures, unless the visitor's next comparison there has replaced it meanwhile."""
        if comparison is None or not self.site.is_latest(where, comparison):
            return gr.skip(), gr.skip(), gr.skip()
        return draw_comparison(self.site, comparison)

    def draw_compared(self, recipes, request: gr.Request):
        if recipes is None or not self.site.is_latest(place(request, "compare"), recipes):
            return gr.skip(), gr.skip()
        runs = [SettingsRun(r.settings, self.site.trace(r)) for r in recipes]
        return on_compute_thread(lambda: (wf.settings_html(runs), wf.settings_figure(runs)))()

    def fill_unit(self, name):
        if not name:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            return inputs.parse_unit_name(name)
        except inputs.InputError as e:
            gr.Warning(str(e))
            return gr.skip(), gr.skip(), gr.skip()

    def fit_model(self, key):
        """The loaded model's ranges: Top-k up to its vocabulary, the layer and unit within its sizes."""
        model = self.site.model(key)
        top_k_range = [gr.update(maximum=len(model.vocab))] * (1 + len(self.compared_settings[1::3]))
        if not model.kinds:  # a bigram: nothing to force (the endpoints say so)
            return *top_k_range, gr.skip(), gr.skip(), gr.skip()
        return (*top_k_range, gr.update(info=f"1 to {model.num_layers}"),
                gr.update(choices=kind_choices(model.kinds), value="hidden"),
                gr.update(info=f"0 to {model.hidden_size - 1}"))

    # ---- the events ----

    def wire(self, write: dict) -> None:
        limits = self.site.server.limits
        busy = limits.max_rows + limits.max_waiting
        for name, target in zip(SETTINGS, self.settings_in):
            write[name].change(None, write[name], target, js="(value) => value")  # in the browser: no round trip
        compared_top_k = self.compared_settings[1::3]
        self.model_key.change(self.fit_model, self.model_key,
                              [self.top_k, *compared_top_k, self.layer, self.kind, self.unit],
                              api_visibility="private")
        self.first_generated.click(None, self.prompt, self.from_step,
                                   js="(prompt) => charrnnPage.firstGeneratedStep(prompt)")
        self.unit_to_force.change(self.fill_unit, self.unit_to_force, [self.layer, self.kind, self.unit],
                                  api_visibility="private")
        # A click while a comparison is being written is not skipped (trigger_mode "multiple"): the new one replaces
        # the visitor's comparison in progress there (write_runs), whose figures are not drawn.
        private = dict(api_visibility="private", show_progress="hidden")
        force_status, force_aligned, force_figure, force_result = self.forced
        self.force.click(self.intervene, [*self.settings_in, self.layer, self.kind, self.unit, self.value,
                                          self.from_step, self.model_key], [force_result, self.forced_shown],
                         api_name="intervene", show_progress_on=[force_status, force_aligned], trigger_mode="multiple",
                         concurrency_limit=busy
                         ).success(self.draw_forced, self.forced_shown, [force_status, force_aligned, force_figure],
                                   **private)
        branch_status, branch_aligned, branch_figure, branch_result = self.branched
        self.branch.click(self.branch_at, [*self.settings_in, self.step, self.branch_to, self.model_key],
                          [branch_result, self.branch_shown], api_name="branch",
                          show_progress_on=[branch_status, branch_aligned], trigger_mode="multiple",
                          concurrency_limit=busy
                          ).success(self.draw_branched, self.branch_shown,
                                    [branch_status, branch_aligned, branch_figure], **private)
        self.compare.click(self.compare_runs, [self.prompt, self.max_new_chars, self.seed, *self.compared_settings,
                                               self.use_c, self.model_key], self.compared,
                           api_visibility="private", show_progress_on=[self.compare_text], trigger_mode="multiple",
                           concurrency_limit=busy
                           ).success(self.draw_compared, self.compared, [self.compare_text, self.compare_figure],
                                     **private)


def whatif_tab(site: Site, model_key: gr.State, write: dict, why: Why) -> dict:
    """Build the tab inside the current gr.Tab; `write` is the Write tab's components (its settings prefill this
    tab's); `why` holds the Patch and Dose-response panels. Returns the components other tabs use."""
    return WhatifTab(site, model_key, write, why).components()


def branch_panel(site: Site, text: gr.Textbox, recipe: gr.State, why: Why) -> dict:
    """Under the Write tab's text: click a generated character, see what else the model offered there, pick one (or
    type any character) and the run is written again with it, beside the original; or ask why the model chose it
    over the one picked (the runner-up at first)."""
    picked = gr.State(None)  # (the Recipe of the run shown, the index of the character clicked in its text)
    with gr.Column(visible=False, elem_id="branch-panel") as panel:
        where = gr.HTML(elem_id="branch-where")
        with gr.Row():
            choice = gr.Radio([], label="Write instead", elem_id="branch-choice", scale=4)
            typed = gr.Textbox(label="or type any character", max_lines=1, scale=1, elem_id="branch-typed",
                               info="used when not empty")
        with gr.Row():
            go = gr.Button("Branch here", variant="primary", size="sm", elem_id="branch-here")
            ask = gr.Button("Why this character?", size="sm", elem_id="why-button")
            close = gr.Button("Close", size="sm")
        status = gr.HTML(elem_id="branch-panel-status")
        aligned = gr.HTML(elem_id="branch-panel-aligned")
        why_words = gr.HTML(elem_id="why-words")
        why_plot = gr.Plot(label="Why this character", elem_id="why-plot", visible=False)

    def open_at(run, shown_text, evt: gr.SelectData):
        run = run or site.opening
        trace = site.trace(run)
        if shown_text != trace.text:
            gr.Info("The text is still being written: click a character once it is done.")
            return (gr.skip(),) * 7
        index = python_index(trace.text, evt.index[0])
        if index < trace.prompt_len:
            gr.Info("That character is part of the prompt: click one of the generated characters to branch there.")
            return (gr.skip(),) * 7
        offered = on_compute_thread(wf.alternatives)(trace, index)
        where_html = on_compute_thread(wf.alternatives_html)(trace, index, offered)
        cut = ", cut by the settings"
        choices = [(f"{visible_char(a['char'])}  (p = {a['p']:.3f}{'' if a['sampled_p'] else cut})", a["char"])
                   for a in offered if not a["written"]]
        first_choice = choices[0][1] if choices else None
        return (gr.update(visible=True), where_html, gr.update(choices=choices, value=first_choice), "", (run, index),
                "", "")

    def branch_here(picked, choice, typed):
        if picked is None:
            raise gr.Error("Click a generated character of the text first.", title=BRANCH_TITLE)
        run, index = picked
        model = site.model(run.model)
        try:
            char = inputs.branch_char(model, typed if typed else choice)
        except inputs.InputError as e:
            raise gr.Error(str(e), title=BRANCH_TITLE) from None
        forced = branch_forcing(model, run.prompt, run.settings, index - len(run.prompt), char)
        comparison = Comparison(run, replace(run, forced=forced))
        for _ in write_runs(site, model, [comparison.original, comparison.changed], BRANCH_TITLE):
            yield gr.skip(), gr.skip()
        status_html, aligned_html, _ = draw_comparison(site, comparison, figure=False, width=PANEL_WIDTH)
        yield status_html, aligned_html

    def why_this(picked, choice, typed):
        if picked is None:
            raise gr.Error("Click a generated character of the text first.", title="Cannot attribute")
        run, index = picked
        figure, words = why.why_clicked(run, index, typed or choice)
        return gr.update(value=figure, visible=True), words

    ask.click(why_this, [picked, choice, typed], [why_plot, why_words], api_visibility="private")
    text.select(open_at, [recipe, text], [panel, where, choice, typed, picked, status, aligned],
                api_visibility="private", show_progress="hidden")
    go.click(branch_here, [picked, choice, typed], [status, aligned], api_visibility="private",
             show_progress_on=[status, aligned])
    close.click(lambda: gr.update(visible=False), None, panel, api_visibility="private")
    return {"panel": panel, "choice": choice, "typed": typed, "go": go}
