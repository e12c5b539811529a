"""/intervene and /branch over HTTP (gradio_client): what the library gives for the same inputs, clear messages for
bad input, and the ablation values (zero, the unit's mean over the reference text)."""

import pytest
from gradio_client import Client

from charrnn import DecodeSettings
from charrnn.analysis.atlas import atlas_for
from charrnn.decoding.interventions import Intervention
from charrnn.analysis.whatif import branch, intervene

from conftest import SHIPPED

ROMEO = dict(prompt="ROMEO:\n", max_new_chars=150, temperature=0.8, top_k=0, top_p=0.95, seed=3)
GREEDY = dict(ROMEO, max_new_chars=120, temperature=0, top_p=1.0, seed=0)
LINE_POSITION = dict(layer=3, kind="hidden", unit=99, value=0.9, from_step=6)  # from the first generated character


def settings(run: dict) -> DecodeSettings:
    return DecodeSettings(run["max_new_chars"], run["temperature"], run["top_k"], run["top_p"], run["seed"])


def force(client, run=ROMEO, **unit):
    return client.predict(**run, **(LINE_POSITION | unit), api_name="/intervene")


def branch_at(client, run=ROMEO, step=10, char="e"):
    return client.predict(**run, step=step, char=char, api_name="/branch")


def without_change(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "change"}


def test_the_endpoints_have_the_documented_parameters(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    names = {name: [p["parameter_name"] for p in endpoints[name]["parameters"]] for name in ("/intervene", "/branch")}
    run = ["prompt", "max_new_chars", "temperature", "top_k", "top_p", "seed"]
    assert names == {"/intervene": run + ["layer", "kind", "unit", "value", "from_step"],
                     "/branch": run + ["step", "char"]}


def test_intervene_returns_what_the_library_writes_for_the_same_inputs(client, shipped):
    result = force(client, unit=41, layer=1, from_step=3)
    pair = intervene(shipped, ROMEO["prompt"], settings(ROMEO), Intervention(1, "hidden", 41, 0.9, 3))
    assert without_change(result) == pair.summary()
    assert result["with_prompt"] and result["original"].startswith("ROMEO:\n")
    assert result["change"] == {"intervention": dict(layer=1, kind="hidden", unit=41, value=0.9, from_step=3)}


def test_a_greedy_intervention_equals_the_librarys_and_the_line_position_unit_changes_the_first_line(client, shipped):
    result = force(client, run=GREEDY)
    forced = shipped.generate("ROMEO:\n", settings(GREEDY), intervention=Intervention(3, "hidden", 99, 0.9, 6))
    assert result["original"] == shipped.generate("ROMEO:\n", settings(GREEDY)).text
    assert result["changed"] == forced.text
    first = result["first_difference"]["char_index"]
    assert first == result["first_difference"]["step"] + 1
    assert "\n" not in result["original"][7:first]  # the text changes within the first line it writes
    assert result["original"][:first] == result["changed"][:first] != result["changed"][: first + 1]


def test_zero_and_the_mean_over_the_reference_text_are_values_too(client, shipped):
    mean = float(atlas_for(shipped, SHIPPED, build=False).mean[2, 1, 300])  # the update gate of L2 u300
    by_mean = force(client, kind="update", layer=2, unit=300, value="mean", from_step=0)
    assert by_mean["change"]["intervention"]["value"] == pytest.approx(mean)
    expected = intervene(shipped, "ROMEO:\n", settings(ROMEO), Intervention(2, "update", 300, mean, 0)).summary()
    assert without_change(by_mean) == expected
    by_zero = force(client, value="zero")
    assert by_zero["changed"] == shipped.generate(
        "ROMEO:\n", settings(ROMEO), intervention=Intervention(3, "hidden", 99, 0.0, 6)).text


def test_branch_returns_what_the_library_writes_for_the_same_inputs(client, shipped):
    result = branch_at(client, step=10, char="↵")  # the symbol the page shows for a newline
    pair = branch(shipped, "ROMEO:\n", settings(ROMEO), 10, "\n")
    assert without_change(result) == pair.summary()
    assert result["changed"][7 + 10] == "\n" and result["first_difference"]["char_index"] <= 7 + 10
    assert result["change"]["branch"] == {"step": 10, "char": "\n", "replaced": pair.original.text[17]}
    greedy = branch_at(client, run=GREEDY, step=0, char="T")
    forced = ((0, shipped.vocab.index("T")),)
    assert greedy["changed"] == shipped.generate("ROMEO:\n", settings(GREEDY), forced=forced).text


@pytest.mark.parametrize("endpoint,kwargs,message", [
    ("intervene", dict(layer=4), "Layer must be a whole number from 1 to 3, not 4"),
    ("intervene", dict(unit=512), "Unit must be a whole number from 0 to 511, not 512"),
    ("intervene", dict(unit=-1), "Unit must be a whole number from 0 to 511"),
    ("intervene", dict(kind="cell"), "Kind must be one of hidden .*reset .*update .*not 'cell'"),
    ("intervene", dict(kind="update", value=1.5), "update gate z_t must be a number from 0 to 1"),
    ("intervene", dict(kind="reset", value=-0.1), "reset gate r_t must be a number from 0 to 1"),
    ("intervene", dict(value=-2), "hidden state h_t must be a number from -1 to 1"),
    ("intervene", dict(value="lots"), 'Value must be a number from -1 to 1 .*"zero", or "mean"'),
    ("intervene", dict(from_step=157), "From step must be a whole number from 0 to 156"),
    ("intervene", dict(prompt=""), "The prompt is empty"),
    ("intervene", dict(prompt="Señor"), "outside the model's vocabulary: 'ñ'"),
    ("intervene", dict(max_new_chars=2001), "greater than maximum value 2000"),
    ("intervene", dict(top_k=2.5), "Top-k must be a whole number"),
    ("branch", dict(step=150), r"Step \(0 = the first character written\) must be a whole number from 0 to 149"),
    ("branch", dict(char="ab"), "exactly one character"),
    ("branch", dict(char="ñ"), "'ñ' is not in the model's vocabulary"),
    ("branch", dict(seed=-4), "Seed must be a whole number from 0"),
    ("branch", dict(max_new_chars=5000), "greater than maximum value 2000"),
])
def test_bad_input_is_a_clear_error_and_the_next_call_works(client, endpoint, kwargs, message):
    run = ROMEO | {k: v for k, v in kwargs.items() if k in ROMEO}
    change = {k: v for k, v in kwargs.items() if k not in ROMEO}
    with pytest.raises(Exception, match=message):
        if endpoint == "intervene":
            force(client, run=run, **change)
        else:
            branch_at(client, run=run, **change)
    assert force(client, run=GREEDY)["first_difference"]["char_index"] > 7


def test_the_mean_of_a_model_without_an_atlas_is_not_available(app_url, tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("CHARRNN_MODEL_DIRS", str(tmp_path))  # the page loads local folders only from these
    tiny.save_pretrained(tmp_path / "tiny")
    client = Client(app_url, verbose=False)  # a session of its own: loading a model changes the session's model
    try:
        client.predict(source=str(tmp_path / "tiny"), revision="", api_name="/load_model")
        with pytest.raises(Exception, match='"mean" is not available for this model: .*no reference.txt.*"zero"'):
            force(client, layer=1, unit=3, value="mean")
        result = force(client, layer=2, unit=15, value="zero")  # this model's own sizes: 2 layers of 16 units
        assert result["changed"] == tiny.generate("ROMEO:\n", settings(ROMEO),
                                                  intervention=Intervention(2, "hidden", 15, 0.0, 6)).text
        with pytest.raises(Exception, match="Unit must be a whole number from 0 to 15"):
            force(client, layer=1, unit=16)
    finally:
        client.close()
