"""Finding a model's files and vetting them before anything is built from them.

A model is a folder (local, or a snapshot of a Hub repo) holding config.json and model.safetensors. fetch_model finds
the two files, downloading what it must, and refuses a model before anything large is allocated or downloaded:
config.json is bounded in size and parsed, the model class says which tensors its fields imply (their float32 size
must be within the limit), and the safetensors header, read alone (on the Hub with a Range request, after a HEAD
gave the file's size), must describe exactly those tensors in a float dtype. build_model then instantiates the
model and loads the weights from the local file: CPU work only.

Hub downloads go through huggingface_hub (its cache, HF_TOKEN, HF_HUB_OFFLINE); nothing here ever unpickles.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import torch.nn as nn
from huggingface_hub import constants, file_exists, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status, validate_repo_id

try:  # the HTTP client under huggingface_hub: httpx2 from version 2, httpx before
    import httpx2 as httpx
except ImportError:
    import httpx

from .config import ConfigError, constructor_arguments, shown

WEIGHTS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"
SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# config.json files written before "model_type" existed are all GRUs (CharRNN).
DEFAULT_MODEL_TYPE = "gru"


class ModelLoadError(RuntimeError):
    """A model folder or Hub repository could not be loaded; the message says why."""


class OtherModelTypeError(ModelLoadError):
    """The folder holds a charrnn model of another type (config.json's model_type) than the class asked to load."""

    def __init__(self, message: str, model_type: str):
        super().__init__(message)
        self.model_type = model_type


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    return device


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def load_weights(model: torch.nn.Module, path: str, *, source: str) -> None:
    """Load a safetensors file into `model`, explaining a corrupt file or shapes that do not match the config."""
    try:
        tensors = safetensors.torch.load_file(path)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{WEIGHTS_FILE} of {source!r} is not a readable safetensors file ({one_line(e)})") from None
    check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                 {k: tuple(v.shape) for k, v in tensors.items()}, source=source)
    model.load_state_dict(tensors)


def shape_differences(expected: dict, found: dict) -> tuple[list, list, list]:
    """How a state dict's tensors (`found`, name -> shape) differ from those expected: (name, found shape, expected
    shape) of each of the wrong shape, the names missing, the names not expected."""
    wrong = [(k, tuple(found[k]), tuple(shape)) for k, shape in expected.items()
             if k in found and tuple(found[k]) != tuple(shape)]
    return wrong, [k for k in expected if k not in found], [k for k in found if k not in expected]


def first_few(problems: list[str], shown: int = 4) -> str:
    return "; ".join(problems[:shown]) + (f"; and {len(problems) - shown} more" if len(problems) > shown else "")


def check_shapes(expected: dict, found: dict, *, source: str) -> None:
    """Raise ModelLoadError naming the tensors whose names or shapes differ from what config.json implies."""
    wrong, missing, unexpected = shape_differences(expected, found)
    problems = [f"{k}: file has {list(has)}, config.json implies {list(implied)}" for k, has, implied in wrong]
    problems += [f"{k} missing from the file" for k in missing]
    # Names from the file are cut short: the header is the publisher's text.
    problems += [f"unexpected tensor {k[:60]!r} in the file" for k in unexpected]
    if problems:
        raise ModelLoadError(f"the weights of {source!r} do not match its config.json: {first_few(problems)}")


# Which class builds a config.json, by its "model_type" (a config without one is a GRU): each model class registers
# itself (charrnn.models.base.HubModel), and charrnn.models imports every one of them.
MODEL_TYPES: dict[str, type[nn.Module]] = {}


def register_model_class(model_type: str, cls: type[nn.Module]) -> None:
    MODEL_TYPES[model_type] = cls


CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 1_000_000
MAX_HEADER_BYTES = 100_000  # a charrnn model's safetensors header is a few KB
DEFAULT_MAX_MODEL_MB = 200
MB = 1_000_000
FLOAT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}  # safetensors dtype -> bytes per element


@dataclass(frozen=True)
class FetchedModel:
    """A model's files on local disk, vetted: what build_model needs, with nothing built yet."""

    source: str  # the folder or repo id as given, for messages
    model_type: str  # a key of MODEL_TYPES
    config: dict  # config.json; the fields that define the model are checked, the others are as written
    tensors: dict[str, tuple[int, ...]]  # the names and shapes config.json implies, which the file holds
    folder: str  # the local folder, or the snapshot folder in the Hub cache
    weights: str  # the local path of model.safetensors

    @property
    def num_parameters(self) -> int:
        return sum(math.prod(shape) for shape in self.tensors.values())


def max_model_bytes(max_model_mb: float | None = None) -> float:
    """The largest model (its float32 size) that may load: max_model_mb, else CHARRNN_MAX_MODEL_MB, else 200 MB.
    math.inf lifts the limit (for a model of one's own, such as the one training has just written)."""
    name = "max_model_mb"
    if max_model_mb is None:
        name, max_model_mb = "CHARRNN_MAX_MODEL_MB", os.environ.get("CHARRNN_MAX_MODEL_MB", "").strip()
        try:
            max_model_mb = float(max_model_mb) if max_model_mb else DEFAULT_MAX_MODEL_MB
        except ValueError:
            pass
    if isinstance(max_model_mb, bool) or not isinstance(max_model_mb, (int, float)) \
            or math.isnan(max_model_mb) or max_model_mb <= 0:
        raise ValueError(f"{name} must be a positive number of megabytes, not {max_model_mb!r}")
    return max_model_mb * MB


def fetch_model(source, revision: str | None = None, *, max_model_mb: float | None = None,
                token: str | bool | None = None, cache_dir: str | Path | None = None,
                local_files_only: bool = False, force_download: bool = False, local: bool | None = None,
                model_class: type | None = None) -> FetchedModel:
    """Find and vet a model's config.json and model.safetensors, downloading them from the Hub if need be.

    source is a local folder or a Hub repo id; local=True takes it as a folder only, local=False as a repo id
    only (nothing on disk is looked at), None as a folder when one exists. model_class, when given, refuses a
    model of another type. Raises ModelLoadError, before anything large is downloaded or allocated, for a model
    whose float32 size is over the limit (max_model_mb), whose files are missing, oversized or corrupt, or whose
    weights do not match config.json.
    """
    source = str(source)
    limit = max_model_bytes(max_model_mb)
    if local or (local is None and os.path.isdir(source)):
        return fetch_folder(source, limit, model_class)
    with hub_errors(source, revision):
        return fetch_hub(source, revision, limit, model_class, token=token, cache_dir=cache_dir,
                         local_files_only=local_files_only, force_download=force_download)


def fetch_folder(folder: str, limit: float, model_class: type | None) -> FetchedModel:
    if not os.path.isdir(folder):
        raise ModelLoadError(f"{folder!r} is not a folder")
    config_path, weights = os.path.join(folder, CONFIG_FILE), os.path.join(folder, WEIGHTS_FILE)
    config = read_config(config_path, folder) if os.path.isfile(config_path) else None
    if not os.path.isfile(weights):
        raise missing_weights(folder, has_pickle=os.path.isfile(os.path.join(folder, PICKLE_FILE)))
    model_type, tensors = vet_config(config, folder, limit, model_class)
    vet_weights_file(weights, tensors, folder, limit)
    return FetchedModel(folder, model_type, config, tensors, folder, weights)


def fetch_hub(repo_id: str, revision: str | None, limit: float, model_class: type | None, *, token, cache_dir,
              local_files_only: bool, force_download: bool) -> FetchedModel:
    validate_repo_id(repo_id)
    online = not (local_files_only or constants.is_offline_mode())

    def metadata(filename: str, rev: str | None):
        """The file's size and commit from a HEAD; None if the repo has no such file; False when offline."""
        nonlocal online
        if not online:
            return False
        try:
            return get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=rev), token=token)
        except RemoteEntryNotFoundError:
            return None
        except (httpx.ConnectError, httpx.TimeoutException, OfflineModeIsEnabled):
            online = False  # the Hub is unreachable: hf_hub_download falls back on the cache, or explains
            return False

    def download(filename: str, rev: str | None) -> str | None:
        try:
            return hf_hub_download(repo_id, filename, revision=rev, cache_dir=cache_dir, token=token,
                                   force_download=force_download, local_files_only=local_files_only)
        except LocalEntryNotFoundError:
            raise  # offline and not cached: hub_errors explains
        except EntryNotFoundError:
            return None

    config_meta, config_path = metadata(CONFIG_FILE, revision), None
    if config_meta is not None:
        if config_meta and (config_meta.size is None or config_meta.size > MAX_CONFIG_BYTES):
            raise config_too_large(repo_id, config_meta.size)
        config_path = download(CONFIG_FILE, revision)
    # Everything else comes from the commit that config.json came from, even if the branch moves meanwhile.
    commit = snapshot_commit(config_path) or (config_meta.commit_hash if config_meta else None) or revision
    config = read_config(config_path, repo_id) if config_path else None

    weights_meta = metadata(WEIGHTS_FILE, commit)
    if weights_meta is None:
        raise missing_weights(repo_id, has_pickle=online and file_exists(repo_id, PICKLE_FILE, revision=commit,
                                                                        token=token))
    model_type, tensors = vet_config(config, repo_id, limit, model_class)
    if weights_meta:  # online: size and header before a byte of the weights is downloaded
        check_file_size(weights_meta.size, repo_id, limit)
        url = hf_hub_url(repo_id, WEIGHTS_FILE, revision=commit)
        vet_header(read_remote_prefix(url, min(weights_meta.size, 8 + MAX_HEADER_BYTES), token),
                   weights_meta.size, tensors, repo_id)
    weights = download(WEIGHTS_FILE, commit)
    if weights is None:
        raise missing_weights(repo_id, has_pickle=False)
    vet_weights_file(weights, tensors, repo_id, limit)  # what is on disk is what gets loaded
    return FetchedModel(repo_id, model_type, config, tensors, os.path.dirname(weights), weights)


def snapshot_commit(path: str | None) -> str | None:
    """The commit a file downloaded into the Hub cache came from (the cache keeps snapshots/<commit>/<file>)."""
    folder = Path(path).parent.name if path else ""
    return folder if len(folder) == 40 and all(c in "0123456789abcdef" for c in folder) else None


@contextmanager
def hub_errors(source: str, revision: str | None):
    """Turn the Hub client's exceptions into a ModelLoadError that says what went wrong."""
    try:
        yield
    except ModelLoadError:
        raise
    except RevisionNotFoundError:
        raise ModelLoadError(f"the Hub repository {source!r} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"{source!r} is neither a local folder nor a model repository on the Hub "
            "(check the spelling; a private or gated repository needs HF_TOKEN)") from None
    except HFValidationError:
        raise ModelLoadError(
            f"{source!r} is not a local folder and not a Hub repo id of the form 'owner/name'") from None
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"cannot load {source!r}: the Hub is unreachable (or HF_HUB_OFFLINE is set) and the model "
            "is not in the local cache") from None
    except (HfHubHTTPError, OSError, httpx.HTTPError) as e:
        raise ModelLoadError(f"cannot download {source!r} from the Hub: {one_line(e)}") from None


def read_remote_prefix(url: str, length: int, token) -> bytes:
    """The first `length` bytes of a file on the Hub, by a Range request; never more, whatever the server sends."""
    headers = {**build_hf_headers(token=token), "Range": f"bytes=0-{max(length, 1) - 1}", "Accept-Encoding": "identity"}
    data = bytearray()
    with get_session().stream("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
        if response.status_code >= 400:
            response.read()
            hf_raise_for_status(response)
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= length:
                break
    return bytes(data[:length])


# ---- the checks, the same for a local folder and a Hub repo ----

def read_config(path: str, source: str) -> dict:
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise config_too_large(source, size)
    with open(path, "rb") as f:
        text = f.read(MAX_CONFIG_BYTES + 1)
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ModelLoadError(f"{CONFIG_FILE} of {source!r} is not valid JSON ({one_line(e)[:200]})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{CONFIG_FILE} of {source!r} is not a JSON object")
    return config


def vet_config(config: dict | None, source: str, limit: float, model_class: type | None):
    """The model type and the tensors config.json implies, once their float32 size is known to be within the limit."""
    model_type = (config or {}).get("model_type", DEFAULT_MODEL_TYPE)
    cls = MODEL_TYPES.get(model_type) if isinstance(model_type, str) else None
    if cls is None:
        raise ModelLoadError(f"{source!r} is not a charrnn model: its config.json has model_type {shown(model_type)}; "
                             f"charrnn loads model_type {', '.join(map(repr, MODEL_TYPES))}")
    if not isinstance((config or {}).get("vocab"), str):
        raise ModelLoadError(f"{source!r} is not a charrnn model: its config.json is missing or has no 'vocab' string")
    if model_class is not None and not issubclass(cls, model_class):
        raise OtherModelTypeError(f"{source!r} is a {model_type!r} model (config.json's model_type), which "
                                  f"{model_class.__name__} cannot load; charrnn.load_model loads any model type",
                                  model_type)
    try:
        tensors = cls.expected_tensors(config)
    except ConfigError as e:
        raise ModelLoadError(f"{CONFIG_FILE} of {source!r} is not a valid charrnn config: {e}") from None
    parameters = sum(math.prod(shape) for shape in tensors.values())
    if 4 * parameters > limit:
        raise ModelLoadError(
            f"{source!r} is too large to load here: its config.json implies {parameters:,} parameters, "
            f"{megabytes(4 * parameters)} as float32, over the limit of {megabytes(limit)} "
            "(max_model_mb, or CHARRNN_MAX_MODEL_MB)")
    return model_type, tensors


def check_file_size(size: int | None, source: str, limit: float) -> None:
    if size is None:
        raise ModelLoadError(f"cannot load {source!r}: the Hub did not say how large its {WEIGHTS_FILE} is")
    if size > limit + 8 + MAX_HEADER_BYTES:
        raise ModelLoadError(
            f"{source!r} is too large to load here: its {WEIGHTS_FILE} is {megabytes(size)}, over the limit of "
            f"{megabytes(limit)} (max_model_mb, or CHARRNN_MAX_MODEL_MB)")


def vet_weights_file(path: str, tensors: dict, source: str, limit: float) -> None:
    size = os.path.getsize(path)
    check_file_size(size, source, limit)
    with open(path, "rb") as f:
        vet_header(f.read(8 + MAX_HEADER_BYTES), size, tensors, source)


def vet_header(prefix: bytes, file_size: int, tensors: dict, source: str) -> None:
    """Check a safetensors header (the file's first bytes) against the tensors config.json implies.

    The header must be small, describe only float tensors whose byte ranges tile the rest of the file exactly,
    and name exactly the expected tensors with the expected shapes.
    """
    def unreadable(why: str) -> ModelLoadError:
        return ModelLoadError(f"{WEIGHTS_FILE} of {source!r} is not a readable safetensors file ({why})")

    if len(prefix) < 8 or file_size < 8:
        raise unreadable("it is shorter than the 8 bytes that give its header's length")
    length = int.from_bytes(prefix[:8], "little")
    if length > MAX_HEADER_BYTES:
        raise ModelLoadError(f"{WEIGHTS_FILE} of {source!r} has a header of {length:,} bytes; a charrnn model's is "
                             f"a few KB, and at most {MAX_HEADER_BYTES:,} are read")
    if 8 + length > file_size or 8 + length > len(prefix):
        raise unreadable(f"its header should be {length:,} bytes, but the file has {file_size:,} in all")
    try:
        header = json.loads(prefix[8 : 8 + length])
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise unreadable("its header is not a JSON object")
    header.pop("__metadata__", None)
    found, ranges = {}, []
    for name, info in header.items():
        if not isinstance(info, dict) or not all(k in info for k in ("dtype", "shape", "data_offsets")):
            raise unreadable(f"tensor {name[:60]!r} is described as {shown(info)}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
                and isinstance(offsets, list) and len(offsets) == 2
                and all(type(n) is int and n >= 0 for n in offsets) and offsets[0] <= offsets[1]):
            raise unreadable(f"tensor {name[:60]!r} has shape {shown(shape)} and offsets {shown(offsets)}")
        if dtype not in FLOAT_DTYPES:
            raise ModelLoadError(f"{WEIGHTS_FILE} of {source!r} holds tensor {name[:60]!r} as {shown(dtype)}; "
                                 f"charrnn loads float tensors only ({', '.join(FLOAT_DTYPES)})")
        if offsets[1] - offsets[0] != math.prod(shape) * FLOAT_DTYPES[dtype]:
            raise unreadable(f"tensor {name[:60]!r} of shape {shape} takes bytes {offsets[0]:,} to {offsets[1]:,}")
        found[name] = tuple(shape)
        ranges.append(offsets)
    end = 0
    for begin, stop in sorted(ranges):
        if begin != end:
            raise unreadable("its tensors overlap or leave gaps")
        end = stop
    if 8 + length + end != file_size:
        raise unreadable(f"its header describes {8 + length + end:,} bytes, but the file has {file_size:,}")
    check_shapes(tensors, found, source=source)


def missing_weights(source: str, has_pickle: bool) -> ModelLoadError:
    return ModelLoadError(
        f"{source!r} has no {WEIGHTS_FILE}"
        + (f", only {PICKLE_FILE}, which charrnn refuses: pickled weights can run code when loaded. "
           f"Convert it to {WEIGHTS_FILE} (safetensors.torch.save_file) and try again"
           if has_pickle else ": charrnn loads safetensors weights only"))


def config_too_large(source: str, size: int | None) -> ModelLoadError:
    return ModelLoadError(f"{CONFIG_FILE} of {source!r} is "
                          + (f"{size:,} bytes" if size is not None else "of unknown size")
                          + f"; a charrnn config is a few KB, and at most {MAX_CONFIG_BYTES:,} bytes are read")


def megabytes(n: float) -> str:
    return f"{n / MB:,.0f} MB" if n >= 100 * MB else f"{n / MB:.1f} MB" if n >= MB else f"{n / MB:.3g} MB"


# ---- building ----

def build_model(fetched: FetchedModel, device: str | torch.device = "auto") -> nn.Module:
    """Instantiate the fetched model and load its weights (float32, eval mode) on `device`: CPU work, no download.

    The model is built on the meta device and the file's tensors become its parameters, so no memory is spent on
    an initialisation that the weights replace.
    """
    device = resolve_device(device)
    cls = MODEL_TYPES[fetched.model_type]
    arguments = constructor_arguments(cls, fetched.config)
    try:
        with torch.device("meta"):
            model = cls(**arguments)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{CONFIG_FILE} of {fetched.source!r} is not a valid charrnn config: {e}") from None
    built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if built != fetched.tensors:
        raise RuntimeError(f"{cls.__name__}.expected_tensors does not describe the model it builds: "
                           f"{sorted(set(built.items()) ^ set(fetched.tensors.items()))[:4]}")
    try:
        with safetensors.safe_open(fetched.weights, framework="pt") as f:
            tensors = {k: f.get_tensor(k).to(torch.float32) for k in f.keys()}
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{WEIGHTS_FILE} of {fetched.source!r} is not a readable safetensors file "
                             f"({one_line(e)})") from None
    model.load_state_dict(tensors, strict=True, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = cls(**arguments)  # it makes tensors that are not in its state dict: build it the ordinary way
        model.load_state_dict(tensors, strict=True)
    return model.eval().to(device)


def load_model(source, revision: str | None = None, *, device: str | torch.device = "auto",
               model_class: type | None = None, **fetch_kwargs) -> nn.Module:
    """fetch_model, then build_model: a vetted model of whichever type its config.json names (MODEL_TYPES).

    fetch_kwargs: max_model_mb, token, cache_dir, local_files_only, force_download, local.
    """
    device = resolve_device(device)
    return build_model(fetch_model(source, revision, model_class=model_class, **fetch_kwargs), device)
