"""The page's models (charrnn.registry): allowed folders only, one load per model, loads that hold no one up."""

import json
import os

import pytest

from charrnn import CharRNN, ModelLoadError
from charrnn.page import inputs
from charrnn.models.config import shown
from charrnn.serving.registry import ModelKey, ModelRegistry, ROOT
from charrnn.page.views import describe_model

from conftest import SHIPPED, make_tiny, run_python
from threads import in_threads


@pytest.fixture
def place(tmp_path):
    """tmp_path/allowed (the registry's one allowed folder) and tmp_path/outside, each with a tiny model."""
    for where in ("allowed", "outside"):
        make_tiny().save_pretrained(tmp_path / where / "tiny")
    return tmp_path


def refusal(registry: ModelRegistry, source: str) -> str:
    with pytest.raises(ModelLoadError) as refused:
        registry.get(inputs.model_key(source, None))
    return str(refused.value).replace(shown(source), "SOURCE")


def test_folders_outside_the_allowed_ones_are_refused_alike_whether_they_exist_or_not(place):
    registry = ModelRegistry(device="cpu", allowed_dirs=[place / "allowed"])
    (place / "allowed" / "link").symlink_to(place / "outside" / "tiny")
    messages = {refusal(registry, source) for source in [
        str(place / "outside" / "tiny"),  # a model that exists
        str(place / "outside" / "missing"),
        str(place / "allowed" / "missing"),
        str(place / "allowed" / ".." / "outside" / "tiny"),
        str(place / "allowed" / "link"),  # a symlink out of the allowed folder
        "../outside/tiny", "/etc", "bad\0name", "x" * 400,
    ]}
    assert messages == {"SOURCE is not a Hub repo id (owner/name) and not a model folder this page can load: it "
                        "loads local folders only from its weights/ folder and from the folders in CHARRNN_MODEL_DIRS"}
    assert registry.models == {} and registry.loading == {}
    with pytest.raises(inputs.InputError, match="the repo id or folder may have up to 500 characters"):
        inputs.model_key("x" * 501, None)
    assert registry.get(inputs.model_key(str(place / "allowed" / "tiny"), None)).hidden_size == 16


def test_the_apps_weights_and_the_folders_in_charrnn_model_dirs_load(place, monkeypatch):
    monkeypatch.setenv("CHARRNN_MODEL_DIRS", f"{place / 'nowhere'}{os.pathsep}{place / 'allowed'}")
    monkeypatch.delenv("CHARRNN_MODEL", raising=False)
    registry = ModelRegistry(device="cpu")
    monkeypatch.chdir(place)  # relative sources are relative to the app's folder, not to where it was started
    shipped = registry.get(inputs.model_key("weights/tiny-shakespeare", None))
    assert shipped.hidden_size == 512
    assert registry.resolve("weights/tiny-shakespeare") == (os.path.realpath(SHIPPED), True)
    assert registry.get(inputs.model_key(str(SHIPPED), None)).hidden_size == 512
    assert registry.get(inputs.model_key(str(place / "allowed" / "tiny"), None)).hidden_size == 16
    # owner/name with no allowed folder there is a Hub repo id, whatever is on disk.
    assert registry.resolve("outside/tiny") == ("outside/tiny", False)
    assert registry.resolve("weights/no-such-model") == ("weights/no-such-model", False)
    monkeypatch.setenv("CHARRNN_MODEL", str(place / "outside" / "tiny"))  # the operator's own choice loads too
    assert registry.resolve(str(place / "outside" / "tiny")) == (os.path.realpath(place / "outside" / "tiny"), True)
    assert ROOT / "weights" in registry.allowed()


def test_odd_metadata_is_shown_when_well_formed_and_skipped_otherwise(place):
    folder = place / "allowed" / "tiny"
    config = json.loads((folder / "config.json").read_text())
    registry = ModelRegistry(device="cpu", allowed_dirs=[place / "allowed"])
    odd = {"val_loss": "n/a", "steps_done": True, "hardware": "GPU\n# heading", "data": 5, "notes": [1]}
    (folder / "config.json").write_text(json.dumps({**config, "training": odd}))
    key = inputs.model_key(str(folder), None)
    described = describe_model(key, registry.get(key))
    assert ": GRU 2 × 16, 0.0M parameters. Sampling on **CPU" in described
    good = {"val_loss": 1.25, "steps_done": 300, "hardware": "<img src=x onerror=alert(1)>", "data": "a/b/c.txt"}
    (folder / "config.json").write_text(json.dumps({**config, "training": good}))
    other = inputs.model_key(str(folder), "again")  # another key: a fresh load
    described = describe_model(other, registry.get(other))
    assert ("GRU 2 × 16, 0.0M parameters, validation loss 1.250 nats/char, 300 training steps, data c.txt, "
            r"trained on \<img src=x onerror=alert(1)\>. Sampling") in described


def test_a_vocabulary_is_shown_whole_in_code_whatever_it_holds(tiny):
    shown = describe_model(ModelKey("x"), tiny)
    assert shown.endswith("Vocabulary (65 characters): `↵␣!$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                          "abcdefghijklmnopqrstuvwxyz`")
    ticks = CharRNN("a`bc" + "".join(map(chr, range(1000, 1402))), embedding_dim=2, hidden_size=2, num_layers=1)
    shown = describe_model(ModelKey("x"), ticks)
    assert "Vocabulary (406 characters): `` a`bc" in shown and shown.endswith(" `` and 106 more")


def test_failed_loads_leave_the_registry_as_it_was_and_are_tried_again(place):
    registry = ModelRegistry(size=2, device="cpu", allowed_dirs=[place / "allowed"])
    good = inputs.model_key(str(place / "allowed" / "tiny"), None)
    model = registry.get(good)
    broken = place / "allowed" / "broken"
    make_tiny().save_pretrained(broken)
    (broken / "config.json").write_text(json.dumps({"vocab": "ab", "hidden_size": 60000, "num_layers": 6}))
    before = list(registry.models.items())
    errors = in_threads(lambda _: refusal(registry, str(broken)), [None] * 3)
    assert len(set(errors)) == 1 and "over the limit of 200 MB" in errors[0]
    assert list(registry.models.items()) == before and registry.loading == {}
    (broken / "config.json").write_text((place / "allowed" / "tiny" / "config.json").read_text())
    assert registry.get(inputs.model_key(str(broken), None)).hidden_size == 16  # tried again, not remembered
    assert registry.get(good) is model


def test_the_most_recently_used_models_are_kept(place):
    registry = ModelRegistry(size=2, device="cpu", allowed_dirs=[place / "allowed"])
    keys = [inputs.model_key(str(place / "allowed" / "tiny"), revision) for revision in ("a", "b", "c")]
    first = registry.get(keys[0])
    registry.get(keys[1])
    assert registry.get(keys[0]) is first  # used again: now the most recent
    registry.get(keys[2])
    assert list(registry.models) == [keys[0], keys[2]]
    assert in_threads(registry.get, [keys[1]] * 4).count(registry.models[keys[1]]) == 4  # loaded once, shared


# ---- against the loopback Hub, in a fresh interpreter (HF_ENDPOINT is read when huggingface_hub is imported) ----

CONCURRENT = """
import json, os, sys, threading, time
from pathlib import Path

sys.path.insert(0, {tests!r})
from hub_server import FakeHub, Trickle, is_file

hub = FakeHub().__enter__()
os.environ["HF_ENDPOINT"] = hub.url
from charrnn import ModelLoadError
from charrnn.page import inputs
from charrnn.serving.registry import ModelRegistry

files = {{p.name: p.read_bytes() for p in Path({saved!r}).iterdir() if p.is_file()}}
giant = {{**json.loads(files["config.json"]), "hidden_size": 60000, "num_layers": 6}}
for repo in ("someone/slow", "someone/shared"):
    hub.commit(repo, files)
hub.commit("someone/giant", {{**files, "config.json": json.dumps(giant).encode()}})
gates = {{repo: threading.Event() for repo in ("someone/slow", "someone/shared")}}
for repo, gate in gates.items():
    hub.trickle[(repo, "model.safetensors")] = Trickle(chunk=4096, pause=0.01, gate=gate)


def downloading(repo):
    return sum(n for path, n in hub.downloading.items() if is_file(path, repo, "model.safetensors"))


def wait_until(condition):
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def waiting_on_a_future(thread):
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "result" and "concurrent" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


registry = ModelRegistry(device="cpu")
out = {{}}
loaded_key = inputs.model_key("weights/tiny-shakespeare", None)
shipped = registry.get(loaded_key)

# 1. A slow download for one visitor holds up neither a model already loaded nor a new one built meanwhile.
got = {{}}
slow = threading.Thread(target=lambda: got.setdefault("slow", registry.get(inputs.model_key("someone/slow", None))))
slow.start()
wait_until(lambda: downloading("someone/slow"))
out["loaded_model_returned"] = registry.get(loaded_key) is shipped
out["still_downloading_after_loaded_model"] = bool(downloading("someone/slow")) and slow.is_alive()
out["new_local_model"] = registry.get(inputs.model_key({local!r}, None)).hidden_size
out["still_downloading_after_new_model"] = bool(downloading("someone/slow")) and slow.is_alive()
gates["someone/slow"].set()
slow.join(60)
out["slow_model"] = got["slow"].hidden_size

# 2. Two visitors asking for the same new model share one download.
key = inputs.model_key("someone/shared", None)
shared = [None, None]
visitors = [threading.Thread(target=lambda i=i: shared.__setitem__(i, registry.get(key))) for i in range(2)]
visitors[0].start()
wait_until(lambda: downloading("someone/shared"))
visitors[1].start()
wait_until(lambda: waiting_on_a_future(visitors[1]))
gates["someone/shared"].set()
for visitor in visitors:
    visitor.join(60)
out["shared_is_one_model"] = shared[0] is shared[1] is not None
out["shared_downloads"] = hub.full_gets("someone/shared", "model.safetensors")
out["slow_downloads"] = hub.full_gets("someone/slow", "model.safetensors")

# 3. A failed load leaves the registry as it was.
before = [(k, id(m)) for k, m in registry.models.items()]
try:
    registry.get(inputs.model_key("someone/giant", None))
    out["giant"] = "loaded"
except ModelLoadError as e:
    out["giant"] = str(e)
out["unchanged"] = [(k, id(m)) for k, m in registry.models.items()] == before and registry.loading == {{}}
out["giant_weights_sent"] = hub.sent_to("someone/giant", "model.safetensors")
out["left_in_tmp"] = [p.name for p in Path(os.environ["TMPDIR"]).iterdir()]
hub.__exit__()
print(json.dumps(out))
"""


def test_a_slow_hub_download_holds_up_no_one_and_is_shared(tmp_path):
    make_tiny().save_pretrained(tmp_path / "tiny")
    make_tiny(seed=4).save_pretrained(tmp_path / "allowed" / "local")
    (tmp_path / "tmp").mkdir()
    script = CONCURRENT.format(tests=str(ROOT / "tests"), saved=str(tmp_path / "tiny"),
                               local=str(tmp_path / "allowed" / "local"))
    result = run_python(script, {"CHARRNN_MODEL_DIRS": str(tmp_path / "allowed"), "TMPDIR": str(tmp_path / "tmp"),
                                 "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_DOWNLOAD_TIMEOUT": "30"})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["loaded_model_returned"] and out["still_downloading_after_loaded_model"]
    assert out["new_local_model"] == 16 and out["still_downloading_after_new_model"]
    assert out["slow_model"] == 16
    assert out["shared_is_one_model"] and out["shared_downloads"] == 1 and out["slow_downloads"] == 1
    assert "over the limit of 200 MB" in out["giant"] and out["giant_weights_sent"] == 0 and out["unchanged"]
    # The page downloads into a temporary folder, removed once the model is built; the Hub cache stays empty.
    assert out["left_in_tmp"] == [] and not (tmp_path / "cache").exists()
