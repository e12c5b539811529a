"""Bring your own char-RNN: turn a checkpoint saved with torch.save by the usual PyTorch recipe (embedding ->
nn.GRU or nn.LSTM -> linear head) into a model folder in Hub layout that the page and load_model load.

The checkpoint layout read is

    {"model_state": {"embedding.weight", "rnn.weight_ih_l0", ..., "head.weight", "head.bias"},
     "config": {"embedding_dim", "hidden_dim", "num_layers", "dropout", "rnn_type" (optional: "gru", "lstm")},
     "itos": [character of id 0, character of id 1, ...], "stoi": {character: id}}

(other top-level entries, e.g. an optimizer state, are ignored). The file is read with PyTorch's restricted
unpickler only (torch.load(weights_only=True)): a file holding anything but tensors and plain values is refused
before anything in it runs. The cell is told by the tensors (rnn.weight_hh_l0 has 3 x hidden rows for a GRU, 4 x
for an LSTM: the seed project's config does not save its rnn_type); a config's rnn_type, where there is one, must
agree. The weights are kept exactly: `rnn.*` becomes `gru.*` or `lstm.*` (CharRNN's and CharLSTM's names for the
same nn.GRU or nn.LSTM), `embedding.*` and `head.*` stay, and they are stored in the checkpoint's own dtype unless
another is asked for.

    python -m charrnn convert my-char-rnn.pt weights/my-char-rnn
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from ..vocab import Vocab, show_char
from .gru import CharRNN
from .lstm import CharLSTM
from .loading import SAVE_DTYPES, first_few, one_line, shape_differences

MAX_CHECKPOINT_BYTES = 2 * 1024**3
# The prefixes torch.compile and nn.DataParallel put before every key of a wrapped model's state dict.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
CELLS = {3: CharRNN, 4: CharLSTM}  # rows of weight_hh per hidden unit -> the class that holds that cell
CELL_NAMES = {3: "a GRU", 4: "an LSTM", 1: "a plain RNN (nn.RNN)"}
SUPPORTED = ("charrnn converts GRU and LSTM char-RNNs saved as {'model_state': {embedding.weight, rnn.weight_ih_l0, "
             "rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, ... (one set per layer), head.weight, head.bias}, "
             "'config': {embedding_dim, hidden_dim, num_layers, dropout}, 'itos': [characters in id order], "
             "'stoi': {character: id}}")


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message says what was found and what is supported."""


def read_checkpoint(path: str | Path):
    """torch.load with the restricted unpickler: tensors and plain values only, nothing in the file is run."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} is not a file" + ("" if path.exists() else " (no such file)"))
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ConversionError(f"{path} is {size / 1024**3:.1f} GiB; charrnn converts checkpoints of up to "
                              f"{MAX_CHECKPOINT_BYTES / 1024**3:.0f} GiB")
    with open(path, "rb") as f:
        start = f.read(4)
    # torch.save writes a zip archive (or, before PyTorch 1.6, a pickle: protocol 2 starts with 0x80).
    if not (zipfile.is_zipfile(path) or start.startswith(b"\x80")):
        raise ConversionError(f"{path} is not a checkpoint written by torch.save (it starts with {start!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says what matters
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(e))
        stopped = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
        what = (f"refers to {blocked.group(1)}" if blocked else "holds something other than tensors and plain values"
                + (f" ({stopped.group(1)})" if stopped else ""))
        raise ConversionError(
            f"{path} {what}, and charrnn reads checkpoints with torch.load(weights_only=True), which allows only "
            "tensors and plain Python values: the file was refused and nothing in it was run. "
            "Save the model_state, config, itos and stoi alone (tensors, numbers, strings, lists, dicts)") from None
    except OSError as e:
        raise ConversionError(f"cannot read {path}: {one_line(e)}") from None
    except Exception as e:  # noqa: BLE001 (torch.load fails on a non-checkpoint in many ways: KeyError, EOFError, ...)
        raise ConversionError(f"{path} is not a checkpoint written by torch.save "
                              f"({type(e).__name__}: {one_line(e) or 'unreadable'})") from None


def convert(checkpoint_path: str | Path, out_dir: str | Path, dtype: str | None = None,
            overwrite: bool = False) -> CharRNN | CharLSTM:
    """Convert a char-RNN checkpoint (layout above) into a model folder in Hub layout; returns the model.

    `dtype` ("float32", "float16", "bfloat16") is what the weights are stored as; by default the checkpoint's
    own dtype (float32 for float64 or mixed dtypes). Raises ConversionError for anything it cannot convert.
    """
    if dtype is not None and dtype not in SAVE_DTYPES:
        raise ConversionError(f"dtype must be one of {sorted(SAVE_DTYPES)}, not {dtype!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise ConversionError(f"{out_dir} already exists and is not an empty folder; choose a new folder "
                              "(or pass overwrite=True / --overwrite to replace its model files)")
    source = str(checkpoint_path)
    checkpoint = read_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint, source, dtype)
    model.save_pretrained(out_dir)
    config = checkpoint.get("config") or {}
    with open(out_dir / "README.md", "a", encoding="utf-8") as card:
        card.write(
            f"\n## Converted\n\nConverted with `charrnn convert` from `{Path(source).name}`, a PyTorch checkpoint read "
            f"with `torch.load(weights_only=True)`: `rnn.*` renamed to `{model.CELL}.*`, `embedding.*` and `head.*` kept, the "
            f"vocabulary taken from `itos`, weights stored as {model.save_dtype}. The checkpoint's config:\n\n"
            f"    {json.dumps(config, default=str, ensure_ascii=False)[:4000]}\n")
    return model


def model_from_checkpoint(checkpoint, source: str, dtype: str | None = None) -> CharRNN | CharLSTM:
    """A CharRNN or CharLSTM holding the checkpoint's weights, every part of the layout checked first."""
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"{source} holds {describe(checkpoint)}, not a dict; {SUPPORTED}")
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ConversionError(f"{source} holds a bare state dict ({len(checkpoint)} tensors) with no vocabulary; "
                              f"{SUPPORTED}")
    missing = [k for k in ("model_state", "itos") if k not in checkpoint]
    if missing:
        raise ConversionError(f"{source} has no {' and no '.join(repr(k) for k in missing)} entry (it has "
                              f"{', '.join(repr(k) for k in list(checkpoint)[:8])}); {SUPPORTED}")
    config = checkpoint.get("config", {})
    if not isinstance(config, dict):
        raise ConversionError(f"{source}: 'config' is {describe(config)}, not a dict; {SUPPORTED}")
    state = state_dict_of(checkpoint["model_state"], source)
    cls = cell_of(state, config, source)
    vocab = vocab_of(checkpoint["itos"], checkpoint.get("stoi"), source)
    dims = dimensions(state, config, source)
    check_layout(cls, state, dims, vocab, source)
    stored = dtype or checkpoint_dtype(state)
    dropout = config.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConversionError(f"{source}: config 'dropout' is {dropout!r}; it must be a number in [0, 1)")
    model = cls(vocab, embedding_dim=dims["embedding_dim"], hidden_size=dims["hidden_size"],
                num_layers=dims["num_layers"], dropout=float(dropout), save_dtype=stored)
    renamed = {(f"{cls.CELL}." + k[len("rnn."):] if k.startswith("rnn.") else k): v for k, v in state.items()}
    model.load_state_dict(renamed, strict=True)
    return model.eval()


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def state_dict_of(state, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise ConversionError(f"{source}: 'model_state' is {describe(state)}, not a state dict; {SUPPORTED}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{source}: 'model_state' entry {bad[0]!r} is {describe(state[bad[0]])}, not a tensor")
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    not_float = [k for k, v in state.items() if not v.is_floating_point()]
    if not_float:
        key = not_float[0]
        raise ConversionError(f"{source}: {key} is {state[key].dtype}; weights must be floating point")
    return state


def cell_of(state: dict[str, torch.Tensor], config: dict, source: str) -> type[CharRNN | CharLSTM]:
    """The class of the checkpoint's cell, told by rnn.weight_hh_l0's rows per unit (3 a GRU, 4 an LSTM); a config
    rnn_type must agree. A plain RNN, an LSTM with projections or a bidirectional network is named and refused."""
    refuse = ("charrnn converts GRU and LSTM char-RNNs only (embedding -> nn.GRU or nn.LSTM -> linear head), whose "
              "gates the page shows")
    named = config.get("rnn_type")
    if named is not None and (not isinstance(named, str) or named.strip().lower() not in ("gru", "lstm")):
        raise ConversionError(f"{source} is a {named!r} network (config 'rnn_type': {named!r}); {refuse}")
    if "rnn.weight_hr_l0" in state:
        raise ConversionError(f"{source} holds an LSTM with projections (rnn.weight_hr_l0); {refuse}")
    if any(k.endswith("_reverse") for k in state):
        raise ConversionError(f"{source} holds a bidirectional network (rnn.*_reverse weights); charrnn converts "
                              "unidirectional networks only: a language model reads left to right")
    hh = state.get("rnn.weight_hh_l0")
    if hh is None or hh.dim() != 2 or hh.shape[1] == 0:
        cls = {"gru": CharRNN, "lstm": CharLSTM}[(named or "gru").strip().lower()]
        return cls  # the layout check names what is missing or misshapen
    gates, rest = divmod(hh.shape[0], hh.shape[1])
    if rest or gates not in CELLS:
        kind = (CELL_NAMES.get(gates) if rest == 0 else None) or "a recurrent layer of another kind"
        raise ConversionError(f"{source} holds {kind}: rnn.weight_hh_l0 is {list(hh.shape)} ({hh.shape[0]} rows "
                              f"for {hh.shape[1]} units; a GRU has 3 x units, an LSTM 4 x); {refuse}")
    cls = CELLS[gates]
    if named is not None and named.strip().lower() != cls.MODEL_TYPE:
        raise ConversionError(f"{source}: config 'rnn_type' is {named!r} but the tensors hold {CELL_NAMES[gates]} "
                              f"(rnn.weight_hh_l0 is {list(hh.shape)}: {gates} x {hh.shape[1]} rows)")
    return cls


def vocab_of(itos, stoi, source: str) -> str:
    if not isinstance(itos, (list, tuple)):
        raise ConversionError(f"{source}: 'itos' is {describe(itos)}; it must be a list of the characters in id order")
    not_chars = [c for c in itos if not (isinstance(c, str) and len(c) == 1)]
    if not_chars:
        raise ConversionError(f"{source}: 'itos' holds {not_chars[0]!r:.40}; it must be a list of single characters "
                              "in id order (a character-level vocabulary)")
    try:
        vocab = Vocab("".join(itos))
    except ValueError as e:
        raise ConversionError(f"{source}: 'itos' is not a vocabulary: {e}") from None
    if stoi is not None:
        if not isinstance(stoi, dict):
            raise ConversionError(f"{source}: 'stoi' is {describe(stoi)}, not a dict from character to id")
        for c, i in stoi.items():
            if vocab.index.get(c) != i:
                where = f"itos[{i}] is {show_char(itos[i])}" if isinstance(i, int) and 0 <= i < len(itos) else \
                        f"itos has {len(itos)} characters"
                raise ConversionError(f"{source}: 'stoi' disagrees with 'itos': stoi[{c!r}] is {i!r} but {where}")
        if len(stoi) != len(itos):
            absent = [c for c in itos if c not in stoi]
            raise ConversionError(f"{source}: 'stoi' has {len(stoi)} characters and 'itos' {len(itos)} "
                                  f"(stoi lacks {', '.join(show_char(c) for c in absent[:5])})")
    return vocab.chars


def dimensions(state: dict[str, torch.Tensor], config: dict, source: str) -> dict[str, int]:
    """embedding_dim, hidden_size and num_layers: the config's, checked against the tensors' shapes where both
    say; the shapes' where the config does not."""
    layers = {int(m.group(1)) for k in state if (m := re.fullmatch(r"rnn\.weight_hh_l(\d+)", k))}
    emb, hh = state.get("embedding.weight"), state.get("rnn.weight_hh_l0")
    shown = {  # what the tensors show, and which tensor shows it
        "embedding_dim": ("embedding.weight", emb.shape[-1]) if emb is not None and emb.dim() else None,
        "hidden_size": ("rnn.weight_hh_l0", hh.shape[-1]) if hh is not None and hh.dim() else None,
        "num_layers": (f"rnn.weight_hh_l0 .. l{max(layers)}", max(layers) + 1) if layers else None,
    }
    dims = {}
    for name, keys in (("embedding_dim", ["embedding_dim"]), ("hidden_size", ["hidden_dim", "hidden_size"]),
                       ("num_layers", ["num_layers"])):
        key = next((k for k in keys if k in config), keys[0])
        said = config.get(key)
        if said is not None and (not isinstance(said, int) or isinstance(said, bool) or said < 1):
            raise ConversionError(f"{source}: config {key!r} is {said!r}; it must be a positive whole number")
        if said is not None and shown[name] is not None and said != shown[name][1]:
            tensor, value = shown[name]
            raise ConversionError(f"{source}: config {key!r} is {said} but the model_state has {value} ({tensor}); "
                                  f"{SUPPORTED}")
        if said is None and shown[name] is None:
            raise ConversionError(f"{source}: cannot tell the {name.replace('_', ' ')}: config has no {key!r} and "
                                  f"the model_state does not show it; {SUPPORTED}")
        dims[name] = int(said if said is not None else shown[name][1])
    return dims


def check_layout(cls, state: dict[str, torch.Tensor], dims: dict[str, int], vocab: str, source: str) -> None:
    """The checkpoint's tensors against those the model it becomes holds (named as the checkpoint names them:
    "rnn." where charrnn says "gru." or "lstm.")."""
    vocab_size = len(vocab)
    cell = cls.CELL + "."
    expected = {("rnn." + k[len(cell):] if k.startswith(cell) else k): shape
                for k, shape in cls.expected_tensors({"vocab": vocab, **dims}).items()}
    wrong, missing, unexpected = shape_differences(expected, {k: v.shape for k, v in state.items()})
    problems = [f"{k} is {list(has)}, expected {list(shape)}" for k, has, shape in wrong]
    problems += [f"{k} is missing" for k in missing] + [f"unexpected {k}" for k in unexpected]
    if problems:
        raise ConversionError(
            f"{source} does not hold the supported layout: {first_few(problems)} (expected for a vocabulary of "
            f"{vocab_size} characters in itos and {'an' if cls is CharLSTM else 'a'} {cls.CELL.upper()} of {dims['num_layers']} x {dims['hidden_size']} over a "
            f"{dims['embedding_dim']}-dimensional embedding). {SUPPORTED}")


def checkpoint_dtype(state: dict[str, torch.Tensor]) -> str:
    """The dtype name the tensors share, when charrnn can store it; float32 otherwise (float64, mixed)."""
    dtypes = {v.dtype for v in state.values()}
    names = {dtype: name for name, dtype in SAVE_DTYPES.items()}
    if len(dtypes) == 1 and (only := dtypes.pop()) in names:
        return names[only]
    return "float32"
