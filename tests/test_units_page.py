"""The Units tab's endpoints over HTTP (gradio_client against the launched app): /find_units, /unit_profile,
/select_and_match and /memory_gain against the GRU equations stepped by hand in float64, their refusals, the bigram
as a session's model, and everyone's writing going on while a long analysis runs."""

import json
import threading
import time

import numpy as np
import pytest
import torch
from gradio_client import Client

from charrnn.decoding.unit import KINDS
from charrnn.analysis.atlas import MARK_CLOSE, MARK_OPEN, atlas_for
from charrnn.models.bigram import BigramLanguageModel
from charrnn.analysis.explain import plain
from charrnn.page.units_service import EXPLAINED_ROWS, FOUND_ROWS, MAX_GAIN_CHARS

from conftest import ROOT, SHIPPED
from stepwise import START_CHARS, reference_start


@pytest.fixture(scope="module")
def stepped(shipped):
    """The start of the reference text and its [kinds, layers, T, H] values stepped by hand in float64."""
    return reference_start(shipped)


def line_positions(text):
    return np.array([i - (text.rfind("\n", 0, i) + 1) for i in range(len(text))], dtype=float)


def speaker_lines(text):
    """1 on the characters of a line that is a speaker's name (letters and spaces, then a colon), by hand."""
    out = np.zeros(len(text))
    start = 0
    for line in text.split("\n"):
        name = line[:-1]
        if line.endswith(":") and name[:1].isupper() and all(c.isalpha() or c == " " for c in name):
            out[start : start + len(line)] = 1
        start += len(line) + 1
    return out


def series(values, row):
    return values[KINDS.index(row["kind"]), row["layer"] - 1, :, row["unit"]].numpy()


@pytest.mark.parametrize("pattern,signal", [("line position", line_positions), (r"^[A-Z][A-Za-z ]*:$", speaker_lines)])
def test_find_units_ranks_by_the_correlation_with_the_stepped_values(client, stepped, pattern, signal):
    text, values = stepped
    result = client.predict(text=text, pattern=pattern, api_name="/find_units")
    rows = result["units"]
    assert len(rows) == FOUND_ROWS >= 20 and result["chars"] == len(text)
    assert {"layer", "kind", "unit", "r", "timescale"} <= set(rows[0])
    assert [abs(r["r"]) for r in rows] == sorted((abs(r["r"]) for r in rows), reverse=True)
    for row in rows:
        assert row["r"] == pytest.approx(np.corrcoef(series(values, row), signal(text))[0, 1], abs=1e-5)
    # No unit left out of the ranking follows the signal better than the last one listed (checked on the hidden
    # states of the last layer, computed by hand).
    last = values[0, 2].numpy()
    moving = last.std(axis=0) > 0
    best = np.abs([np.corrcoef(last[:, u], signal(text))[0, 1] for u in np.flatnonzero(moving)]).max()
    assert best <= abs(rows[0]["r"]) + 1e-5 and best >= abs(rows[-1]["r"]) - 1e-5


@pytest.mark.parametrize("text,pattern,message", [
    ("", "vowel", "The text is empty"),
    ("Señor", "vowel", "outside the model's vocabulary: 'ñ'.*remove or replace them"),
    ("To be, or not to be", "(", r"'\(' is not a valid regular expression"),
    ("To be, or not to be", "z", "matches nothing of this text"),
    ("To be, or not to be", ".", "matches every character of this text"),
    ("To be, or not to be", "", "The pattern is empty"),
    ("aaaa", "vowel", "is 1 on every character of this text"),
    ("a" * 10_001, "vowel", "The text has 10,001 characters; at most 10,000 here"),
])
def test_find_units_refuses_bad_input_with_a_message(client, text, pattern, message):
    with pytest.raises(Exception, match=message):
        client.predict(text=text, pattern=pattern, api_name="/find_units")


def test_unit_profile_of_a_unit_whose_strongest_context_the_test_steps_to(client, shipped, stepped):
    text, values = stepped
    atlas = atlas_for(shipped, SHIPPED, build=False)
    last = atlas.shape[0]
    k = KINDS.index("hidden")
    unit = next(u for u in range(atlas.shape[1]) if atlas.top_offsets[k, last - 1, u, 0] < START_CHARS)
    profile = client.predict(layer=last, kind="hidden", unit=unit, api_name="/unit_profile")
    assert (profile["layer"], profile["kind"], profile["unit"]) == (last, "hidden", unit)
    assert {"timescale", "mean", "histogram", "top", "bottom", "pushes"} <= set(profile)
    assert len(profile["top"]) >= 10 and len(profile["bottom"]) >= 10
    tops, bottoms = [c["value"] for c in profile["top"]], [c["value"] for c in profile["bottom"]]
    assert tops == sorted(tops, reverse=True) and bottoms == sorted(bottoms)
    best = profile["top"][0]
    assert best["value"] == pytest.approx(float(values[k, last - 1, best["offset"], unit]), abs=1e-5)
    assert best["value"] == pytest.approx(float(values[k, last - 1, :, unit].max()), abs=1e-5)
    reference = atlas.text
    for context in profile["top"] + profile["bottom"]:
        c = reference[context["offset"]]
        assert MARK_OPEN + c + MARK_CLOSE in context["context"]
        assert context["context"].replace(MARK_OPEN, "").replace(MARK_CLOSE, "") in reference
    z = values[KINDS.index("update"), last - 1, :, unit].numpy()
    assert profile["timescale"] == pytest.approx(1 / (1 - float(atlas.mean[KINDS.index("update"), last - 1, unit])))
    assert 1 / (1 - z.mean()) == pytest.approx(profile["timescale"], rel=0.5)  # the start of the text, roughly
    assert sum(profile["histogram"]["counts"]) == len(reference)
    column = shipped.head.weight.detach()[:, unit].double()
    assert profile["pushes"]["up"][0]["weight"] == pytest.approx(float(column.max()))
    assert profile["pushes"]["down"][0]["char"] == shipped.vocab[int(column.argmin())]


@pytest.mark.parametrize("layer,kind,unit,message", [
    (4, "hidden", 0, r"Value: 4 .* is not in the list of choices: \[1, 2, 3\]"),
    (1, "hidden", 512, "Value 512 is greater than maximum value 511"),
    (1, "cell", 0, r"Value: 'cell' .* is not in the list of choices: \['hidden', 'reset', 'update'\]"),
])
def test_unit_profile_refuses_units_that_do_not_exist(client, layer, kind, unit, message):
    with pytest.raises(Exception, match=message):
        client.predict(layer=layer, kind=kind, unit=unit, api_name="/unit_profile")


def test_memory_gain_rows_equal_the_stepped_gru_and_the_bigram_table(client, shipped, stepped):
    text, values = stepped
    text = text[:300]
    result = client.predict(text=text, api_name="/memory_gain")
    rows = result["rows"]
    assert [r["char"] for r in rows] == list(text[1:])
    ids = torch.tensor([shipped.vocab.index(c) for c in text])
    head = shipped.head.weight.detach().double(), shipped.head.bias.detach().double()
    logits = values[0, -1, : len(text) - 1] @ head[0].T + head[1]
    gru = -logits.log_softmax(-1)[torch.arange(len(text) - 1), ids[1:]]
    table = BigramLanguageModel.from_pretrained(ROOT / "weights" / "bigram", device="cpu").token_embedding_table
    bigram = -table.weight.detach().double().log_softmax(-1)[ids[:-1], ids[1:]]
    assert np.abs(np.array([r["gru"] for r in rows]) - gru.numpy()).max() < 1e-4
    assert np.abs(np.array([r["bigram"] for r in rows]) - bigram.numpy()).max() < 1e-9
    assert result["summary"]["gain"] == pytest.approx(float((bigram - gru).mean()), abs=1e-4)


@pytest.mark.parametrize("text,message", [
    ("A", "at least two characters"),
    ("Señor", "outside the model's vocabulary: 'ñ'"),
    ("a" * (MAX_GAIN_CHARS + 1), f"at most {MAX_GAIN_CHARS:,} here"),
])
def test_memory_gain_refuses_bad_input(client, text, message):
    with pytest.raises(Exception, match=message):
        client.predict(text=text, api_name="/memory_gain")


def test_select_and_match_selects_the_units_on_over_the_span_and_finds_the_same_elsewhere(client, stepped):
    text, values = stepped
    hidden, pad, threshold = values[0].numpy(), 3, 0.3
    start = text.index("PETRUCHIO:")
    end = start + len("PETRUCHIO")
    expected = []
    for layer in range(hidden.shape[0]):
        for u in range(hidden.shape[2]):
            inside = hidden[layer, start:end, u].min()
            around = np.concatenate([hidden[layer, start - pad : start, u], hidden[layer, end : end + pad, u]]).max()
            if inside > threshold and around <= threshold:
                expected.append((-min(inside - threshold, threshold - around), layer + 1, u))
    expected.sort()
    deadline = time.time() + 300  # the index of the reference text is built in the background when the app starts
    while True:
        result = client.predict(text=text, start=start, end=end, threshold=threshold, api_name="/select_and_match")
        if result["matches"] or time.time() > deadline:
            break
        assert result["note"].startswith("No matches yet: the index of the reference text for matches is")
        time.sleep(2)
    selection = result["selection"]
    assert selection["selected_text"] == "PETRUCHIO" and selection["selected"] == len(expected) > 0
    assert [(r["layer"], r["unit"]) for r in selection["units"]] == [(layer, u) for _, layer, u in expected[:20]]
    assert len(result["matches"]) == 10
    assert start not in [m["offset"] for m in result["matches"]]  # the selection's own place is left out
    assert "own place in the reference text" in result["note"]
    names = [m["match"] for m in result["matches"]]
    assert sum(name.isupper() for name in names) >= 5, names  # other speakers' names


@pytest.mark.parametrize("start,end,message", [
    (5, 5, r"The selection \[5, 5\) is not a non-empty span of the text's 700 characters"),
    (0, 500, "The selection has 500 characters; select at most 400"),
    (-1, 3, "Value -1 is less than minimum value 0"),
])
def test_select_and_match_refuses_bad_selections(client, start, end, message):
    with pytest.raises(Exception, match=message):
        client.predict(text="ROMEO:\n" * 100, start=start, end=end, threshold=0.3, api_name="/select_and_match")


def test_a_session_with_the_bigram_is_told_what_it_cannot_have(app_url, client):
    bigram = Client(app_url, verbose=False)
    try:
        bigram.predict(source=str(ROOT / "weights" / "bigram"), revision="", api_name="/load_model")
        for args, endpoint in ((dict(text="ROMEO:", pattern="vowel"), "/find_units"),
                               (dict(layer=1, kind="hidden", unit=0), "/unit_profile"),
                               (dict(text="ROMEO:", start=0, end=2, threshold=0.3), "/select_and_match"),
                               (dict(text="ROMEO:"), "/memory_gain"), (dict(), "/unit_map"),
                               (dict(query="vowel"), "/units_explained_by")):
            with pytest.raises(Exception, match="is a bigram: it has no recurrent layers"):
                bigram.predict(**args, api_name=endpoint)
    finally:
        bigram.close()
    assert client.predict(text="ROMEO:\nO, she is rich", pattern="vowel", api_name="/find_units")["units"]


def test_writing_goes_on_while_a_long_find_units_runs(app_url, client):
    """A short /generate asked for after a find_units over the longest text allowed has started finishes first."""
    text = (SHIPPED / "reference.txt").read_text(encoding="utf-8")[:10_000]
    finished = {}

    def find():
        finder = Client(app_url, verbose=False)
        try:
            finished["rows"] = len(finder.predict(text=text, pattern="line position", api_name="/find_units")["units"])
        finally:
            finished["find"] = time.perf_counter()
            finder.close()

    worker = threading.Thread(target=find)
    worker.start()
    time.sleep(1.0)  # the finder's pass is under way (it takes seconds)
    written, _ = client.predict(prompt="ROMEO:", max_new_chars=100, temperature=0.8, top_k=0, top_p=0.95, seed=1,
                                api_name="/generate")
    finished["generate"] = time.perf_counter()
    worker.join()
    assert written.startswith("ROMEO:") and finished["rows"] == FOUND_ROWS
    assert finished["generate"] < finished["find"]


def test_unit_map_and_the_search_give_every_units_explanation(client, shipped):
    atlas = atlas_for(shipped, SHIPPED, build=False)
    rows = client.predict(api_name="/unit_map")
    assert rows == json.loads(json.dumps(atlas.explanations.rows())) and len(rows) == 3 * 3 * 512
    assert all(set(row) == {"layer", "kind", "unit", "explanation", "family", "r_fit", "r_heldout", "chance"}
               for row in rows)
    profile = client.predict(layer=3, kind="hidden", unit=99, api_name="/unit_profile")
    assert {k: profile[k] for k in ("explanation", "family", "r_fit", "r_heldout", "chance")} == \
        atlas.explanations.of(3, "hidden", 99)
    found = client.predict(query="  Vowel ", api_name="/units_explained_by")
    assert found["model"] == "weights/tiny-shakespeare" and 0 < len(found["units"]) <= EXPLAINED_ROWS
    scores = [abs(row["r_heldout"]) for row in found["units"]]
    assert scores == sorted(scores, reverse=True) and all(row["explanation"] == "vowel" for row in found["units"])
    line = client.predict(query="line", api_name="/units_explained_by")["units"]
    assert line and all("line" in plain(row["explanation"]) for row in line)  # "↵" is a newline
    after = client.predict(query="after e", api_name="/units_explained_by")["units"]
    assert all(row["explanation"].replace('"', "").startswith("after e") for row in after)
    for query, message in (("", "Say what explains the units"), ("x" * 61, "at most 60 allowed")):
        with pytest.raises(Exception, match=message):
            client.predict(query=query, api_name="/units_explained_by")
