"""Why this character? The endpoints /attribute, /patch and /dose_response (the session's model), the Write tab's
"Why this character?" under a clicked character, and the What-if tab's Patch and Dose-response panels. The work is
charrnn.analysis.attribution's and charrnn.analysis.dose's, on the compute thread (the long ones in pieces); the
figures are charrnn.figures.why's."""

from __future__ import annotations

import gradio as gr

from ..analysis import attribution, dose
from ..analysis.attribution import MAX_ATTRIBUTE_CHARS, MAX_PATCH_CHARS
from ..figures import why as why_figures
from ..serving.compute import on_compute_thread, run_in_pieces
from . import inputs
from .site import Site
from .views import kind_choices

ATTRIBUTE_TITLE, PATCH_TITLE, DOSE_TITLE = "Cannot attribute", "Cannot patch", "Cannot sweep"
MAX_VALUES_CHARS = 200
PATCH_EXAMPLE = ("JULIET:\nO Romeo, Romeo! wherefore art thou R", "JULIET:\nO Paris, Paris! wherefore art thou R", "o",
                 "a")


def page_error(title: str, fn, *args, **kwargs):
    """fn(*args) with a bad input's ValueError as the page's gr.Error (the previous figures stay)."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        message = str(e)
        raise gr.Error(message[:1].upper() + message[1:], title=title) from None


def parse_values(values) -> list[float]:
    """Values to force: a list of numbers, or a text of numbers separated by commas or spaces."""
    if isinstance(values, str):
        if len(values) > MAX_VALUES_CHARS:
            raise inputs.InputError(f"Values: at most {MAX_VALUES_CHARS} characters of numbers")
        values = [v for v in values.replace(",", " ").split() if v]
    if not isinstance(values, (list, tuple)) or not values:
        raise inputs.InputError("Values: give one or more numbers separated by commas, such as -1, -0.5, 0, 0.5, 1")
    return [inputs.number("A value", v, -1e9, 1e9) for v in values[: dose.MAX_VALUES + 1]]


class Why:
    """The endpoints, and the panels that use them."""

    def __init__(self, site: Site, model_key: gr.State):
        self.site, self.model_key = site, model_key

    # ---- the endpoints ----

    def attribute(self, text, step, char_a, char_b, key):
        """The logit difference between two characters after reading text[step], split over the units; the API
        endpoint /attribute. `step` counts characters read from 0; char_a defaults to the text's next character
        (or the most likely), char_b to the runner-up."""
        model = self.site.model(key)
        text = page_error(ATTRIBUTE_TITLE, inputs.check_text, model, text, MAX_ATTRIBUTE_CHARS, "attribute")
        step = page_error(ATTRIBUTE_TITLE, inputs.whole_number, "Step", step, 0, len(text) - 1)
        return page_error(ATTRIBUTE_TITLE, on_compute_thread(attribution.attribute), model, text, step,
                          char_a or None, char_b or None)

    def patch(self, clean, corrupted, target, foil, key):
        """Activation patching of the corrupted text with the clean one's states, every layer and step; the API
        endpoint /patch."""
        model = self.site.model(key)
        for text in (clean, corrupted):
            page_error(PATCH_TITLE, inputs.check_text, model, text, MAX_PATCH_CHARS, "patch")
        steps = page_error(PATCH_TITLE, attribution.patch_steps, model, clean, corrupted, target, foil)
        return page_error(PATCH_TITLE, run_in_pieces, steps)

    def dose_response(self, prompt, max_new_chars, layer, kind, unit, values, samples, statistic, key):
        """Force a unit to each of the values, write `samples` runs per value, and measure a statistic of the
        texts, beside a control unit; the API endpoint /dose_response."""
        model = self.site.model(key)

        def check():
            inputs.check_prompt(model, prompt)
            return (inputs.whole_number("Characters", max_new_chars, 1, dose.MAX_NEW_CHARS),
                    inputs.whole_number("Layer", layer, 1, max(1, model.num_layers)),
                    inputs.check_kind(kind, model.kinds or ("hidden",)),
                    inputs.whole_number("Unit", unit, 0, max(0, model.hidden_size - 1)),
                    parse_values(values), inputs.whole_number("Samples", samples, 1, dose.MAX_SAMPLES))

        chars, layer, kind, unit, values, samples = page_error(DOSE_TITLE, check)
        steps = page_error(DOSE_TITLE, dose.dose_steps, model, prompt, chars, layer, kind, unit, values, samples,
                           statistic or "mean line length")
        return page_error(DOSE_TITLE, run_in_pieces, steps)

    def api(self) -> None:
        """/attribute as an endpoint of its own (the page's button below asks by the clicked character)."""
        text, step, a, b = gr.Textbox(visible=False), gr.Number(visible=False), gr.Textbox(visible=False), \
            gr.Textbox(visible=False)
        out = gr.JSON(visible=False)
        button = gr.Button(visible=False)
        button.click(self.attribute, [text, step, a, b, self.model_key], out, api_name="attribute")

    # ---- the What-if tab's panels ----

    def patch_panel(self) -> None:
        gr.Markdown("Two texts of the same length, a clean one and a corrupted one (a name changed, say), and two "
                    "characters. For every layer and step, the corrupted run with that layer's state at that step "
                    "replaced by the clean run's: how much of the clean run's preference for the target over the "
                    "foil, after the last character, comes back (1 all of it, 0 none). Where the information sits.")
        with gr.Row():
            self.clean = gr.Textbox(PATCH_EXAMPLE[0], lines=2, label="Clean text", elem_id="patch-clean", scale=3)
            self.corrupted = gr.Textbox(PATCH_EXAMPLE[1], lines=2, label="Corrupted text", elem_id="patch-corrupted",
                                        scale=3)
        with gr.Row():
            self.target = gr.Textbox(PATCH_EXAMPLE[2], max_lines=1, label="Target", elem_id="patch-target",
                                     info="the character the clean text makes likely")
            self.foil = gr.Textbox(PATCH_EXAMPLE[3], max_lines=1, label="Foil", elem_id="patch-foil")
        self.patch_button = gr.Button("Patch every layer and step", variant="primary", elem_id="patch-button")
        self.patch_json = gr.JSON(visible=False, label="patch")
        self.patch_plot = gr.Plot(label="Patching", elem_id="patch-plot")

    def dose_panel(self, model) -> None:
        gr.Markdown("Force one unit to each of several values (from the first step on), write several samples per "
                    "value (seeds 0, 1, ...) after the run's prompt, and plot a statistic of the texts against the "
                    "value, beside a control unit of the same layer and kind. Spearman's ρ says how steadily the "
                    "statistic follows the value.")
        with gr.Row():
            self.dose_layer = gr.Number(model.num_layers or 1, precision=0, label="Layer", elem_id="dose-layer")
            self.dose_kind = gr.Dropdown(kind_choices(model.kinds), value="hidden", label="Kind", elem_id="dose-kind",
                                         allow_custom_value=True)  # checked, with a clear message
            self.dose_unit = gr.Number(min(99, max(0, model.hidden_size - 1)), precision=0, label="Unit",
                                       elem_id="dose-unit")
        with gr.Row():
            self.dose_values = gr.Textbox("-1, -0.5, 0, 0.5, 1", max_lines=1, label="Values", elem_id="dose-values")
            self.dose_samples = gr.Number(4, precision=0, label=f"Samples per value (1 to {dose.MAX_SAMPLES})",
                                          elem_id="dose-samples")
            self.dose_chars = gr.Number(200, precision=0, label=f"Characters per sample (1 to {dose.MAX_NEW_CHARS})",
                                        elem_id="dose-chars")
        self.statistic = gr.Dropdown(list(dose.STATISTICS), value="mean line length", allow_custom_value=True,
                                     label="Statistic", info="or type a regular expression: its matches per 100 "
                                     "characters", elem_id="dose-statistic")
        self.dose_button = gr.Button("Sweep", variant="primary", elem_id="dose-button")
        self.dose_json = gr.JSON(visible=False, label="dose_response")
        self.dose_plot = gr.Plot(label="Dose-response", elem_id="dose-plot")

    def wire(self, prompt: gr.Textbox) -> None:
        private = dict(api_visibility="private")
        self.patch_button.click(self.patch, [self.clean, self.corrupted, self.target, self.foil, self.model_key],
                                self.patch_json, api_name="patch").success(
            lambda result, corrupted: why_figures.patch_figure(result, corrupted), [self.patch_json, self.corrupted],
            self.patch_plot, **private)
        self.dose_button.click(self.dose_response, [prompt, self.dose_chars, self.dose_layer, self.dose_kind,
                                                    self.dose_unit, self.dose_values, self.dose_samples,
                                                    self.statistic, self.model_key],
                               self.dose_json, api_name="dose_response").success(
            why_figures.dose_figure, self.dose_json, self.dose_plot, **private)
        self.model_key.change(self.fit_model, self.model_key, [self.dose_layer, self.dose_kind, self.dose_unit],
                              show_progress="hidden", **private)

    def fit_model(self, key):
        model = self.site.model(key)
        if not model.kinds:
            return gr.skip(), gr.skip(), gr.skip()
        return (gr.update(value=model.num_layers), gr.update(choices=kind_choices(model.kinds), value="hidden"),
                gr.update(value=min(99, model.hidden_size - 1)))

    # ---- under a clicked character of the Write tab ----

    def why_clicked(self, run, index: int, against: str | None) -> tuple:
        """The attribution of the clicked character of a run (text[index], chosen at step index - 1) against
        `against` (the runner-up when None): (figure, words)."""
        trace = self.site.trace(run)
        model = self.site.model(run.model)
        result = page_error(ATTRIBUTE_TITLE, on_compute_thread(attribution.attribute), model, trace.text, index - 1,
                            trace.text[index], against or None)
        return why_figures.attribution_figure(result), why_figures.attribution_html(result)
