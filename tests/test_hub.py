"""Saving and loading in Hub layout: local folders and the real huggingface_hub client against a loopback Hub."""

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from charrnn import CharRNN, DecodeSettings, ModelLoadError

from conftest import SHIPPED, make_tiny, run_cli, run_python
from hub_server import FakeHub

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


def test_a_pickle_only_folder_is_refused_without_unpickling(tmp_path, saved, monkeypatch):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((saved / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not even opened")

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(ModelLoadError, match="pytorch_model.bin.*refuses.*pickle"):
        CharRNN.from_pretrained(folder)


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
