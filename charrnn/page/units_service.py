"""The Units tab's work, apart from its layout: what the page can say about a model's units, and the analyses a
visitor runs over their own text, each bounded and none of them holding up anybody's writing.

Each model's unit atlas (charrnn.analysis.atlas), its gates by context and its match index (charrnn.analysis.matching)
are prepared once, in the background, on a thread of their own: the atlas is read from the model folder's
atlas.safetensors, or built from its reference.txt when there is none (about 70 s of compute for a 3 x 512 GRU), then
the index of the reference text's start is built (about 15 s). Meanwhile the tab says what is being prepared. Every pass
over a text, the visitor's or the reference text, runs on the compute thread in pieces
(charrnn.serving.compute.run_in_pieces), so the decode server keeps writing everyone's text between them.

Bounded for a public page: a text to search for units or to select in has at most MAX_FIND_CHARS characters, one to
compare with the bigram at most MAX_GAIN_CHARS (a pass over 5,000 characters is a few seconds of the compute
thread on a 2-core CPU, its JSON and coloured text under 1 MB), a selection at most matching.MAX_SPAN; the answers
have at most FOUND_ROWS units and MATCHES matches; the preparations of at most KEPT models are kept.
"""

from __future__ import annotations

import html
import textwrap
import threading
from pathlib import Path

from ..analysis.atlas import (ATLAS_FILE, Atlas, AtlasError, atlas_steps, load_atlas, read_patterns,
                              read_reference_text, unit_profile)
from ..analysis.compare import compare_steps, disagreements, match_units_steps
from ..analysis.compare import summarize as summarize_comparison
from ..analysis.contexts import gates_by_context_of
from ..analysis.matching import (MATCH_CHARS, PAD, SelectionError, check_threshold, match, match_index_steps,
                                 select_units_steps)
from ..analysis.memory_gain import memory_gain_steps, summarize
from ..analysis.units import MAX_FIND_CHARS, TOP_UNITS, find_units_steps
from ..cache import BoundedCache
from ..figures import run as figures
from ..figures import units as unit_figures
from ..models.loading import ModelLoadError
from ..models.shipped import shipped_model
from ..serving.compute import on_compute_thread, run_in_pieces
from ..serving.registry import ROOT, ModelKey, ModelRegistry
from .inputs import InputError, check_kind, check_text, model_key, number, whole_number
from .views import markdown_text

MAX_GAIN_CHARS = 5_000
ATLAS_READ_S = 30.0  # how long a request waits for an atlas being read from its file (seconds for the shipped one)
MAX_COMPARE_CHARS = 5_000
MATCH_UNITS_CHARS = 10_000  # of model A's reference text, read three times for the unit matching
COMPARED_PAIRS = 16  # the unit matchings kept, by pair of models
FOUND_ROWS = 30
EXPLAINED_ROWS = 50
MATCHES = 10
KEPT = 4
# Characters per piece of a pass: each piece is one task of the compute thread, about 50 ms for a 3 x 512 GRU on
# the 2-core machines (hidden states alone, for the index, take about half as long per character).
PIECE_CHARS = 64
INDEX_PIECE_CHARS = 128
ATLAS_PIECE_CHARS = 64
BIGRAM_FOLDER = shipped_model("bigram")


NO_CLAIMS = ("The seed's claims are about a GRU's reset and update gates; this model is an LSTM, whose input, forget "
             "and output gates they do not describe.")


class UnitsUnavailable(ValueError):
    """What the page cannot show for this model, and why."""


def no_units(name: str) -> str:
    return (f"{name} is a bigram: it has no recurrent layers, so it has no units, gates or memory to look into. "
            "Load a GRU in the Write tab's Model panel (the shipped one is weights/tiny-shakespeare).")


class Preparation:
    """One model's atlas, gates by context, their figures and the match index, prepared on a thread of its own.

    Each field is None until it is ready (the atlas first, then the figures, then the index); `problem` says why
    there is no atlas when there cannot be one (no reference text, a bigram, a model from the Hub)."""

    def __init__(self, model, folder: Path | None, name: str, problem: str | None = None):
        self.model, self.folder, self.name = model, folder, name
        self.text: str | None = None
        self.atlas: Atlas | None = None
        self.figures: dict | None = None  # set before the atlas: once the atlas is there, so are they
        self.explained: list[dict] | None = None  # every unit's explanation (unit_map's rows), with the figures
        self.index = None
        self.problem, self.index_problem = problem, None
        self.stage, self.done, self.total = "waiting", 0, 0
        self.changed = threading.Condition()
        if problem is not None:
            self.set_stage("unavailable")

    def start(self) -> None:
        """Prepare on a thread of its own (nothing to do when there cannot be an atlas)."""
        if self.problem is None:
            threading.Thread(target=self.run, name=f"charrnn-units-{self.name}", daemon=True).start()

    def set_stage(self, stage: str, done: int = 0, total: int = 0) -> None:
        with self.changed:
            self.stage, self.done, self.total = stage, done, total
            self.changed.notify_all()

    def advance(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def wait_for_atlas(self, timeout: float) -> bool:
        """Wait while the atlas is read from its file (not while it is built); whether it is ready."""
        with self.changed:
            self.changed.wait_for(lambda: self.stage not in ("waiting", "loading the atlas"), timeout)
        return self.atlas is not None

    def run(self) -> None:
        try:
            self.text = read_reference_text(self.folder)
            atlas = self.load_or_build(self.text)
            self.figures = {"timescales": unit_figures.timescale_figure(atlas.timescale)}
            if "update" in atlas.kinds:  # the seed's claims are about a GRU's gates
                claims = gates_by_context_of(atlas)
                self.figures |= {"gates": unit_figures.gate_context_figure(claims),
                                 "claims": unit_figures.claims_html(claims)}
            else:
                self.figures |= {"gates": figures.message_figure(NO_CLAIMS), "claims": f"<p>{NO_CLAIMS}</p>"}
            self.explained = atlas.explanations.rows()
            self.figures |= explanation_views(atlas, self.explained, self.name)
            self.atlas = atlas
        except (AtlasError, ValueError) as e:  # no reference text, an unreadable one, one the model cannot read
            self.problem = str(e)
            self.set_stage("unavailable")
            return
        except Exception as e:  # noqa: BLE001 - the page says so and goes on without the atlas
            self.problem = f"preparing the atlas failed ({type(e).__name__}: {e})"
            self.set_stage("unavailable")
            return
        try:
            chars = min(len(self.text), MATCH_CHARS)
            self.set_stage("building the match index", 0, chars)
            self.index = run_in_pieces(match_index_steps(self.model, self.text, chars, chunk_size=INDEX_PIECE_CHARS,
                                                         progress=self.advance))
        except Exception as e:  # noqa: BLE001
            self.index_problem = f"building the match index failed ({type(e).__name__}: {e})"
        self.set_stage("ready")

    def load_or_build(self, text: str) -> Atlas:
        path = self.folder / ATLAS_FILE
        self.set_stage("loading the atlas")
        patterns = read_patterns(self.folder)
        if path.is_file():
            try:
                return on_compute_thread(load_atlas)(path, self.model, text, patterns)  # about 0.2 s
            except AtlasError:
                pass  # built for other weights or another text: build this model's own
        self.set_stage("building the atlas", 0, len(text))
        weights = self.folder / "model.safetensors"
        steps = atlas_steps(self.model, text, chunk_size=ATLAS_PIECE_CHARS, progress=self.advance,
                            model_file=weights if weights.is_file() else None, patterns=patterns)
        return run_in_pieces(steps)

    # ---- what the tab says ----

    def percent(self) -> str:
        return f"{100 * self.done / max(1, self.total):.0f} %"

    def atlas_status(self) -> str:
        if self.atlas is not None:
            return f"the unit atlas over its {len(self.atlas.text):,}-character reference text is ready"
        if self.stage == "unavailable":
            return f"no unit atlas: {self.problem}"
        if self.stage == "building the atlas":
            return f"its unit atlas is being built from its {self.total:,}-character reference text ({self.percent()})"
        return "its unit atlas is being loaded"

    def index_status(self) -> str:
        if self.index is not None:
            return f"matches are searched in the first {len(self.index.text):,} characters of the reference text"
        if self.index_problem or self.stage == "unavailable":
            return f"no matches can be searched: {self.index_problem or 'there is no reference text'}"
        if self.stage == "building the match index":
            return f"the index of the reference text for matches is being built ({self.percent()})"
        return "the index of the reference text for matches is built after the atlas"

    def status(self) -> str:
        """One line of Markdown (names and messages shown as written): what is ready for this model and what is being
        prepared."""
        if not self.model.kinds:
            return markdown_text(self.problem)
        waiting = "" if self.settled else "⏳ "
        return (f"{waiting}**{markdown_text(self.name)}**: {markdown_text(self.atlas_status())}; "
                f"{markdown_text(self.index_status())}.")

    @property
    def settled(self) -> bool:
        """Nothing more will change."""
        return self.stage in ("ready", "unavailable")

    def why_no_atlas(self) -> str:
        if self.stage == "unavailable":
            if not self.model.kinds:
                return self.problem
            return f"{self.name} has no unit atlas: {self.problem}"
        return f"{self.name}: {self.atlas_status()}. Unit profiles come from it: try again in a little while."


class UnitService:
    """The Units tab's analyses for every visitor's current model (a ModelKey of the page's registry)."""

    def __init__(self, models: ModelRegistry):
        self.models = models
        self.preparations: BoundedCache[ModelKey, Preparation] = BoundedCache(KEPT)
        self.bigram_model = None
        self.matched: BoundedCache[tuple, dict] = BoundedCache(COMPARED_PAIRS)  # (key A, key B) -> unit matching

    def preparation(self, key: ModelKey) -> Preparation:
        """The model's preparation, started on first use."""
        kept = self.preparations.get(key)
        if kept is not None:
            return kept
        prepared = self.prepare(key, self.models.get(key))
        kept = self.preparations.setdefault(key, prepared)  # visitors asking at once share the first one made
        if kept is prepared:
            prepared.start()
        return kept

    def prepare(self, key: ModelKey, model) -> Preparation:
        name = display_name(key)
        if not model.kinds:
            return Preparation(model, None, name, problem=no_units(name))
        try:
            source, local = self.models.resolve(key.source)
        except ModelLoadError as e:
            return Preparation(model, None, name, problem=str(e))
        if not local:
            return Preparation(model, None, name, problem=(
                "it came from the Hugging Face Hub, and the page keeps only the weights of a Hub model (an atlas needs "
                "the reference.txt of a model folder)"))
        return Preparation(model, Path(source), name)

    def gru(self, key: ModelKey):
        """The model, or UnitsUnavailable when it has no units (a bigram)."""
        model = self.models.get(key)
        if not model.kinds:
            raise UnitsUnavailable(no_units(display_name(key)))
        return model

    def bigram(self):
        """The shipped bigram, the memory-less baseline (loaded once, through the registry's checks)."""
        if self.bigram_model is None:
            self.bigram_model = self.models.get(ModelKey(str(BIGRAM_FOLDER)))
        return self.bigram_model

    # ---- the analyses ----

    def find(self, key: ModelKey, text, pattern) -> dict:
        """charrnn.analysis.units.find_units over the visitor's text for the FOUND_ROWS best units, each with its
        timescale
        over the reference text when the atlas is ready."""
        model = self.gru(key)
        check_text(model, text, MAX_FIND_CHARS, "find units in")
        steps = find_units_steps(model, text, pattern, top=FOUND_ROWS, max_chars=MAX_FIND_CHARS,
                                 chunk_size=PIECE_CHARS)
        result = run_in_pieces(steps)
        atlas = self.preparation(key).atlas
        if atlas is not None:
            for row in result["units"]:
                row["timescale"] = float(atlas.timescale[row["layer"] - 1, row["unit"]])
        return {"model": display_name(key), **result}

    def explained_atlas(self, key: ModelKey) -> Preparation:
        """The model's preparation once its atlas (with every unit's explanation) is ready, or UnitsUnavailable. An
        atlas being read from its file (a preparation started again after another model's replaced it) is waited
        for, at most ATLAS_READ_S; one being built is not."""
        self.gru(key)
        prepared = self.preparation(key)
        if not prepared.wait_for_atlas(ATLAS_READ_S):
            raise UnitsUnavailable(prepared.why_no_atlas())
        return prepared

    def unit_map(self, key: ModelKey) -> list[dict]:
        """Every unit of the model, in (layer, kind, unit) order: {"layer", "kind", "unit", "explanation", "family",
        "r_fit", "r_heldout", "chance"} (charrnn.analysis.explain, over its reference text)."""
        return self.explained_atlas(key).explained

    def explained_by(self, key: ModelKey, query) -> dict:
        """The units whose explanation is of a family or holds a word ("vowel", "line", "after e"), best held-out |r|
        first: {"model", "query", "units": [...] (at most EXPLAINED_ROWS)}."""
        prepared = self.explained_atlas(key)
        units = prepared.atlas.explanations.search(query, top=EXPLAINED_ROWS)
        return {"model": prepared.name, "query": query, "units": units}

    def profile(self, key: ModelKey, layer, kind, unit) -> dict:
        """charrnn.analysis.atlas.unit_profile of one unit of the model (layer from 1), over its reference text."""
        model = self.gru(key)
        prepared = self.explained_atlas(key)
        layers, hidden = prepared.atlas.shape
        layer = whole_number("Layer", layer, 1, layers)
        unit = whole_number("Unit", unit, 0, hidden - 1)
        kind = check_kind(kind, model.kinds)
        return {"model": prepared.name, **on_compute_thread(unit_profile)(prepared.atlas, layer, kind, unit,
                                                                          model=model)}

    def select_and_match(self, key: ModelKey, text, start, end, threshold) -> dict:
        """The hidden units on over text[start:end] and off around it (charrnn.analysis.matching.select_units), then the
        places in the reference text where they do the same, when the index is ready ("note" says why not)."""
        model = self.gru(key)
        check_text(model, text, MAX_FIND_CHARS, "select in")
        start = whole_number("The selection's start", start, 0, len(text) - 1)
        end = whole_number("The selection's end", end, 1, len(text))
        threshold = number("The threshold", threshold, -1, 1)
        check_threshold(threshold)
        steps = select_units_steps(model, text, start, end, threshold=threshold, pad=PAD, top=TOP_UNITS,
                                   max_chars=MAX_FIND_CHARS, chunk_size=PIECE_CHARS)
        selection = run_in_pieces(steps)
        result = {"model": display_name(key), "selection": selection, "searched_chars": 0,
                  "units": len(selection["units"]), "matches": []}
        prepared = self.preparation(key)
        if prepared.index is None:
            return {**result, "note": f"No matches yet: {prepared.index_status()}."}
        # A text taken from the reference text (the tab opens with one) has the selection there too: that place is
        # the selection itself, not a match.
        taken_at = prepared.index.text.find(text[: end + PAD])
        itself = taken_at + start if taken_at >= 0 else None
        try:
            found = on_compute_thread(match)(prepared.index, selection, top=MATCHES + (itself is not None))
        except SelectionError as e:  # no unit follows the selection: nothing to match
            return {**result, "note": capitalised(str(e))}
        if itself is not None:
            found["matches"] = [m for m in found["matches"] if m["offset"] != itself][:MATCHES]
            result["note"] = f"The selection's own place in the reference text (offset {itself:,}) is left out."
        return {**result, **found}

    def memory_gain(self, key: ModelKey, text) -> dict:
        """charrnn.analysis.memory_gain.memory_gain of the visitor's GRU against the shipped bigram: {"text", "rows": [{"char",
        "gru", "bigram"}, ...] (one per character from the second), "summary"}."""
        model = self.gru(key)
        check_text(model, text, MAX_GAIN_CHARS, "compare")
        rows = run_in_pieces(memory_gain_steps(model, self.bigram(), text, max_chars=MAX_GAIN_CHARS,
                                               chunk_size=PIECE_CHARS))
        return {"model": display_name(key), "text": text, "rows": rows, "summary": summarize(rows)}

    def compare_models(self, text, source_a, source_b) -> dict:
        """Two models on the same text (charrnn.analysis.compare): {"text", "model_a", "model_b", "rows": [{"char",
        "a", "b"}, ...] (each character's surprisal under each, from the second), "summary", "disagreements",
        "units": the matching of A's units to B's over A's reference text (or this text), "units_over"}."""
        keys = [model_key(source, None) for source in (source_a, source_b)]
        try:
            model_a, model_b = (self.models.get(key) for key in keys)
        except ModelLoadError as e:
            raise InputError(str(e)) from None
        check_text(model_a, text, MAX_COMPARE_CHARS, "compare the models on")
        names = tuple(display_name(key) for key in keys)
        rows = run_in_pieces(compare_steps(model_a, model_b, text, max_chars=MAX_COMPARE_CHARS, chunk_size=PIECE_CHARS,
                                           names=names))
        return {"text": text, "model_a": names[0], "model_b": names[1], "rows": rows,
                "summary": summarize_comparison(rows), "disagreements": disagreements(text, rows),
                **self.match_units(keys, (model_a, model_b), text)}

    def match_units(self, keys, models, text) -> dict:
        """A's units that follow the built-in signals and their matches in B, kept per pair of models."""
        if not all(model.kinds for model in models):
            bigram = display_name(keys[0] if not models[0].kinds else keys[1])
            return {"units": [], "units_over": f"no units to match: {bigram} is a bigram"}
        kept = self.matched.get(tuple(keys))
        if kept is not None:
            return kept
        reference = self.reference_text(keys[0])
        over = f"the first characters of {display_name(keys[0])}'s reference text"
        if reference is None:
            reference, over = text, "the compared text (the first model has no reference text)"
        units = run_in_pieces(match_units_steps(*models, reference, max_chars=MATCH_UNITS_CHARS,
                                                chunk_size=PIECE_CHARS))
        found = {"units": units, "units_over": f"{over} ({min(len(reference), MATCH_UNITS_CHARS):,} characters)"}
        if reference is not text:
            self.matched.put(tuple(keys), found)
        return found

    def reference_text(self, key: ModelKey) -> str | None:
        """The reference text of a model from a local folder, read alone (not its whole preparation: an atlas and
        an index that would replace another model's); None for a Hub model or a folder without one."""
        try:
            source, local = self.models.resolve(key.source)
            return read_reference_text(Path(source)) if local else None
        except (OSError, ValueError, ModelLoadError):
            return None

    # ---- the tab's views of a model ----

    def overview(self, key: ModelKey) -> dict:
        """The parts of the tab that depend on the model alone: its status line, the claims table, the gates by
        context and the timescales figures (messages where there is no atlas)."""
        prepared = self.preparation(key)
        if prepared.figures is not None:
            return {"status": prepared.status(), **prepared.figures}
        message = prepared.why_no_atlas()
        drawn = "<br>".join(textwrap.wrap(html.escape(message), 100))  # a figure's annotation does not wrap
        return {"status": prepared.status(), "claims": f"<p>{html.escape(message)}</p>",
                "gates": figures.message_figure(drawn), "timescales": figures.message_figure(drawn),
                "unit_map": figures.message_figure(drawn), "shares": [], "explained": markdown_text(message)}


def explanation_views(atlas: Atlas, rows: list[dict], name: str) -> dict:
    """The unit map, the shares table and its summary line, for the tab."""
    explained = atlas.explanations
    return {"unit_map": unit_figures.unit_map_figure(rows, atlas.kinds),
            "shares": unit_figures.shares_rows(explained.shares()),
            "explained": unit_figures.shares_summary(explained.overall(), markdown_text(name))}


def display_name(key: ModelKey) -> str:
    """A model's name on the page: a folder of the app's by its path in the app (not where the server keeps it),
    another folder by its own name, a Hub model by its repo id and revision."""
    path = Path(key.source)
    if not path.is_dir():
        return str(key)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def capitalised(message: str) -> str:
    return message[:1].upper() + message[1:]
