"""The unit atlas: what every unit of a model does over the model's reference text, kept as statistics only.

A model folder may ship a reference text (reference.txt; for the shipped model the validation split of Tiny
Shakespeare). The atlas reads it once from the zero state, carrying the state (charrnn.analysis.activations), and keeps
for every layer, kind (a GRU's hidden, reset, update; an LSTM's hidden, cell, input, forget, output) and unit:

- its mean and standard deviation, and a histogram over fixed bins ([-1, 1] for h_t, [0, 1] for the gates);
- its top and bottom contexts: the text is cut into blocks of BLOCK characters from offset 0, each block's
  strongest value (the first, on a tie) is a candidate, and the TOP_K strongest candidates are kept, strongest
  first (ties: earliest), with the unit's values over a window of the text around each (quantised to int8,
  for display);
- its Pearson r with each built-in signal (charrnn.analysis.signals) that varies over the text;
- its explanation (charrnn.analysis.explain): the candidate it follows best over the first half of the text, with
  that r, its r over the second half (held out) and a chance level;

and per layer each gate's mean over the units after each character (for charrnn.analysis.contexts). The
memory timescale of a unit position is 1 / (1 - its mean update gate), an LSTM's 1 / (1 - its mean forget gate). Everything is gathered piece by piece,
so memory stays bounded however long the text.

The file, atlas.safetensors next to the weights, records what it was built from (a fingerprint of the weights,
the model file's hash and size, the reference text's hash, the format version); loading checks them.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator

import numpy as np
import safetensors
import safetensors.torch
import torch

from ..decoding.unit import GRU_KINDS, KIND_RANGES, MEMORY_GATE, Unit, gates_of
from . import activations, explain, signals
from .activations import run_steps
from .explain import Explainer, Explanations
from .units import Correlation, Moments, timescales

ATLAS_FILE = "atlas.safetensors"
REFERENCE_FILE = "reference.txt"
PATTERNS_FILE = "patterns.json"  # the regular expressions a person saved, as explanations to try
FORMAT, VERSION = "charrnn-atlas", 2  # 2: with the units' explanations
BINS = 40
BLOCK = 32
TOP_K = 12
BEFORE, AFTER = 20, 6  # the context window: characters kept before and after an offset
WINDOW = BEFORE + 1 + AFTER
MAX_REFERENCE_CHARS = 2_000_000  # 2 M characters: about 20 minutes of CPU time for a 3 x 512 model
MARK_OPEN, MARK_CLOSE = "⟦", "⟧"  # how a context marks the character at its offset: "to be, or ⟦n⟧ot to"


class AtlasError(ValueError):
    """An atlas cannot be built, read or used with this model; the message says why and what to do."""


@dataclass
class Atlas:
    text: str
    mean: torch.Tensor  # [kinds, layers, H]
    std: torch.Tensor  # [kinds, layers, H]
    histogram: torch.Tensor  # [kinds, layers, H, BINS] counts (int32)
    top_offsets: torch.Tensor  # [kinds, layers, H, TOP_K] (int32; -1 where the text has fewer blocks)
    top_values: torch.Tensor  # [kinds, layers, H, TOP_K]
    top_windows: torch.Tensor  # [kinds, layers, H, TOP_K, WINDOW] values around each offset (NaN outside the text)
    bottom_offsets: torch.Tensor
    bottom_values: torch.Tensor
    bottom_windows: torch.Tensor
    signal_names: list[str]
    signal_r: torch.Tensor  # [signals, kinds, layers, H] (NaN where r is undefined)
    gate_means: torch.Tensor  # [gates, layers, T]: each gate's mean over a layer's units after each character
    meta: dict = field(default_factory=dict)
    kinds: tuple = GRU_KINDS  # the cell's kinds, in the order of the first axis
    explanations: Explanations | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(layers, hidden size)"""
        return self.mean.shape[1], self.mean.shape[2]

    @property
    def timescale(self) -> np.ndarray:
        """[layers, H]: 1 / (1 - mean z_t) of each unit position over the reference text."""
        return timescales(self.mean[self.kinds.index(MEMORY_GATE[self.kinds])].double().numpy())

    def gate_mean(self, kind: str) -> torch.Tensor:
        """[layers, T] mean of one gate over each layer's units after each character."""
        return self.gate_means[gates_of(self.kinds).index(kind)]


def edges(kind: str) -> np.ndarray:
    """The histogram's BINS + 1 bin edges for a kind (as numpy.histogram: each bin [a, b), the last [a, b])."""
    low, high = KIND_RANGES[kind]
    return np.linspace(low, high, BINS + 1)


# ---- building ----


def weights_fingerprint(model) -> str:
    """sha256 of the model's weights as held in memory (names, shapes and float32 bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Extremes:
    """The TOP_K strongest block candidates of every unit (sign=1: largest values; -1: smallest), with windows."""

    def __init__(self, units: int, sign: int):
        self.sign = sign
        self.values = torch.full((TOP_K, units), -math.inf)
        self.offsets = torch.full((TOP_K, units), -1, dtype=torch.long)
        self.windows = torch.full((TOP_K, units, WINDOW), math.nan)

    def add(self, start: int, values: torch.Tensor, padded: torch.Tensor) -> None:
        """values [Tc, units] at offsets start.. (start a multiple of BLOCK); padded: the same rows with BEFORE rows
        before and AFTER rows after them (NaN beyond the text)."""
        steps, units = values.shape
        blocks = -(-steps // BLOCK)
        x = self.sign * values
        if steps % BLOCK:
            x = torch.cat([x, torch.full((blocks * BLOCK - steps, units), -math.inf)])
        block_values, at = x.view(blocks, BLOCK, units).max(dim=1)  # the first of equal maxima
        block_offsets = start + torch.arange(blocks)[:, None] * BLOCK + at
        candidates = torch.cat([self.values, block_values])
        # Stable: equal values keep their order, and the kept ones (earlier text) come before this piece's.
        order = candidates.sort(dim=0, descending=True, stable=True).indices[:TOP_K]
        offsets = torch.cat([self.offsets, block_offsets]).gather(0, order)
        # Row r of padded is offset start - BEFORE + r, so the window of an offset starts at row offset - start.
        rows = (offsets - start).clamp(0, steps - 1)[..., None] + torch.arange(WINDOW)
        fresh = padded[rows, torch.arange(units)[None, :, None]]
        kept = self.windows.gather(0, order.clamp(max=TOP_K - 1)[..., None].expand(-1, -1, WINDOW))
        self.windows = torch.where((order >= TOP_K)[..., None], fresh, kept)
        self.values, self.offsets = candidates.gather(0, order), offsets

    def result(self, shape):
        """(offsets, values, windows), shaped [*shape, TOP_K(, WINDOW)], values in the units' own sign."""
        k = TOP_K
        return (self.offsets.T.reshape(*shape, k).to(torch.int32), (self.sign * self.values).T.reshape(*shape, k),
                self.windows.transpose(0, 1).reshape(*shape, k, WINDOW))


class Histograms:
    """Counts of every unit's values over BINS equal bins of its kind's range: bin i holds [edges[i], edges[i + 1]),
    the last bin also its upper edge (as numpy.histogram, up to float32 rounding right at an edge)."""

    def __init__(self, kinds: tuple, layers: int, hidden: int):
        self.kinds, self.per_kind = kinds, layers * hidden
        self.counts = torch.zeros(len(kinds) * self.per_kind, BINS, dtype=torch.long)

    def add(self, values: torch.Tensor) -> None:
        """values [Tc, units], the units in (kind, layer, unit) order."""
        for k, kind in enumerate(self.kinds):
            columns = slice(k * self.per_kind, (k + 1) * self.per_kind)
            low, high = KIND_RANGES[kind]
            bins = ((values[:, columns] - low) * (BINS / (high - low))).floor_().clamp_(0, BINS - 1).long()
            flat = bins + BINS * torch.arange(self.per_kind)
            self.counts[columns] += torch.bincount(flat.view(-1), minlength=self.per_kind * BINS).view(-1, BINS)


def with_neighbours(pieces):
    """Each piece with its values [Tc, units] and the same rows padded by BEFORE rows of the text before and AFTER
    rows after (NaN beyond the text): one piece of look-ahead."""
    def padded(values, before, after):
        units = values.shape[1]
        parts = [torch.full((BEFORE - len(before), units), math.nan), before, values, after,
                 torch.full((AFTER - len(after), units), math.nan)]
        return torch.cat(parts)

    held = None  # (piece, its values, the BEFORE rows before it): waits for the next piece's first rows
    tail = None
    for piece in pieces:
        values = piece.columns()  # [Tc, kinds * layers * H]
        if held is not None:
            yield held[0], held[1], padded(held[1], held[2], values[:AFTER])
        tail = values[:0] if tail is None else tail
        held = (piece, values, tail)
        tail = torch.cat([tail, values])[-BEFORE:]
    if held is not None:
        yield held[0], held[1], padded(held[1], held[2], held[1][:0])


def build_atlas(model, text: str, *, chunk_size: int = activations.CHUNK_SIZE, model_file: str | Path | None = None,
                progress=None, patterns=()) -> Atlas:
    """The atlas of `model` over `text`, in memory (the shipped model over its 111,540-character reference text:
    about 70 s of CPU time, 2.5 minutes on the shared 2-core machines). `model_file`: the weights file, whose hash and
    size are recorded. `progress(done, total)` is called after each piece. `patterns`: regular expressions a person
    saved, tried as explanations with the built-in candidates. Runs torch on one thread (see
    activations.one_thread)."""
    return run_steps(atlas_steps(model, text, chunk_size=chunk_size, model_file=model_file, progress=progress,
                                 patterns=patterns))


def atlas_steps(model, text: str, *, chunk_size: int = activations.CHUNK_SIZE, model_file: str | Path | None = None,
                progress=None, patterns=()) -> Generator[None, None, Atlas]:
    """build_atlas as steps (charrnn.serving.compute runs them in pieces): the text is checked and the built-in signals
    and candidate explanations computed now (no torch work; a bad saved pattern raises here); the generator returned
    reads one piece of about `chunk_size` characters per step (torch on one thread within each step) and returns the
    Atlas."""
    began = time.perf_counter()
    tokens = activations.encode(model, text, MAX_REFERENCE_CHARS)
    found = signals.varying(text)
    patterns = explain.check_patterns(patterns)
    gathered = Gathered(model, found, explain.candidates(text, patterns), len(text))
    chunk_size = -(-chunk_size // BLOCK) * BLOCK  # pieces start on block boundaries

    def steps():
        for piece, values, padded in with_neighbours(activations.chunks(model, text, chunk_size=chunk_size)):
            with activations.one_thread():
                gathered.add(piece, values, padded)
            if progress is not None:
                progress(piece.start + len(piece), len(tokens))
            yield
        with activations.one_thread():
            return gathered.atlas(model, text, atlas_meta(model, text, model_file, began, patterns))

    return steps()


class Gathered:
    """What the atlas gathers piece by piece over the reference text, for every unit: the moments (with the
    correlations with the built-in signals that vary over the text, when there are any), histograms, top and bottom
    contexts, each layer's mean gates after each character, and the units' explanations."""

    def __init__(self, model, found: dict[str, np.ndarray], library: explain.Candidates, length: int):
        self.kinds = model.kinds
        self.shape = (len(self.kinds), model.num_layers, model.hidden_size)
        units = math.prod(self.shape)
        self.signal_names = list(found)
        self.correlation = Correlation(np.stack(list(found.values()))) if found else None
        self.moments = self.correlation.moments if found else Moments()
        self.top, self.bottom = Extremes(units, 1), Extremes(units, -1)
        self.histograms = Histograms(self.kinds, model.num_layers, model.hidden_size)
        self.gate_means = []
        self.explainer = Explainer(library, length)

    def add(self, piece, values: torch.Tensor, padded: torch.Tensor) -> None:
        """One piece: its Activations, their values [Tc, units] and the same padded (with_neighbours)."""
        if self.correlation is not None:
            self.correlation.add_columns(values, piece.start)  # also gathers the moments
        else:
            self.moments.add(values)
        self.histograms.add(values)
        self.top.add(piece.start, values, padded)
        self.bottom.add(piece.start, values, padded)
        self.gate_means.append(torch.stack([piece.of(gate).mean(-1) for gate in gates_of(self.kinds)]))
        self.explainer.add(values, piece.start)

    def atlas(self, model, text: str, meta: dict) -> Atlas:
        shape = self.shape
        top_offsets, top_values, top_windows = self.top.result(shape)
        bottom_offsets, bottom_values, bottom_windows = self.bottom.result(shape)
        signal_r = torch.from_numpy(self.correlation.r()).float().view(-1, *shape) if self.correlation \
            else torch.zeros(0, *shape)
        return Atlas(
            text=text, mean=self.moments.mean.float().view(shape), std=self.moments.var.sqrt().float().view(shape),
            histogram=self.histograms.counts.to(torch.int32).view(*shape, BINS),
            top_offsets=top_offsets, top_values=top_values, top_windows=top_windows,
            bottom_offsets=bottom_offsets, bottom_values=bottom_values, bottom_windows=bottom_windows,
            signal_names=self.signal_names, signal_r=signal_r, gate_means=torch.cat(self.gate_means, dim=-1).float(),
            kinds=self.kinds, explanations=self.explainer.result(shape, self.kinds, json.loads(meta["patterns"])),
            meta=meta)


def atlas_meta(model, text: str, model_file: str | Path | None, began: float, patterns: list[str]) -> dict:
    """What an atlas records of what it was built from (loading checks it) and how."""
    meta = {
        "format": FORMAT, "version": str(VERSION), "model_sha256": weights_fingerprint(model),
        "text_sha256": text_sha256(text), "text_chars": str(len(text)), "vocab": model.vocab,
        "layers": str(model.num_layers), "hidden_size": str(model.hidden_size), "kinds": ",".join(model.kinds),
        "bins": str(BINS), "block": str(BLOCK), "top_k": str(TOP_K), "before": str(BEFORE), "after": str(AFTER),
        "torch": torch.__version__, "build_seconds": f"{time.perf_counter() - began:.1f}",
        "shifts": str(explain.SHIFTS), "seed": str(explain.SEED), "patterns": json.dumps(patterns),
    }
    if model_file is not None:
        meta.update(model_file=Path(model_file).name, model_file_sha256=file_sha256(Path(model_file)),
                    model_file_size=str(Path(model_file).stat().st_size))
    return meta


# ---- the file ----


def windows_to_int8(windows: torch.Tensor, kinds: tuple) -> torch.Tensor:
    """[kinds, ...] float windows -> int8: each kind's range onto -127..127, NaN (outside the text) as -128."""
    out = []
    for k, kind in enumerate(kinds):
        low, high = KIND_RANGES[kind]
        q = torch.round((windows[k] - low) / (high - low) * 254 - 127).clamp(-127, 127)
        out.append(torch.where(torch.isnan(windows[k]), -128, q).to(torch.int8))
    return torch.stack(out)


def windows_from_int8(codes: torch.Tensor, kinds: tuple) -> torch.Tensor:
    out = []
    for k, kind in enumerate(kinds):
        low, high = KIND_RANGES[kind]
        values = (codes[k].float() + 127) / 254 * (high - low) + low
        out.append(torch.where(codes[k] == -128, math.nan, values))
    return torch.stack(out)


TENSORS = ("mean", "std", "histogram", "top_offsets", "top_values", "bottom_offsets", "bottom_values", "signal_r",
           "gate_means")
EXPLANATION_TENSORS = ("index", "r_fit", "r_heldout", "chance")  # saved as explanation_index, ...


def save_atlas(atlas: Atlas, path: str | Path) -> Path:
    """Write the atlas (without its text, which stays in reference.txt; its hash is recorded)."""
    tensors = {name: getattr(atlas, name).contiguous() for name in TENSORS}
    tensors["top_windows"] = windows_to_int8(atlas.top_windows, atlas.kinds)
    tensors["bottom_windows"] = windows_to_int8(atlas.bottom_windows, atlas.kinds)
    meta = {**atlas.meta, "signals": json.dumps(atlas.signal_names)}
    if atlas.explanations is not None:
        tensors |= {f"explanation_{name}": getattr(atlas.explanations, name).contiguous()
                    for name in EXPLANATION_TENSORS}
        meta |= {"candidates": json.dumps(atlas.explanations.labels),
                 "families": json.dumps(atlas.explanations.families)}
    safetensors.torch.save_file(tensors, str(path), metadata=meta)
    return Path(path)


def load_atlas(path: str | Path, model, text: str, patterns: list[str] | None = None) -> Atlas:
    """Read an atlas file and check that it was built for this model (same weights) over this text (same hash)
    by this version of charrnn, and, when `patterns` are given, with these saved regular expressions; AtlasError,
    saying how to rebuild it, if not."""
    path = Path(path)
    rebuild = f"rebuild it with: python -m charrnn atlas --model {path.parent}"
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise AtlasError(f"{path} is not a readable atlas file ({' '.join(str(e).split())})") from None
    if meta.get("format") != FORMAT:
        raise AtlasError(f"{path} is not a charrnn atlas (no format={FORMAT!r} in its metadata)")
    if meta.get("version") != str(VERSION):
        raise AtlasError(f"{path} is an atlas of format version {meta.get('version')}, this charrnn reads version "
                         f"{VERSION}: {rebuild}")
    if meta.get("text_sha256") != text_sha256(text):
        raise AtlasError(f"{path} was built over another reference text ({meta.get('text_chars')} characters, "
                         f"sha256 {meta.get('text_sha256', '')[:12]}…; this one has {len(text)}, sha256 "
                         f"{text_sha256(text)[:12]}…): {rebuild}")
    fingerprint = weights_fingerprint(model)
    if meta.get("model_sha256") != fingerprint:
        raise AtlasError(f"{path} was built for other weights (sha256 {meta.get('model_sha256', '')[:12]}…, this "
                         f"model's are {fingerprint[:12]}…): {rebuild}")
    explained = [f"explanation_{name}" for name in EXPLANATION_TENSORS]
    missing = [name for name in (*TENSORS, "top_windows", "bottom_windows", *explained) if name not in tensors]
    missing += [name for name in ("signals", "candidates", "families", "patterns") if name not in meta]
    if missing:
        raise AtlasError(f"{path} lacks {', '.join(missing)}: {rebuild}")
    if patterns is not None and json.loads(meta["patterns"]) != list(patterns):
        raise AtlasError(f"{path} was built with other saved regular expressions ({meta['patterns'][:200]}) than "
                         f"{PATTERNS_FILE} holds now: {rebuild}")
    kinds = tuple(meta.get("kinds", ",".join(GRU_KINDS)).split(","))
    explanations = Explanations(json.loads(meta["candidates"]), json.loads(meta["families"]),
                                *(tensors[name] for name in explained), kinds=kinds,
                                patterns=json.loads(meta["patterns"]))
    return Atlas(text=text, top_windows=windows_from_int8(tensors.pop("top_windows"), kinds),
                 bottom_windows=windows_from_int8(tensors.pop("bottom_windows"), kinds), kinds=kinds,
                 signal_names=json.loads(meta["signals"]), meta=meta, explanations=explanations,
                 **{n: tensors[n] for n in TENSORS})


def read_reference_text(folder: str | Path) -> str:
    """A model folder's reference.txt (UTF-8, at most MAX_REFERENCE_CHARS characters)."""
    path = Path(folder) / REFERENCE_FILE
    if not path.is_file():
        raise AtlasError(f"{folder} has no {REFERENCE_FILE}: a model folder needs a reference text for an atlas "
                         "(python -m charrnn atlas --model FOLDER --from-corpus CORPUS writes the corpus's "
                         "validation split there)")
    if path.stat().st_size > 4 * MAX_REFERENCE_CHARS:
        raise AtlasError(f"{path} is {path.stat().st_size:,} bytes; a reference text may have at most "
                         f"{MAX_REFERENCE_CHARS:,} characters")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise AtlasError(f"{path} is not UTF-8 text") from None
    if len(text) > MAX_REFERENCE_CHARS:
        raise AtlasError(f"{path} has {len(text):,} characters; at most {MAX_REFERENCE_CHARS:,} allowed")
    return text


def read_patterns(folder: str | Path) -> list[str]:
    """The regular expressions saved in a model folder's patterns.json (a JSON list of strings; none when there is
    no such file), to be tried as explanations of its units."""
    path = Path(folder) / PATTERNS_FILE
    if not path.is_file():
        return []
    if path.stat().st_size > 100_000:
        raise AtlasError(f"{path} is {path.stat().st_size:,} bytes; a list of regular expressions is far smaller")
    try:
        patterns = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AtlasError(f"{path} is not a JSON list of regular expressions ({e})") from None
    if not isinstance(patterns, list):
        raise AtlasError(f"{path} must hold a JSON list of regular expressions, such as [\"^[A-Z]+:$\"]")
    try:
        return explain.check_patterns(patterns)
    except signals.SignalError as e:
        raise AtlasError(f"{path}: {e}") from None


def atlas_for(model, folder: str | Path, *, build: bool = True) -> Atlas:
    """The atlas of a model folder: its atlas.safetensors if that matches the model and reference.txt; otherwise,
    with build=True, one built in memory (2.5 minutes for the shipped model on the shared 2-core machines);
    otherwise
    AtlasError."""
    folder = Path(folder)
    text = read_reference_text(folder)
    patterns = read_patterns(folder)
    path = folder / ATLAS_FILE
    if path.is_file():
        try:
            return load_atlas(path, model, text, patterns)
        except AtlasError:
            if not build:
                raise
    elif not build:
        raise AtlasError(f"{folder} has no {ATLAS_FILE}: build it with python -m charrnn atlas --model {folder}")
    weights = folder / "model.safetensors"
    return build_atlas(model, text, model_file=weights if weights.is_file() else None, patterns=patterns)


# ---- one unit ----


def check_unit(atlas: Atlas, layer: int, kind: str, unit: int) -> None:
    """UnitError (a ValueError) naming what is allowed, for a unit the atlas does not have."""
    Unit(layer, kind, unit).check(*atlas.shape, atlas.kinds)


def context_entry(text: str, offset: int, value: float, window: torch.Tensor) -> dict:
    """One context: the text around `offset` with its character marked ⟦c⟧, and the unit's value at each of its
    characters ("values", aligned with before + char + after)."""
    first, last = max(0, offset - BEFORE), min(len(text), offset + AFTER + 1)
    before, char, after = text[first:offset], text[offset], text[offset + 1 : last]
    values = window[BEFORE - (offset - first) : BEFORE + (last - offset)]
    return {"offset": offset, "value": value, "context": f"{before}{MARK_OPEN}{char}{MARK_CLOSE}{after}",
            "before": before, "char": char, "after": after, "values": [round(float(v), 4) for v in values]}


def unit_profile(atlas: Atlas, layer: int, kind: str, unit: int, *, model=None, pushes: int = 8,
                 signals_shown: int = 3) -> dict:
    """Everything the atlas knows about one unit (layer from 1): timescale, mean, std, histogram, its TOP_K top
    and bottom contexts (strongest first), the built-in signals it follows best over the reference text, its
    explanation (charrnn.analysis.explain: "explanation", "family", "r_fit", "r_heldout", "chance"), and,
    for a last-layer hidden unit when `model` is given, the characters it pushes up and down (its column of the
    output layer, head.weight[:, unit])."""
    check_unit(atlas, layer, kind, unit)
    k, l = atlas.kinds.index(kind), layer - 1

    def contexts(offsets, values, windows):
        return [context_entry(atlas.text, int(o), float(v), w)
                for o, v, w in zip(offsets[k, l, unit], values[k, l, unit], windows[k, l, unit]) if o >= 0]

    r = atlas.signal_r[:, k, l, unit].double().numpy() if len(atlas.signal_names) else np.zeros(0)
    shown = [i for i in np.argsort(-np.abs(np.nan_to_num(r)), kind="stable") if not np.isnan(r[i])][:signals_shown]
    profile = {
        "layer": layer, "kind": kind, "unit": unit,
        "timescale": float(atlas.timescale[l, unit]),
        "mean": float(atlas.mean[k, l, unit]), "std": float(atlas.std[k, l, unit]),
        "histogram": {"edges": edges(kind).round(6).tolist(), "counts": atlas.histogram[k, l, unit].tolist()},
        "top": contexts(atlas.top_offsets, atlas.top_values, atlas.top_windows),
        "bottom": contexts(atlas.bottom_offsets, atlas.bottom_values, atlas.bottom_windows),
        "signals": [{"signal": atlas.signal_names[i], "r": float(r[i])} for i in shown],
        "pushes": None,
        **(atlas.explanations.of(layer, kind, unit) if atlas.explanations is not None else {}),
    }
    if model is not None and kind == "hidden" and layer == atlas.shape[0]:
        column = model.head.weight.detach()[:, unit].cpu().double()
        order = column.argsort(descending=True, stable=True).tolist()
        as_rows = lambda ids: [{"char": model.vocab[i], "weight": float(column[i])} for i in ids]  # noqa: E731
        profile["pushes"] = {"up": as_rows(order[:pushes]), "down": as_rows(order[::-1][:pushes])}
    return profile
