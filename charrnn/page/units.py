"""The Units tab: which units follow a signal over a text, which are on over a selected span and where else they do
the same, one unit's profile over the reference text, the gates by context, the memory timescales and what the
GRU's memory gains over a bigram. The work is charrnn.page.units_service's; this module is the layout and the wiring.

Public endpoints (each returns JSON; the tab draws from it): /find_units(text, pattern), /unit_profile(layer, kind,
unit), /unit_map(), /units_explained_by(query), /select_and_match(text, start, end, threshold), /memory_gain(text).
Each uses the session's current model; /compare_models(text, model_a, model_b) names its two models.
"""

from __future__ import annotations

import functools

import gradio as gr

from ..analysis.explain import FAMILIES, MAX_QUERY_CHARS, SHIFTS
from ..analysis.matching import MAX_SPAN, THRESHOLD
from ..analysis.signals import BUILTIN, MAX_PATTERN_CHARS
from ..analysis.units import format_timescale
from ..decoding.unit import KIND_NAMES
from ..figures import run as figures
from ..figures import units as unit_figures
from ..figures.units import memory_gain_html
from ..models.shipped import SHIPPED_NAMES, shipped_model
from ..serving.registry import ModelKey
from . import inputs
from .site import Site
from .views import kind_choices, markdown_text
from .units_service import (EXPLAINED_ROWS, FOUND_ROWS, MAX_COMPARE_CHARS, MAX_FIND_CHARS, MAX_GAIN_CHARS,
                            UnitService, UnitsUnavailable, capitalised, display_name)

OPENING_CHARS = 1500  # of the reference text, in the finder's text box when the tab opens
GAIN_OPENING = slice(1500, 2700)  # the next part of it, in the memory gain's text box
REGEX = "regular expression"
FIRST_SIGNAL = "line position"
FOUND_HEADERS = ["layer", "kind", "unit", "r", "τ (steps)"]
SELECTED_HEADERS = ["layer", "unit", "lowest inside", "highest around"]
EXPLAINED_HEADERS = ["layer", "kind", "unit", "explanation", "family", "r fit", "r held out", "chance"]
CLEARLY = 0.3  # |r| from which a unit is said to follow a signal


def as_page_error(title: str):
    """A ValueError from the analyses (bad input, or nothing to show for this model) as a gr.Error, so the page says
    what was wrong and keeps what it showed."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UnitsUnavailable as e:  # it begins with the model's name
                raise gr.Error(str(e), title=title) from None
            except ValueError as e:
                raise gr.Error(capitalised(str(e)), title=title) from None
        return run
    return wrap


# ---- drawing the JSON answers ----

def found_rows(result: dict | None) -> list[list]:
    return [[row["layer"], row["kind"], row["unit"], round(row["r"], 3),
             format_timescale(row["timescale"]) if "timescale" in row else ""]
            for row in (result or {}).get("units", [])]


def found_view(result: dict | None):
    if not result:
        return [], figures.message_figure("Choose a signal and press Find units.")
    return found_rows(result), unit_figures.found_units_figure(result)


def explained_rows(result: dict | None) -> list[list]:
    rounded = lambda r: "" if r is None else round(r, 3)  # noqa: E731
    return [[row["layer"], row["kind"], row["unit"], row["explanation"], row["family"], rounded(row["r_fit"]),
             rounded(row["r_heldout"]), rounded(row["chance"])] for row in (result or {}).get("units", [])]


def explained_view(result: dict | None):
    """(the table, a line saying what was found) of a units_explained_by answer."""
    if not result:
        return [], ""
    found = len(result["units"])
    said = (f"No unit of {result['model']} is explained by {result['query']!r}." if not found else
            f"{found}{' (the best)' if found == EXPLAINED_ROWS else ''} unit{'s' if found != 1 else ''} of "
            f"{result['model']} explained by {result['query']!r}, best held-out |r| first.")
    return explained_rows(result), markdown_text(said)


def explanation_line(profile: dict) -> str:
    """The start of a profile's summary: its explanation and the two scores."""
    if "explanation" not in profile:
        return ""
    if profile["explanation"] is None:
        return "**No explanation**: the unit is constant over a half of the reference text. "
    return (f"**Explained by {markdown_text(profile['explanation'])}** ({profile['family']}): r "
            f"{profile['r_fit']:+.2f} over the first half of the reference text, where it was chosen, **"
            f"{profile['r_heldout']:+.2f} held out** over the second half (chance {profile['chance']:.2f}). ")


def profile_view(profile: dict | None):
    """(summary, histogram, pushes, contexts) of a unit_profile answer."""
    if not profile:
        nothing = figures.message_figure("Choose a unit.")
        return "", nothing, nothing, ""
    follows = ", ".join(f"{s['signal']} (r = {s['r']:+.2f})" for s in profile["signals"])
    if not profile["signals"] or abs(profile["signals"][0]["r"]) < CLEARLY:
        follows = f"none of them clearly ({follows or 'none varies'})"
    summary = explanation_line(profile) + (
        f"**{unit_figures.unit_name(profile)}, {KIND_NAMES[profile['kind']]}** over {profile['model']}'s "
        f"reference text: mean {profile['mean']:+.3f}, standard deviation {profile['std']:.3f}; memory "
        f"timescale of its position τ = 1 / (1 − mean z_t) = **{format_timescale(profile['timescale'])} steps**. "
        f"Of the built-in signals it follows best: {follows}.")
    if profile["pushes"]:
        pushes = unit_figures.pushes_figure(profile)
    else:
        pushes = figures.message_figure(
            "Only a last-layer hidden unit feeds the output layer:<br>choose one to see the characters it pushes "
            "up and down.", height=300)
    return summary, unit_figures.histogram_figure(profile), pushes, unit_figures.contexts_html(profile)


def matches_view(result: dict | None):
    """(what was selected, the selected units, the matches) of a select_and_match answer."""
    if not result:
        return "Select a few characters in the text above (drag over them with the mouse).", [], ""
    selection = result["selection"]
    said = (f"**{selection['selected']}** hidden unit{'s are' if selection['selected'] != 1 else ' is'} on "
            f"(> {selection['threshold']:g}) over all of `{selection['selected_text']!r}` (offsets "
            f"{selection['start']}–{selection['end'] - 1}) and off over the {selection['pad']} characters on each "
            "side"
            + (f"; the best {len(selection['units'])} are listed" if selection["selected"] > len(selection["units"])
               else "") + ".")
    if result.get("note"):
        said += f" {result['note']}"
    rows = [[row["layer"], row["unit"], round(row["min_inside"], 3),
             "" if row["max_around"] is None else round(row["max_around"], 3)] for row in selection["units"]]
    shown = unit_figures.matches_html(result) if result["matches"] else ""
    return said, rows, shown


def gain_view(result: dict | None) -> str:
    if not result:
        return "<p>Press Compare with the bigram.</p>"
    return memory_gain_html(result["text"], result["rows"])


def unit_choice(row: list) -> tuple[int, str, int]:
    """(layer, kind, unit) of a row of the found, explained or selected units' table."""
    if len(row) in (len(FOUND_HEADERS), len(EXPLAINED_HEADERS)):
        return int(row[0]), str(row[1]), int(row[2])
    return int(row[0]), "hidden", int(row[1])


def opening(analysis, *args):
    """An analysis for what the tab opens with, or None where this model cannot have it (the tab says why)."""
    try:
        return analysis(*args)
    except ValueError:
        return None


class UnitsTab:
    """Builds the tab inside the current gr.Tab: what it opens with (the finder's answer for the reference text, the
    profile of the best unit, the memory gain), the sections, then the endpoints and events."""

    def __init__(self, site: Site, model_key: gr.State):
        self.site, self.model_key = site, model_key
        self.service = service = UnitService(site.models)
        key = site.default_key
        prepared = service.preparation(key)
        prepared.wait_for_atlas(timeout=60)
        model = site.default_model
        reference = prepared.text[prepared.text.find("\n\n") + 2 :] if prepared.text else None  # a speech's start
        self.opening_text = reference[:OPENING_CHARS] if reference else site.opening_trace.text
        self.gain_text = reference[GAIN_OPENING] if reference else site.opening_trace.text
        found = opening(service.find, key, self.opening_text, FIRST_SIGNAL) if model.kinds else None
        first = found["units"][0] if found else None
        profile = opening(service.profile, key, first["layer"], first["kind"], first["unit"]) if first else None
        gain = opening(service.memory_gain, key, self.gain_text) if model.kinds else None
        overview = service.overview(key)

        gr.Markdown(
            "A *unit* is one position of one layer: its hidden state h_t, or one of its gates (a GRU's reset r_t and "
            "update z_t; an LSTM's input i_t, forget f_t and output o_t, and its cell state c_t), read after each "
            "character in one pass from the zero state. Find the units that follow a pattern in a text, select a "
            "span to find the units that pick it out, and open any unit's profile over the model's "
            "reference text (the validation part of Tiny Shakespeare for the shipped model).")
        self.status = gr.Markdown(overview["status"], elem_id="units-status")
        self.shown = gr.State((key, prepared.settled, prepared.atlas is not None))  # what the model's parts show
        self.timer = gr.Timer(2.0, active=True)
        self.find_section(found)
        self.select_section()
        self.explained_section(overview)
        self.profile_section(model, first, profile)
        self.overview_section(overview)
        self.gain_section(gain)
        self.compare_section()
        self.wire()

    def components(self) -> dict:
        """What the page uses: `open_profile`, a hidden textbox (elem_id unit-to-profile) that opens the profile of
        the unit named in it, such as "L3 hidden 99"; the profile's unit, for What-if."""
        return {"open_profile": self.open_profile, "text": self.text, "found": self.found_json,
                "profile": self.profile_json, "layer": self.layer, "kind": self.kind, "unit": self.unit,
                "force": self.force, "service": self.service}

    # ---- the sections ----

    def find_section(self, found: dict | None) -> None:
        gr.Markdown("## Find units\nEvery unit of every layer and kind, ranked by the Pearson correlation r between "
                    "its value after each character and a signal over the same characters: a built-in one, or 1 "
                    "inside the matches of a regular expression and 0 elsewhere. Click a unit to open its profile "
                    "below.")
        with gr.Row():
            with gr.Column(scale=3):
                self.text = gr.Textbox(self.opening_text, lines=12, max_lines=12, elem_id="units-text",
                                       autoscroll=False, label=f"Text (up to {MAX_FIND_CHARS:,} characters; select a "
                                                               "span in it to match it)")
            with gr.Column(scale=2, min_width=300):
                self.choice = gr.Dropdown([*BUILTIN, REGEX], value=FIRST_SIGNAL, label="Signal",
                                          elem_id="units-signal")
                self.regex = gr.Textbox(label="Regular expression (multiline; writing one here chooses it)",
                                        placeholder=r"^[A-Z][A-Za-z ]*:$   or   [aeiou]   or   (?<=\n\n).",
                                        max_length=MAX_PATTERN_CHARS, elem_id="units-regex")
                self.described = gr.Markdown(BUILTIN[FIRST_SIGNAL].description, elem_id="units-signal-description")
                # what /find_units is asked: the name or the expression
                self.pattern = gr.Textbox(FIRST_SIGNAL, visible=False)
                self.find = gr.Button("Find units", variant="primary", elem_id="find-units")
        self.found_json = gr.JSON(found, visible=False, label="find_units")
        rows, figure = found_view(found)
        with gr.Row():
            self.found_table = gr.Dataframe(rows, headers=FOUND_HEADERS, type="array", interactive=False,
                                            max_height=620, label=f"The {FOUND_ROWS} units that follow it best (click "
                                                                  "one)", elem_id="found-units", scale=2)
            self.found_plot = gr.Plot(figure, label="Pearson r", elem_id="found-units-plot", scale=3)

    def select_section(self) -> None:
        gr.Markdown(f"## Select and match\nSelect up to {MAX_SPAN} characters of the text above: the hidden units "
                    "that are on over all of them and off just before and after are listed (as in LSTMVis), then the "
                    "places in the reference text where the same units do the same.")
        with gr.Row():
            self.start = gr.Number(label="Selection start", precision=0, minimum=0, elem_id="select-start")
            self.end = gr.Number(label="Selection end (exclusive)", precision=0, minimum=1, elem_id="select-end")
            self.threshold = gr.Slider(0.05, 0.95, THRESHOLD, step=0.05, label="On means h_t above")
        self.match_button = gr.Button("Match", elem_id="match-units", size="md")
        self.match_json = gr.JSON(visible=False, label="select_and_match")
        self.selection_summary = gr.Markdown(matches_view(None)[0], elem_id="selection-summary")
        with gr.Row():
            self.selected_table = gr.Dataframe(headers=SELECTED_HEADERS, type="array", interactive=False,
                                               max_height=420, label="Selected units (click one)",
                                               elem_id="selected-units", scale=2)
            with gr.Column(scale=3):
                self.matches = gr.HTML(elem_id="unit-matches")

    def explained_section(self, overview: dict) -> None:
        gr.Markdown("## Every unit explained\nEach unit's explanation is the candidate, computed from the text alone "
                    "(positions, spans, character classes, each character, what comes after a frequent character, "
                    "bigram or trigram, distances since a character, saved regular expressions), that follows it "
                    "best over the first half of the reference text (highest |r|); its score is its r over the "
                    "second half, held out. The chance level is that r with the unit's values shifted circularly "
                    f"(the mean |r| over {SHIFTS} random shifts).")
        self.explained_summary = gr.Markdown(overview["explained"], elem_id="explained-summary")
        self.unit_map_plot = gr.Plot(overview["unit_map"], label="Unit map", elem_id="unit-map")
        self.shares_table = gr.Dataframe(overview["shares"], headers=unit_figures.SHARES_HEADERS, type="array",
                                         interactive=False, max_height=460, elem_id="explained-shares",
                                         label="Share of units explained, per layer and kind, beside chance")
        with gr.Row():
            self.query = gr.Textbox(label="Units explained by …", max_length=MAX_QUERY_CHARS, scale=4,
                                    placeholder=f"a family ({', '.join(FAMILIES)}) or a word: vowel, line, after e",
                                    elem_id="explained-query")
            self.search = gr.Button("Search", elem_id="search-explained", size="md", scale=1)
        self.explained_json = gr.JSON(visible=False, label="units_explained_by")
        self.explained_said = gr.Markdown(elem_id="explained-said")
        self.explained_table = gr.Dataframe(headers=EXPLAINED_HEADERS, type="array", interactive=False,
                                            max_height=420, elem_id="explained-units",
                                            label="Units explained by it, best held-out |r| first (click one)")
        self.map_api, self.map_json = gr.Button(visible=False), gr.JSON(visible=False, label="unit_map")

    def profile_section(self, model, first: dict | None, profile: dict | None) -> None:
        gr.Markdown("## Unit profile\nOne unit over the model's whole reference text: its histogram, the contexts "
                    "where it is highest and lowest, and for a last-layer hidden unit the characters it pushes up and "
                    "down.")
        layers, hidden = (model.num_layers, model.hidden_size) if model.kinds else (1, 1)
        with gr.Row():
            self.layer = gr.Radio([(f"layer {k}", k) for k in range(1, layers + 1)],
                                  value=first["layer"] if first else 1, label="Layer", scale=2)
            self.kind = gr.Radio(kind_choices(model.kinds), value=first["kind"] if first else "hidden", label="Kind",
                                 scale=3)
            self.unit = gr.Number(first["unit"] if first else 0, precision=0, minimum=0, maximum=hidden - 1,
                                  label=f"Unit (0–{hidden - 1})", elem_id="profile-unit", scale=1)
        with gr.Row():
            self.show = gr.Button("Show profile", elem_id="show-profile", size="md")
            # Wired by the page to the What-if tab: a correlation is a hypothesis, forcing the unit tests it.
            self.force = gr.Button("Force this unit in What-if →", elem_id="force-in-whatif", size="md")
        self.open_profile = gr.Textbox(visible="hidden", elem_id="unit-to-profile", label="Unit to open")
        self.profile_json = gr.JSON(profile, visible=False, label="unit_profile")
        summary, histogram, pushes, contexts = profile_view(profile)
        self.profile_summary = gr.Markdown(summary, elem_id="profile-summary")
        with gr.Row():
            self.histogram_plot = gr.Plot(histogram, label="Histogram", elem_id="profile-histogram")
            self.pushes_plot = gr.Plot(pushes, label="Pushes", elem_id="profile-pushes")
        self.profile_contexts = gr.HTML(contexts, elem_id="profile-contexts")

    def overview_section(self, overview: dict) -> None:
        gr.Markdown("## Gates by context\nThe seed's claims about the gates, measured over the reference text: each "
                    "layer's mean gate over its units in a context, against a baseline.")
        self.claims = gr.HTML(overview["claims"], elem_id="gate-claims")
        self.gates_plot = gr.Plot(overview["gates"], label="Gates by context", elem_id="gates-by-context")
        gr.Markdown("## Memory timescales\nHow long each unit position keeps what it holds: τ = 1 / (1 − its mean "
                    "update gate, or an LSTM's forget gate) over the reference text.")
        self.timescale_plot = gr.Plot(overview["timescales"], label="Memory timescales", elem_id="timescales")

    def gain_section(self, gain: dict | None) -> None:
        gr.Markdown(f"## Memory gain\nHow much less surprised the GRU is by each character, having read everything "
                    f"before it, than the shipped bigram, which sees only the character before (up to "
                    f"{MAX_GAIN_CHARS:,} characters).")
        self.gain_text_box = gr.Textbox(self.gain_text, lines=6, max_lines=6, label="Text", elem_id="gain-text",
                                        autoscroll=False)
        self.compare = gr.Button("Compare with the bigram", elem_id="compare-gain", size="md")
        self.gain_json = gr.JSON(gain, visible=False, label="memory_gain")
        self.gain_html = gr.HTML(gain_view(gain), elem_id="memory-gain")

    def compare_section(self) -> None:
        gr.Markdown(f"## Compare two models\nEach character's surprisal under two models that share a vocabulary "
                    f"(up to {MAX_COMPARE_CHARS:,} characters), where they disagree most, and, for the units of the "
                    "first that follow the built-in signals most closely, the units of the second that do the same "
                    "and that track them (over the first model's reference text).")
        shipped = [(display_name(ModelKey(shipped_model(name))), shipped_model(name)) for name in SHIPPED_NAMES]
        with gr.Row():
            self.model_a = gr.Dropdown(shipped, value=shipped[1][1], allow_custom_value=True, label="Model A",
                                       info="a shipped model, an allowed folder or a Hub repo id", elem_id="model-a")
            self.model_b = gr.Dropdown(shipped, value=shipped[2][1], allow_custom_value=True, label="Model B",
                                       elem_id="model-b")
        self.compare_text = gr.Textbox(self.gain_text, lines=4, max_lines=6, label="Text", elem_id="compare-text",
                                       autoscroll=False)
        self.compare_models_button = gr.Button("Compare the models", elem_id="compare-models", size="md")
        self.comparison_json = gr.JSON(None, visible=False, label="compare_models")
        self.comparison_html = gr.HTML("<p>Press Compare the models.</p>", elem_id="model-comparison")

    # ---- the endpoints ----

    @as_page_error("Cannot find units")
    def find_units(self, text, pattern, key):
        """Rank every unit by the Pearson r of its value after each character of `text` with a signal: a built-in
        one's name or a regular expression. The API endpoint /find_units."""
        return self.service.find(key, text, pattern)

    @as_page_error("Cannot show the unit")
    def unit_profile(self, layer, kind, unit, key):
        """One unit's profile over the model's reference text. The API endpoint /unit_profile."""
        return self.service.profile(key, layer, kind, unit)

    @as_page_error("Cannot map the units")
    def unit_map(self, key):
        """Every unit's explanation over the model's reference text. The API endpoint /unit_map."""
        return self.service.unit_map(key)

    @as_page_error("Cannot search the explanations")
    def explained_by(self, query, key):
        """The units explained by a family or a word, best first. The API endpoint /units_explained_by."""
        return self.service.explained_by(key, query)

    @as_page_error("Cannot match the selection")
    def select_and_match(self, text, start, end, threshold, key):
        """The hidden units on over text[start:end] and off around it, and where they do the same in the reference
        text. The API endpoint /select_and_match."""
        return self.service.select_and_match(key, text, start, end, threshold)

    @as_page_error("Cannot compare with the bigram")
    def memory_gain(self, text, key):
        """Each character's surprisal under the GRU and under the bigram. The API endpoint /memory_gain."""
        return self.service.memory_gain(key, text)

    @as_page_error("Cannot compare the models")
    def compare_models(self, text, model_a, model_b):
        """Each character's surprisal under two models and their units matched. The API endpoint /compare_models."""
        return self.service.compare_models(text, model_a, model_b)

    # ---- the tab's own events ----

    def open_row(self, result, evt: gr.SelectData, key):
        """A click on a unit of a table: that unit's profile."""
        row = evt.row_value or result[evt.index[0]]
        chosen = unit_choice(row)
        return (*chosen, self.unit_profile(*chosen, key))

    def open_named(self, name, key):
        """A unit named in the hidden textbox (by another tab), such as "L3 hidden 99": its profile."""
        try:
            chosen = inputs.parse_unit_name(name)
        except inputs.InputError:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return (*chosen, self.unit_profile(*chosen, key))

    def select_span(self, text, threshold, key, evt: gr.SelectData):
        """A span selected in the text: its units and their matches. Selecting all of the text (to replace it) or
        a span too long to match is left alone."""
        start, end = evt.index
        if end - start > MAX_SPAN or end <= start:
            if 0 < end - start < len(text):
                gr.Info(f"Select at most {MAX_SPAN} characters to match them.")
            return gr.skip(), gr.skip(), gr.skip()
        return start, end, self.select_and_match(text, start, end, threshold, key)

    def refresh(self, key, shown):
        """The model's own parts of the tab, when the visitor's model or what is prepared for it changed."""
        prepared = self.service.preparation(key)
        now = (key, prepared.settled, prepared.atlas is not None)
        active = gr.Timer(active=not prepared.settled)
        if now == shown:
            return prepared.status(), *[gr.skip()] * 10, shown, active
        overview = self.service.overview(key)
        if key == shown[0]:
            unit_inputs = gr.skip(), gr.skip(), gr.skip(), gr.skip()
        else:  # another model: its own layers, kinds and units
            model = self.site.model(key)
            layers, hidden = (model.num_layers, model.hidden_size) if model.kinds else (1, 1)
            unit_inputs = (gr.update(choices=[(f"layer {k}", k) for k in range(1, layers + 1)], value=1),
                           gr.update(choices=kind_choices(model.kinds), value="hidden"),
                           gr.update(maximum=hidden - 1, label=f"Unit (0–{hidden - 1})", value=0), [])
        return (overview["status"], overview["claims"], overview["gates"], overview["timescales"],
                overview["unit_map"], overview["shares"], overview["explained"], *unit_inputs, now, active)

    # ---- the events ----

    def wire(self) -> None:
        private = dict(api_visibility="private", show_progress="hidden")
        profile_out = [self.profile_summary, self.histogram_plot, self.pushes_plot, self.profile_contexts]
        self.find.click(self.find_units, [self.text, self.pattern, self.model_key], self.found_json,
                        api_name="find_units").success(found_view, self.found_json, [self.found_table,
                                                                                     self.found_plot], **private)
        # The signal's choice and the expression become the one pattern in the browser, at once (no round trip);
        # writing an expression chooses it, emptying the box leaves the choice as it was.
        self.choice.change(None, [self.choice, self.regex], self.pattern, js=f"(c, r) => c === '{REGEX}' ? r : c")
        self.regex.change(None, [self.regex, self.choice], [self.choice, self.pattern],
                          js=f"(r, c) => r ? ['{REGEX}', r] : [c, c === '{REGEX}' ? r : c]")
        self.choice.change(lambda c: BUILTIN[c].description if c in BUILTIN else (
            "1 on every character inside a match of the expression, 0 elsewhere"), self.choice, self.described,
            **private)

        profile_in = [self.layer, self.kind, self.unit, self.model_key]
        gr.on([self.show.click, self.unit.submit], self.unit_profile, profile_in, self.profile_json,
              api_name="unit_profile").success(profile_view, self.profile_json, profile_out, **private)
        chosen_out = [self.layer, self.kind, self.unit, self.profile_json]
        for table in (self.found_table, self.selected_table, self.explained_table):
            table.select(self.open_row, [table, self.model_key], chosen_out, **private
                         ).success(profile_view, self.profile_json, profile_out, **private)
        self.open_profile.change(self.open_named, [self.open_profile, self.model_key], chosen_out, **private
                                 ).success(profile_view, self.profile_json, profile_out, **private)

        self.map_api.click(self.unit_map, [self.model_key], self.map_json, api_name="unit_map")
        gr.on([self.search.click, self.query.submit], self.explained_by, [self.query, self.model_key],
              self.explained_json, api_name="units_explained_by").success(
            explained_view, self.explained_json, [self.explained_table, self.explained_said], **private)

        matched = [self.selection_summary, self.selected_table, self.matches]
        self.match_button.click(self.select_and_match, [self.text, self.start, self.end, self.threshold,
                                                        self.model_key], self.match_json, api_name="select_and_match"
                                ).success(matches_view, self.match_json, matched, **private)
        self.text.select(self.select_span, [self.text, self.threshold, self.model_key],
                         [self.start, self.end, self.match_json], **private
                         ).success(matches_view, self.match_json, matched, **private)

        self.compare.click(self.memory_gain, [self.gain_text_box, self.model_key], self.gain_json,
                           api_name="memory_gain").success(gain_view, self.gain_json, self.gain_html, **private)

        self.compare_models_button.click(self.compare_models, [self.compare_text, self.model_a, self.model_b],
                                         self.comparison_json, api_name="compare_models").success(
            unit_figures.comparison_html, self.comparison_json, self.comparison_html, **private)

        model_parts = [self.status, self.claims, self.gates_plot, self.timescale_plot, self.unit_map_plot,
                       self.shares_table, self.explained_summary, self.layer, self.kind, self.unit,
                       self.explained_table, self.shown, self.timer]
        self.timer.tick(self.refresh, [self.model_key, self.shown], model_parts, **private)
        self.model_key.change(self.refresh, [self.model_key, self.shown], model_parts, **private)


def units_tab(site: Site, model_key: gr.State) -> dict:
    """Build the tab inside the current gr.Tab; returns its components (UnitsTab.components)."""
    return UnitsTab(site, model_key).components()
