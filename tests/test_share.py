"""Sharing a run: links built from a recipe and read back, and exports checked against the GRU equations stepped
one character at a time in float64 (tests/stepwise.py), in the library and over HTTP."""

import csv
import io
import json
import math
from urllib.parse import parse_qsl

import numpy as np
import pytest
import torch
from gradio_client import Client

from charrnn import DecodeSettings, ModelLoadError, __version__
from charrnn.page import inputs
from charrnn.page import share
from charrnn.decoding.interventions import Intervention
from charrnn.serving.registry import ModelKey, ModelRegistry
from charrnn.serving.runs import Recipe

from conftest import SHIPPED, make_tiny
from stepwise import stepwise_values

DEFAULT = ModelKey(str(SHIPPED))
DEFAULTS = {"prompt": "ROMEO:\n", "chars": 300, "temperature": 0.8, "top_k": 0, "top_p": 0.95, "seed": 1}


def query_of(link: str) -> dict:
    assert link.startswith("?")
    return dict(parse_qsl(link[1:], keep_blank_values=True))


def loader(models: dict):
    def load(key):
        if key not in models:
            raise ModelLoadError(f"{key.source} is not a model this page can load")
        return models[key]
    return load


# ---- links ----


def test_a_link_holds_the_prompt_and_settings_and_the_model_when_not_the_default():
    recipe = Recipe(DEFAULT, "ROMEO:\nWhat, ho! & 100%?", DecodeSettings(250, 0.8, 5, 0.95, 42))
    link = share.link_query(recipe, DEFAULT)
    assert link == ("?prompt=ROMEO:%0AWhat%2C%20ho%21%20%26%20100%25%3F&chars=250&temperature=0.8&top_k=5"
                    "&top_p=0.95&seed=42")
    assert query_of(link) == {"prompt": recipe.prompt, "chars": "250", "temperature": "0.8", "top_k": "5",
                              "top_p": "0.95", "seed": "42"}
    other = Recipe(ModelKey("owner/model", "v1"), "To be", DecodeSettings(10, 1.0, 0, 1.0, 0))
    assert query_of(share.link_query(other, DEFAULT)) == {
        "prompt": "To be", "chars": "10", "temperature": "1", "top_k": "0", "top_p": "1", "seed": "0",
        "model": "owner/model", "revision": "v1"}
    assert "owner/model" in share.link_query(other, DEFAULT)  # the slash left readable
    with pytest.raises(share.ShareError, match="prompt and settings only"):
        share.link_query(Recipe(DEFAULT, "To be", DecodeSettings(10), Intervention(1, "hidden", 0, 0.5)), DEFAULT)


@pytest.mark.parametrize("settings", [DecodeSettings(250, 0.8, 5, 0.95, 42), DecodeSettings(1, 0.0, 65, 0.01, 0),
                                      DecodeSettings(2000, 1.95, 0, 1.0, 2**63 - 1)])
def test_a_link_read_back_gives_the_same_run(shipped, settings):
    recipe = Recipe(DEFAULT, "KING RICHARD III:\nNow is the winter", settings)
    link = share.read_link(query_of(share.link_query(recipe, DEFAULT)), DEFAULTS, DEFAULT, loader({DEFAULT: shipped}))
    assert link.warnings == [] and link.model_key == DEFAULT and link.model is shipped
    assert inputs.check_inputs(shipped, *link.settings) == settings
    assert link.values["prompt"] == recipe.prompt


def test_a_link_with_some_values_takes_the_defaults_for_the_rest(shipped):
    link = share.read_link({"seed": "7", "chars": "50"}, DEFAULTS, DEFAULT, loader({DEFAULT: shipped}))
    assert link.warnings == [] and link.settings == ["ROMEO:\n", 50, 0.8, 0, 0.95, 7]
    assert share.is_link({"seed": "7"}) and not share.is_link({"__theme": "dark"}) and not share.is_link({})


@pytest.mark.parametrize("query,name,message", [
    ({"temperature": "hot"}, "temperature", "temperature must be a number from 0 to 2, not 'hot'"),
    ({"temperature": "2.5"}, "temperature", "from 0 to 2"),
    ({"temperature": "nan"}, "temperature", "must be a number"),
    ({"chars": "2001"}, "chars", "from 1 to 2,000"),
    ({"chars": "12.5"}, "chars", "must be a whole number"),
    ({"top_k": "66"}, "top_k", "from 0 to 65"),
    ({"top_p": "0"}, "top_p", "from 0.01 to 1"),
    ({"seed": "-3"}, "seed", "whole number from 0"),
    ({"prompt": "Señor"}, "prompt", "'ñ'"),
    ({"prompt": ""}, "prompt", "The prompt is empty"),
    ({"prompt": "a" * 2001}, "prompt", "up to 2,000 characters"),
])
def test_bad_values_fall_back_to_the_defaults_with_a_warning(shipped, query, name, message):
    link = share.read_link({**query, "seed": query.get("seed", "5")}, DEFAULTS, DEFAULT, loader({DEFAULT: shipped}))
    assert len(link.warnings) == 1 and f"The link's {name} cannot be used" in link.warnings[0]
    assert message in link.warnings[0]
    assert link.values[name] == DEFAULTS[name]
    assert link.values["seed"] == (5 if name != "seed" else 1)  # the good values are kept


def test_a_links_model_goes_through_the_page_loader_and_a_refused_one_falls_back(shipped, tmp_path):
    tiny = make_tiny()
    tiny_key = ModelKey("owner/tiny", "main")
    models = {DEFAULT: shipped, tiny_key: tiny}
    link = share.read_link({"model": "owner/tiny", "revision": "main", "top_k": "20"}, DEFAULTS, DEFAULT,
                           loader(models))
    assert link.warnings == [] and link.model_key == tiny_key and link.model is tiny
    link = share.read_link({"model": "/etc", "prompt": "ROMEO"}, DEFAULTS, DEFAULT, loader(models))
    assert link.model_key == DEFAULT and link.model is shipped and link.values["prompt"] == "ROMEO"
    assert len(link.warnings) == 1 and "/etc is not a model this page can load" in link.warnings[0]
    link = share.read_link({"model": "x" * 600}, DEFAULTS, DEFAULT, loader(models))
    assert link.model_key == DEFAULT and "up to 500 characters" in link.warnings[0]
    # the real registry refuses folders outside the page's own, as the Load button does
    registry = ModelRegistry(device="cpu", allowed_dirs=[SHIPPED.parent])
    link = share.read_link({"model": str(tmp_path)}, DEFAULTS, DEFAULT, registry.get)
    assert link.model_key == DEFAULT and "not a model folder this page can load" in link.warnings[0]


# ---- export ----


def expected_arrays(model, text: str) -> dict:
    """hidden, reset, update [layers, T, H] and probs [T, vocab] stepped by hand in float64."""
    values = stepwise_values(model, text)
    head_w, head_b = model.head.weight.detach().double(), model.head.bias.detach().double()
    probs = torch.softmax(values[0, -1] @ head_w.T + head_b, dim=-1)
    return {"hidden": values[0], "reset": values[1], "update": values[2], "probs": probs}


@pytest.mark.parametrize("which", ["shipped", "tiny"])
def test_an_export_holds_the_runs_values_and_settings(shipped, tmp_path, which):
    model = shipped if which == "shipped" else make_tiny(hidden_size=24, num_layers=3)
    key = DEFAULT if which == "shipped" else ModelKey("weights/tiny", "abc")
    settings = DecodeSettings(250, 0.9, 20, 0.9, 11)
    trace = model.generate("JULIET:\n", settings)
    path = share.export_run(trace, key, tmp_path / "run.npz")
    with np.load(path, allow_pickle=False) as data:  # no pickles: plain arrays and one string
        assert set(data.files) == {"meta", "hidden", "reset", "update", "probs"}
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    expected = expected_arrays(model, meta["text"])
    steps = len(trace.text)
    for name in ("hidden", "reset", "update"):
        assert arrays[name].dtype == np.float16 and arrays[name].shape == (model.num_layers, steps, model.hidden_size)
    assert arrays["probs"].shape == (steps, len(model.vocab))
    for name, values in expected.items():
        assert np.abs(arrays[name].astype(np.float64) - values.numpy()).max() <= 1e-3, name
    assert meta["text"] == trace.text and meta["prompt"] == "JULIET:\n" and meta["prompt_len"] == 8
    assert meta["settings"] == {"max_new_chars": 250, "temperature": 0.9, "top_k": 20, "top_p": 0.9, "seed": 11}
    assert DecodeSettings(**meta["settings"]) == settings
    assert meta["model"] == {"source": key.source, "revision": key.revision, "vocab": model.vocab,
                             "layers": model.num_layers, "hidden_size": model.hidden_size}
    assert meta["charrnn_version"] == __version__ and meta["format"] == "charrnn-run"
    assert share.read_run(path)["meta"] == meta
    # the settings read back write the same text again
    assert model.generate(meta["prompt"], DecodeSettings(**meta["settings"])).text == meta["text"]


def test_the_step_table(shipped):
    trace = shipped.generate("ROMEO:\n", DecodeSettings(40, 0.8, 0, 0.95, 3))
    rows = list(csv.DictReader(io.StringIO(share.step_table_csv(trace))))
    assert len(rows) == len(trace.text)
    assert rows[0]["character"] == "R" and rows[0]["probability"] == "" and rows[6]["character"] == "↵"
    assert rows[6]["in_prompt"] == "True" and rows[7]["in_prompt"] == "False"
    for t in (1, 7, 30):
        p = trace.probs[t - 1, trace.tokens[t]].item()
        assert float(rows[t]["probability"]) == pytest.approx(p, abs=1e-6)
        assert float(rows[t]["surprisal_nats"]) == pytest.approx(-math.log(p), abs=1e-4)
        top = trace.probs[t - 1].topk(5)
        assert [rows[t][f"top_{k}"] for k in range(1, 6)] == [
            {" ": "␣", "\n": "↵"}.get(trace.vocab[i], trace.vocab[i]) for i in top.indices.tolist()]
        assert float(rows[t]["p_1"]) == pytest.approx(top.values[0].item(), abs=1e-6)


def test_the_export_folder_keeps_a_few_recent_exports(shipped):
    folder = share.ExportFolder(max_kept=3, max_age_s=3600)
    trace = shipped.generate("ROMEO:\n", DecodeSettings(20, 0.8, 0, 0.95, 3))
    made = [folder.export(trace, DEFAULT) for _ in range(5)]
    assert all(npz.suffix == ".npz" and table.suffix == ".csv" for npz, table in made)
    assert made[-1][0].name == "charrnn-run-20chars-seed3.npz"
    kept = [npz.exists() for npz, _ in made]
    assert kept == [False, False, True, True, True]
    folder.max_age_s = 0
    folder.new()
    assert not any(npz.exists() for npz, _ in made)


# ---- over HTTP ----


def test_export_over_http_is_the_same_run_as_generate(app_url, shipped):
    client = Client(app_url, verbose=False)
    try:
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/export"]["parameters"]
        assert [p["parameter_name"] for p in api] == ["prompt", "max_new_chars", "temperature", "top_k", "top_p",
                                                      "seed"]
        settings = dict(prompt="KING:\n", max_new_chars=120, temperature=0.7, top_k=10, top_p=0.9, seed=8)
        text, _ = client.predict(**settings, api_name="/generate")
        path = client.predict(**settings, api_name="/export")
        run = share.read_run(path)
        assert run["meta"]["text"] == text
        assert run["meta"]["settings"] == {"max_new_chars": 120, "temperature": 0.7, "top_k": 10, "top_p": 0.9,
                                           "seed": 8}
        expected = expected_arrays(shipped, text)
        for name, values in expected.items():
            assert np.abs(run[name].astype(np.float64) - values.numpy()).max() <= 1e-3, name
        with pytest.raises(Exception, match="outside the model's vocabulary"):
            client.predict(**{**settings, "prompt": "Señor"}, api_name="/export")
    finally:
        client.close()
