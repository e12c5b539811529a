"""Saving and loading in Hub layout: local folders and the real huggingface_hub client against a loopback Hub."""

import json
import math
import os
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch

from charrnn import BigramLanguageModel, CharRNN, DecodeSettings, ModelLoadError  # noqa: F401 (eval(SETTINGS))
from charrnn.models.loading import MAX_HEADER_BYTES, WEIGHTS_FILE

from conftest import SHIPPED, make_tiny, run_cli, run_python
from hub_server import FakeHub, GeneratedFile

SETTINGS = "DecodeSettings(max_new_chars=40, temperature=0.9, top_p=0.9, seed=3)"


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def saved(tmp_path) -> Path:
    model = make_tiny()
    model.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_save_writes_config_weights_and_card_and_loads_back_exactly(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((saved / "config.json").read_text())
    assert config["vocab"] == make_tiny().vocab and config["hidden_size"] == 16 and config["num_layers"] == 2
    assert "charrnn" in (saved / "README.md").read_text()
    keys = set(safetensors.torch.load_file(saved / "model.safetensors"))
    assert "gru.weight_ih_l0" in keys and "embedding.weight" in keys and "head.bias" in keys
    loaded = CharRNN.from_pretrained(saved, device="cpu")
    assert not loaded.training
    for (name, a), (_, b) in zip(make_tiny().state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_weights_load_into_a_plain_nn_gru(saved):
    tensors = safetensors.torch.load_file(saved / "model.safetensors")
    gru = torch.nn.GRU(8, 16, 2, batch_first=True)
    gru.load_state_dict({k[len("gru."):]: v for k, v in tensors.items() if k.startswith("gru.")}, strict=True)


def test_shipped_model_is_float16_small_and_documented():
    tensors = safetensors.torch.load_file(SHIPPED / "model.safetensors")
    assert all(t.dtype == torch.float16 for t in tensors.values())
    for f in SHIPPED.iterdir():
        assert f.stat().st_size < 10_000_000, f"{f} is over the 10 MB Spaces limit"
    card = (SHIPPED / "README.md").read_text()
    config = json.loads((SHIPPED / "config.json").read_text())
    assert f"{config['training']['val_loss']:.4f}" in card
    assert "python -m charrnn train" in card and "python -m charrnn evaluate" in card


@pytest.mark.parametrize("model_class", [CharRNN, BigramLanguageModel], ids=lambda c: c.__name__)
def test_a_pickle_only_folder_is_refused_without_unpickling(tmp_path, saved, monkeypatch, model_class):
    folder = tmp_path / "pickled"
    folder.mkdir()
    config = json.loads((saved / "config.json").read_text())
    if model_class is BigramLanguageModel:
        config = {"model_type": "bigram", "vocab": config["vocab"]}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "pytorch_model.bin").write_bytes(b"not even opened")

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(ModelLoadError, match="pytorch_model.bin.*refuses.*pickle"):
        model_class.from_pretrained(folder)


def test_a_corrupt_weights_file_is_explained(saved):
    (saved / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        CharRNN.from_pretrained(saved)


def test_a_truncated_weights_file_is_explained(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        CharRNN.from_pretrained(saved)


def test_a_config_that_does_not_match_the_weights_names_the_tensor(saved):
    config = json.loads((saved / "config.json").read_text())
    config["hidden_size"] = 32
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"do not match its config.json: gru.weight_ih_l0: file has \[48, 8\]"):
        CharRNN.from_pretrained(saved)


def test_a_folder_that_is_not_a_charrnn_model_is_refused(saved):
    (saved / "config.json").write_text(json.dumps({"hidden_size": 16, "model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="not a charrnn model"):
        CharRNN.from_pretrained(saved)


def test_a_path_that_is_neither_folder_nor_repo_id(tmp_path):
    with pytest.raises(ModelLoadError, match="not a local folder and not a Hub repo id"):
        CharRNN.from_pretrained(str(tmp_path / "no" / "such" / "folder"))


# ---- the real huggingface_hub client against the loopback Hub ----

LOAD = """
import json, sys
from charrnn import CharRNN, DecodeSettings, ModelLoadError
try:
    model = CharRNN.from_pretrained({repo!r}, revision={revision!r})
except ModelLoadError as e:
    print(json.dumps({{"error": str(e)}})); sys.exit(0)
trace = model.generate("ROMEO:", """ + SETTINGS + """)
print(json.dumps({{"text": trace.text, "hidden_size": model.hidden_size, "training": model.training}}))
"""


def load_in_subprocess(hub_url: str, cache: Path, repo: str, revision=None, **env) -> dict:
    result = run_python(LOAD.format(repo=repo, revision=revision),
                        {"HF_ENDPOINT": hub_url, "HF_HUB_CACHE": str(cache), "HF_HUB_ETAG_TIMEOUT": "5",
                         "HF_HUB_DOWNLOAD_TIMEOUT": "10", **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_load_by_repo_id_through_the_hub_client_then_offline_from_the_cache(tmp_path, saved):
    expected = make_tiny().generate("ROMEO:", eval(SETTINGS)).text
    cache = tmp_path / "cache"
    with FakeHub() as hub:
        sha = hub.commit("someone/tiny", folder_files(saved))
        loaded = load_in_subprocess(hub.url, cache, "someone/tiny")
        assert loaded == {"text": expected, "hidden_size": 16, "training": False}
        paths = {path for method, path in hub.requests if method == "GET"}
        # The weights come from the commit that config.json came from, even if main moves meanwhile.
        assert {"/someone/tiny/resolve/main/config.json", f"/someone/tiny/resolve/{sha}/model.safetensors"} <= paths
        assert not any("pytorch_model.bin" in p for _, p in hub.requests)
    snapshot = cache / "models--someone--tiny" / "snapshots" / sha
    assert (snapshot / "model.safetensors").is_file()
    assert (cache / "models--someone--tiny" / "refs" / "main").read_text() == sha
    # The server is gone: offline mode resolves everything from the cache.
    offline = load_in_subprocess("http://127.0.0.1:9", cache, "someone/tiny", HF_HUB_OFFLINE="1")
    assert offline["text"] == expected


def test_load_a_revision_by_branch_and_by_commit(tmp_path, saved):
    other = make_tiny(seed=5)
    other.save_pretrained(tmp_path / "other")
    with FakeHub() as hub:
        first = hub.commit("someone/tiny", folder_files(saved))
        hub.commit("someone/tiny", folder_files(tmp_path / "other"), branch="v2")
        from_branch = load_in_subprocess(hub.url, tmp_path / "c1", "someone/tiny", revision="v2")
        from_commit = load_in_subprocess(hub.url, tmp_path / "c2", "someone/tiny", revision=first)
        missing = load_in_subprocess(hub.url, tmp_path / "c3", "someone/tiny", revision="v9")
    assert from_branch["text"] == other.generate("ROMEO:", eval(SETTINGS)).text
    assert from_commit["text"] == make_tiny().generate("ROMEO:", eval(SETTINGS)).text
    assert "has no revision 'v9'" in missing["error"]


def test_hub_failures_each_get_a_clear_message(tmp_path, saved):
    files = folder_files(saved)
    bad_config = json.loads(files["config.json"])
    bad_config["num_layers"] = 3
    with FakeHub() as hub:
        hub.commit("someone/pickled", {"config.json": files["config.json"], "pytorch_model.bin": b"\x80\x02}q\x00."})
        hub.commit("someone/corrupt", {"config.json": files["config.json"], "model.safetensors": b"\x00" * 64})
        hub.commit("someone/mismatch", {**files, "config.json": json.dumps(bad_config).encode()})
        hub.commit("someone/empty", {"README.md": b"# nothing here"})
        errors = {repo: load_in_subprocess(hub.url, tmp_path / repo, f"someone/{repo}")["error"]
                  for repo in ("pickled", "corrupt", "mismatch", "empty", "missing")}
        assert not any(method == "GET" and "pytorch_model.bin" in path for method, path in hub.requests)
    assert "only pytorch_model.bin, which charrnn refuses" in errors["pickled"]
    assert "not a readable safetensors file" in errors["corrupt"]
    assert "missing from the file" in errors["mismatch"] and "gru.weight_ih_l2" in errors["mismatch"]
    assert "has no model.safetensors" in errors["empty"]
    assert "neither a local folder nor a model repository on the Hub" in errors["missing"]
    offline = load_in_subprocess("http://127.0.0.1:9", tmp_path / "never", "someone/tiny", HF_HUB_OFFLINE="1")
    assert "not in the local cache" in offline["error"]


def test_push_publishes_the_folder_with_the_token_from_the_environment(tmp_path, saved):
    with FakeHub(token="hf_loopbacktoken") as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "home"), "HF_TOKEN": "hf_loopbacktoken"}
        pushed = run_cli("push", str(saved), "someone/pushed", env=env, timeout=120)
        assert pushed.returncode == 0, pushed.stderr
        assert hub.files("someone/pushed")["model.safetensors"] == (saved / "model.safetensors").read_bytes()
        assert set(hub.files("someone/pushed")) >= {"config.json", "model.safetensors", "README.md"}
        loaded = load_in_subprocess(hub.url, tmp_path / "cache", "someone/pushed")
        assert loaded["text"] == make_tiny().generate("ROMEO:", eval(SETTINGS)).text
        refused = run_cli("push", str(saved), "someone/other", env={**env, "HF_TOKEN": "hf_wrong"}, timeout=120)
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1 and "error" in refused.stderr
    assert "someone/other" not in hub.repos


# ---- models too large or inconsistent are refused before anything large is downloaded or allocated ----

def safetensors_prefix(tensors: dict[str, tuple[str, list[int]]], pad: int = 0) -> tuple[bytes, int]:
    """A safetensors file's first bytes (header length, header) for tensors laid end to end, and the data's size."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode() + b" " * pad
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, offset


def declared_file(tensors: dict, pad: int = 0) -> GeneratedFile:
    """A valid safetensors file holding `tensors` (zeros), made on the fly as the server sends it."""
    prefix, data = safetensors_prefix(tensors, pad)
    return GeneratedFile(prefix, len(prefix) + data)


HUGE = {"embedding.weight": ("F32", [750_000_000])}  # one tensor of 3 GB
GIANT = {"hidden_size": 60000, "num_layers": 6}  # tens of GB once built

REFUSE = """
import json, resource
import torch
import charrnn.models.loading
from charrnn import BigramLanguageModel, CharRNN, DecodeSettings, ModelLoadError  # noqa: F401 (eval(SETTINGS))


def address_space():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


outcome = {{"rss_after_imports": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}
# Everything is imported: from here on the process may map only {headroom} bytes more.
resource.setrlimit(resource.RLIMIT_AS, (address_space() + {headroom}, resource.RLIM_INFINITY))
for source in {refused!r}:
    try:
        CharRNN.from_pretrained(source, device="cpu")
        outcome[source] = "loaded"
    except ModelLoadError as e:
        outcome[source] = str(e)
outcome["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
outcome["control"] = CharRNN.from_pretrained({control!r}, device="cpu").hidden_size
try:
    torch.empty({giant}, dtype=torch.float32)
    outcome["giant"] = "allocated"
except RuntimeError:
    outcome["giant"] = "refused"
print(json.dumps(outcome))
"""
HEADROOM = 512 << 20  # a small load needs ~250 MB of address space beyond the imports (measured)


def refuse_in_subprocess(refused: list[str], control: str, env: dict | None = None) -> dict:
    """Load each of `refused` under an address-space limit, then the small `control` under the same limit, then
    try to allocate the giant config's parameters (which the limit must refuse, or it proves nothing)."""
    config = {**json.loads((SHIPPED / "config.json").read_text()), **GIANT}
    giant = sum(math.prod(shape) for shape in CharRNN.expected_tensors(config).values())
    result = run_python(REFUSE.format(refused=refused, control=control, giant=giant, headroom=HEADROOM), env)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["giant"] == "refused" and outcome["control"] == 16
    print(f"\npeak RSS {outcome['rss_after_imports'] / 1e6:.0f} MB after imports, "
          f"{outcome['peak_rss'] / 1e6:.0f} MB after refusing {len(refused)} models")
    assert outcome["peak_rss"] - outcome["rss_after_imports"] < 200e6
    return outcome


def test_oversized_hub_models_are_refused_before_download_or_allocation(tmp_path, saved):
    files = folder_files(saved)
    config = json.loads(files["config.json"])
    other = make_tiny(hidden_size=32)
    other.save_pretrained(tmp_path / "other")
    with FakeHub() as hub:
        hub.commit("someone/giant", {**files, "config.json": json.dumps({**config, **GIANT}).encode()})
        hub.commit("someone/huge", {**files, "model.safetensors": declared_file(HUGE)})
        hub.commit("someone/mismatch", {**files, WEIGHTS_FILE: (tmp_path / "other" / WEIGHTS_FILE).read_bytes()})
        shapes = {k: list(v.shape) for k, v in make_tiny().state_dict().items()}
        long_header = declared_file({k: ("F32", shape) for k, shape in shapes.items()}, pad=200_000)
        hub.commit("someone/long-header", {**files, "model.safetensors": long_header})
        hub.commit("someone/ints", {**files, "model.safetensors": declared_file(
            {k: ("I64", shape) for k, shape in shapes.items()})})
        hub.commit("someone/big-config", {**files, "config.json": b" " * 2_000_000 + files["config.json"]})
        hub.commit("someone/tiny", files)
        repos = ["someone/giant", "someone/huge", "someone/mismatch", "someone/long-header", "someone/ints",
                 "someone/big-config"]
        outcome = refuse_in_subprocess(repos, "someone/tiny", {
            "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_ETAG_TIMEOUT": "5",
            "HF_HUB_DOWNLOAD_TIMEOUT": "10"})
        sent = {repo: hub.sent_to(repo, WEIGHTS_FILE) for repo in repos}
        whole = {repo: hub.full_gets(repo, WEIGHTS_FILE) for repo in repos}
        config_sent = hub.sent_to("someone/big-config", "config.json")
    print(f"bytes of model.safetensors sent while refusing: {sent}")
    assert re.search(r"config.json implies [\d,]+ parameters, [\d,]+ MB as float32, over the limit of 200 MB",
                     outcome["someone/giant"])
    assert "its model.safetensors is 3,000 MB, over the limit of 200 MB" in outcome["someone/huge"]
    assert "do not match its config.json: gru.weight_ih_l0: file has [96, 8]" in outcome["someone/mismatch"]
    assert f"has a header of {len(long_header.prefix) - 8:,} bytes" in outcome["someone/long-header"]
    assert "holds tensor 'embedding.weight' as 'I64'; charrnn loads float tensors only" in outcome["someone/ints"]
    assert "config.json of 'someone/big-config' is 2,00" in outcome["someone/big-config"]
    # Nothing of the weights was downloaded whole; at most a header was read.
    assert whole == dict.fromkeys(repos, 0)
    assert sent["someone/giant"] == sent["someone/huge"] == sent["someone/big-config"] == 0
    assert all(n <= 8 + MAX_HEADER_BYTES for n in sent.values())
    assert config_sent == 0


def test_oversized_local_models_are_refused_before_allocation(tmp_path, saved):
    def folder(name: str, config: dict | None = None, weights: bytes | None = None, size: int | None = None) -> str:
        path = tmp_path / name
        path.mkdir()
        base = json.loads((saved / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**base, **(config or {})}))
        (path / WEIGHTS_FILE).write_bytes(weights if weights is not None else (saved / WEIGHTS_FILE).read_bytes())
        if size is not None:
            os.truncate(path / WEIGHTS_FILE, size)  # sparse: the disk holds only the header
        return str(path)

    other = make_tiny(hidden_size=32)
    other.save_pretrained(tmp_path / "other")
    prefix, data = safetensors_prefix(HUGE)
    refused = [folder("giant", GIANT), folder("huge", weights=prefix, size=len(prefix) + data),
               folder("mismatch", weights=(tmp_path / "other" / WEIGHTS_FILE).read_bytes())]
    outcome = refuse_in_subprocess(refused, str(saved))
    assert "config.json implies" in outcome[refused[0]] and "over the limit of 200 MB" in outcome[refused[0]]
    assert "its model.safetensors is 3,000 MB, over the limit of 200 MB" in outcome[refused[1]]
    assert "do not match its config.json: gru.weight_ih_l0: file has [96, 8]" in outcome[refused[2]]


def test_the_size_limit_is_a_keyword_or_the_environment(saved, monkeypatch):
    parameters = sum(p.numel() for p in make_tiny().parameters())
    size = 4 * parameters  # float32 bytes
    with pytest.raises(ModelLoadError, match=rf"implies {parameters:,} parameters, .* over the limit of 0.001 MB"):
        CharRNN.from_pretrained(saved, max_model_mb=0.001)
    monkeypatch.setenv("CHARRNN_MAX_MODEL_MB", str(size / 1e6 * 0.99))
    with pytest.raises(ModelLoadError, match="over the limit"):
        CharRNN.from_pretrained(saved)
    assert CharRNN.from_pretrained(saved, max_model_mb=size / 1e6).hidden_size == 16  # the limit itself loads
    assert CharRNN.from_pretrained(saved, max_model_mb=math.inf).hidden_size == 16  # no limit
    monkeypatch.setenv("CHARRNN_MAX_MODEL_MB", "lots")
    with pytest.raises(ValueError, match="CHARRNN_MAX_MODEL_MB must be a positive number of megabytes, not 'lots'"):
        CharRNN.from_pretrained(saved)
    for bad in (0, -1, math.nan, True, "5"):
        with pytest.raises(ValueError, match="max_model_mb must be a positive number of megabytes"):
            CharRNN.from_pretrained(saved, max_model_mb=bad)
