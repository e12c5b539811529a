"""Sharing a run: a link that opens the page on it, and its numbers as files.

A link is the page's address with the run in its query, any subset of

    ?prompt=ROMEO%3A%0A&chars=300&temperature=0.8&top_k=0&top_p=0.95&seed=1&model=owner/name&revision=main

(URL-encoded; `model` and `revision` only for a model other than the page's default). Opening it fills the
controls and writes that run: the same text as /generate for the same settings. A value that cannot be used
(not a number, out of the page's range, characters the model does not know, a model the page may not load)
falls back to the page's default with a warning; the page still opens.

An export is one .npz file (numpy.load(path, allow_pickle=False)):
    meta     a JSON string: format, charrnn's version, the text (prompt included), the prompt, the settings
             (seed among them), the model (source, revision, vocab, layers, hidden size), and what each array is;
    one array per kind of value the model's layers compute, float16 [layers, steps, units], after reading
             character t of the text from the zero state (within 5e-4 of the run's float32 values; a cell
             state within 1e-2 where it is large): a GRU's hidden, reset, update (h_t, r_t, z_t), an LSTM's
             hidden, cell, input, forget, output (h_t, c_t, i_t, f_t, o_t); meta's "kinds" lists them;
    probs    float32 [steps, vocab]: the model's next-character probabilities after reading character t
             (softmax at temperature 1, before the settings filter them);
and a CSV of the per-step table (step_table).
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import math
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import quote, urlencode

import numpy as np

from .. import __version__
from ..decoding.sampling import MAX_SEED
from ..decoding.trace import Trace
from ..decoding.unit import GRU_KINDS
from ..models.loading import ModelLoadError
from ..serving.runs import Recipe
from ..vocab import visible_char
from . import inputs

SETTINGS = ("prompt", "chars", "temperature", "top_k", "top_p", "seed")  # the query's names, in the page's order
LINK_KEYS = SETTINGS + ("model", "revision")
# the page's own limit (a URL of that length is kept whole by browsers and servers)
MAX_LINK_PROMPT = inputs.MAX_PROMPT_CHARS
FORMAT, FORMAT_VERSION = "charrnn-run", 1
TOP_ALTERNATIVES = 5
ARRAYS = {  # what each kind's array holds, in the export's meta
    "hidden": "h_t after reading character t, from the zero state",
    "reset": "the reset gate r_t at step t", "update": "the update gate z_t at step t",
    "cell": "the LSTM's cell state c_t at step t", "input": "the input gate i_t at step t",
    "forget": "the forget gate f_t at step t", "output": "the output gate o_t at step t",
}


class ShareError(ValueError):
    """A run cannot be shared this way; the message says why."""


# ---- links ----


def number_text(value: float) -> str:
    """0.8 -> "0.8", 1.0 -> "1": the shortest text that reads back as the same number."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def link_query(recipe: Recipe, default_model=None) -> str:
    """The query ("?prompt=...&...") that opens the page on `recipe`'s run; the model named only when it is not
    `default_model` (a ModelKey). Raises ShareError for a run a link cannot describe (an intervention, forced
    characters: the Write tab has neither)."""
    if recipe.intervention is not None or recipe.forced:
        raise ShareError("A link holds a prompt and settings only: this run has an intervention or forced "
                         "characters")
    s = recipe.settings
    query = {"prompt": recipe.prompt, "chars": s.max_new_chars, "temperature": number_text(s.temperature),
             "top_k": s.top_k, "top_p": number_text(s.top_p), "seed": s.seed}
    if default_model is None or recipe.model != default_model:
        query["model"] = recipe.model.source
        if recipe.model.revision:
            query["revision"] = recipe.model.revision
    return "?" + urlencode(query, quote_via=quote, safe="/:")


@dataclass
class Link:
    """What a link asks for, checked: the model to use, the values for the controls, and a warning per value
    that fell back to the default."""

    model_key: object  # a ModelKey
    model: object  # the loaded model
    values: dict  # SETTINGS -> value, defaults filled in
    warnings: list[str] = field(default_factory=list)

    @property
    def settings(self) -> list:
        return [self.values[name] for name in SETTINGS]


def is_link(query: Mapping[str, str]) -> bool:
    """Whether a page address's query asks for a run (other parameters, e.g. Gradio's own, are left alone)."""
    return any(name in query for name in LINK_KEYS)


def read_link(query: Mapping[str, str], defaults: Mapping[str, object], default_key,
              load: Callable[[object], object]) -> Link:
    """The run a link asks for. `defaults`: the page's value for each of SETTINGS; `default_key`: the page's
    model; `load(key)`: the page's model loader (charrnn.serving.registry.ModelRegistry.get, with its checks: only
    allowed folders and Hub ids). Never raises for what the link holds: a value that cannot be used is replaced
    by the default and named in `warnings`."""
    warnings = []
    key, model = default_key, None
    if query.get("model") or query.get("revision"):
        try:
            key = inputs.model_key(query.get("model") or default_key.source, query.get("revision"))
            model = load(key)
        except (inputs.InputError, ModelLoadError) as e:
            warnings.append(f"The link's model cannot be used ({e}); using {default_key} instead.")
            key, model = default_key, None
    model = model if model is not None else load(default_key)
    checks = {
        "chars": lambda v: inputs.whole_number("chars (characters to write)", v, 1, inputs.MAX_NEW_CHARS),
        "temperature": lambda v: inputs.number("temperature", v, 0, inputs.PAGE_MAX_TEMPERATURE),
        "top_k": lambda v: inputs.whole_number("top_k", v, 0, len(model.vocab)),
        "top_p": lambda v: inputs.number("top_p", v, inputs.PAGE_MIN_TOP_P, 1),
        "seed": lambda v: inputs.whole_number("seed", v, 0, MAX_SEED),
        "prompt": lambda v: check_prompt(model, v),
    }
    values = {}
    for name in SETTINGS:
        raw = query.get(name)
        if raw is None:
            values[name] = defaults[name]
            continue
        try:
            values[name] = checks[name](raw)
        except inputs.InputError as e:
            values[name] = defaults[name]
            shown = defaults[name] if name != "prompt" else "the example prompt"
            warnings.append(f"The link's {name} cannot be used: {e}. Using {shown!s} instead.")
    return Link(key, model, values, warnings)


def check_prompt(model, prompt: str) -> str:
    if len(prompt) > MAX_LINK_PROMPT:
        raise inputs.InputError(f"a link's prompt may have up to {MAX_LINK_PROMPT:,} characters, not {len(prompt):,}")
    return inputs.check_prompt(model, prompt)


# ---- export ----


def run_meta(trace: Trace, model_key) -> dict:
    s = trace.settings
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "charrnn_version": __version__,
        "text": trace.text, "prompt": trace.text[: trace.prompt_len], "prompt_len": trace.prompt_len,
        "steps": len(trace.text),
        "settings": {"max_new_chars": s.max_new_chars, "temperature": s.temperature, "top_k": s.top_k,
                     "top_p": s.top_p, "seed": s.seed},
        "model": {"source": str(model_key.source), "revision": model_key.revision, "vocab": trace.vocab,
                  "layers": int(trace.hidden.shape[0]), "hidden_size": int(trace.hidden.shape[2])},
        "kinds": list(trace.kinds),
        "arrays": {
            **{kind: f"float16 [layers, steps, units]: {ARRAYS[kind]}" for kind in trace.kinds},
            "probs": "float32 [steps, vocab]: p(next character) after reading character t, softmax at "
                     "temperature 1 (before temperature, top-k and top-p)"},
    }
    if trace.intervention is not None:
        meta["intervention"] = asdict(trace.intervention)
    return meta


def export_run(trace: Trace, model_key, path: str | Path) -> Path:
    """Write the run to `path` (.npz; see the module's docstring)."""
    path = Path(path)
    meta = json.dumps(run_meta(trace, model_key), ensure_ascii=False)
    with open(path, "wb") as f:
        np.savez_compressed(f, meta=np.array(meta), probs=trace.probs.numpy().astype(np.float32),
                            **{kind: trace.of(kind).numpy().astype(np.float16) for kind in trace.kinds})
    return path


def read_run(path: str | Path) -> dict:
    """An export read back: {"meta": dict, "probs" and one array per kind (meta["kinds"]): numpy arrays}."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ShareError(f"{path} is not a charrnn run export")
        return {"meta": meta, **{name: data[name] for name in ("probs", *meta.get("kinds", GRU_KINDS))}}


def step_table(trace: Trace, top: int = TOP_ALTERNATIVES) -> list[dict]:
    """One row per step t: the character read, its probability under the model after reading the text before
    it (raw, temperature 1), its surprisal -ln p in nats, and the `top` most likely characters there, with
    their probabilities (step 0 has no prediction: those fields are empty). Characters are shown as on the page
    (␣ space, ↵ newline)."""
    rows = []
    probs = trace.probs.double()
    top_p, top_i = probs.topk(min(top, len(trace.vocab)), dim=-1)
    for t, c in enumerate(trace.text):
        row = {"step": t, "character": visible_char(c), "in_prompt": t < trace.prompt_len}
        if t == 0:
            row.update(probability="", surprisal_nats="", **{f"top_{k + 1}": "" for k in range(top)},
                       **{f"p_{k + 1}": "" for k in range(top)})
        else:
            p = probs[t - 1, trace.tokens[t]].item()
            row.update(probability=round(p, 6), surprisal_nats=round(-math.log(max(p, 1e-30)), 4))
            for k in range(top):
                if k < top_i.shape[1]:
                    row[f"top_{k + 1}"] = visible_char(trace.vocab[top_i[t - 1, k].item()])
                    row[f"p_{k + 1}"] = round(top_p[t - 1, k].item(), 6)
                else:
                    row[f"top_{k + 1}"] = row[f"p_{k + 1}"] = ""
        rows.append(row)
    return rows


def step_table_csv(trace: Trace) -> str:
    rows = step_table(trace)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def file_stem(trace: Trace) -> str:
    return f"charrnn-run-{len(trace.text) - trace.prompt_len}chars-seed{trace.settings.seed}"


class ExportFolder:
    """Where the page writes exports: one temporary folder per export under one root, the oldest removed once
    there are more than `max_kept` or they are older than `max_age_s` (Gradio serves a copy from its own cache,
    which its delete_cache cleans), and the whole root when the process ends."""

    def __init__(self, max_kept: int = 16, max_age_s: float = 900):
        self.root = Path(tempfile.mkdtemp(prefix="charrnn-exports-"))
        self.max_kept, self.max_age_s = max_kept, max_age_s
        self.lock = threading.Lock()
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def new(self) -> Path:
        with self.lock:
            self.prune()
            return Path(tempfile.mkdtemp(dir=self.root))

    def prune(self) -> None:
        folders = sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime)
        now = time.time()
        for i, folder in enumerate(folders):
            if len(folders) - i >= self.max_kept or now - folder.stat().st_mtime > self.max_age_s:
                shutil.rmtree(folder, ignore_errors=True)

    def export(self, trace: Trace, model_key) -> tuple[Path, Path]:
        """The run's .npz and its step table's .csv, written to a new folder."""
        folder, stem = self.new(), file_stem(trace)
        npz = export_run(trace, model_key, folder / f"{stem}.npz")
        table = folder / f"{stem}-steps.csv"
        table.write_text(step_table_csv(trace), encoding="utf-8")
        return npz, table
