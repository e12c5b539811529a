"""Every unit explained (charrnn.analysis.explain) against direct computation: the candidates from the text by hand;
each unit's r_fit and r_heldout equal numpy's Pearson r of its values, stepped by the GRU equations in float64, with
the chosen candidate over each half, which is the best over the first; the chance level by np.roll; a planted
signal found with r_heldout 1; random values near chance 0; the file round trip; the search and the shares."""

import json

import numpy as np
import pytest
import safetensors.torch
import torch

from charrnn.analysis.atlas import (ATLAS_FILE, PATTERNS_FILE, REFERENCE_FILE, AtlasError, atlas_for, build_atlas,
                                    load_atlas, read_patterns, save_atlas, unit_profile)
from charrnn.analysis.explain import (DISTANCE_CAP, FAMILIES, GOOD, FAIR, Explainer, candidates, hover_label,
                                      shift_offsets)
from charrnn.analysis.signals import SignalError
from charrnn.decoding.unit import KINDS

from conftest import SHIPPED, make_tiny, run_cli
from stepwise import stepwise_values

REFERENCE = (SHIPPED / REFERENCE_FILE).read_text(encoding="utf-8")
TEXT = REFERENCE[:1200]


@pytest.fixture(scope="module")
def tiny_model():
    return make_tiny(seed=2, hidden_size=8, num_layers=2)


@pytest.fixture(scope="module")
def tiny_atlas(tiny_model):
    return build_atlas(tiny_model, TEXT, chunk_size=64)  # the halves meet inside a piece (offset 600)


@pytest.fixture(scope="module")
def expected(tiny_model):
    return stepwise_values(tiny_model, TEXT).numpy()  # [kinds, layers, T, H]


def same(values, expected) -> bool:
    return np.array_equal(values, np.asarray(expected, dtype=np.float32))


def r(x, y):
    return np.corrcoef(x, y)[0, 1]


def test_candidates_are_computed_from_the_text_by_hand():
    library = candidates(TEXT)
    rows = dict(zip(library.labels, library.values))
    half = len(TEXT) // 2
    assert same(rows['character "e"'], [c == "e" for c in TEXT])
    assert same(rows['after "th"'], [TEXT[max(0, i - 2) : i] == "th" for i in range(len(TEXT))])
    assert same(rows['after "e"'], [i > 0 and TEXT[i - 1] == "e" for i in range(len(TEXT))])
    last = [max([j for j in range(i + 1) if TEXT[j] == "\n"], default=None) for i in range(len(TEXT))]
    assert same(rows['distance since "↵"'],
                [DISTANCE_CAP if j is None else min(i - j, DISTANCE_CAP) for i, j in enumerate(last)])
    assert same(rows["punctuation"], [not c.isalnum() and not c.isspace() for c in TEXT])
    assert same(rows["line position"], [i - TEXT.rfind("\n", 0, i) - 1 for i in range(len(TEXT))])
    assert set(library.families) <= set(FAMILIES) and len(library.labels) <= 300
    for values in library.values:  # each varies over both halves, and none repeats another
        assert values[:half].min() < values[:half].max() and values[half:].min() < values[half:].max()
    assert len({v.tobytes() for v in library.values}) == len(library.labels)
    # the shipped reference text's library: bounded, every family but the person's regular expressions
    full = candidates(REFERENCE, ["^[A-Z]+:$"])
    assert 100 <= len(full.labels) <= 300 and set(full.families) == set(FAMILIES)
    assert full.labels[-1] == "/^[A-Z]+:$/" and full.families[-1] == "regex"


def test_r_fit_and_r_heldout_are_the_pearson_r_of_the_stepped_values_over_each_half(tiny_atlas, expected):
    explained, library, half = tiny_atlas.explanations, candidates(TEXT), len(TEXT) // 2
    assert explained.labels == library.labels
    y = library.values.astype(np.float64)
    offsets = shift_offsets(len(TEXT) - half)
    for k in range(3):
        for layer in range(2):
            for u in range(8):
                x = expected[k, layer, :, u]
                chosen = int(explained.index[k, layer, u])
                fits = [abs(r(x[:half], row[:half])) for row in y]
                assert abs(fits[chosen]) >= max(fits) - 1e-5  # the best over the first half
                assert explained.r_fit[k, layer, u].item() == pytest.approx(r(x[:half], y[chosen, :half]), abs=1e-5)
                assert explained.r_heldout[k, layer, u].item() == pytest.approx(r(x[half:], y[chosen, half:]),
                                                                                abs=1e-5)
                # chance: the held-out values shifted circularly (np.roll), against the same candidate
                shifted = np.mean([abs(r(np.roll(x[half:], o), y[chosen, half:])) for o in offsets])
                assert explained.chance[k, layer, u].item() == pytest.approx(shifted, abs=1e-5)
    assert len(set(offsets)) == len(offsets) and all(len(TEXT) // 20 <= o < len(TEXT) // 2 for o in offsets)


def planted_model():
    """A tiny GRU whose layer-1 reset gate 0 is 1 after reading an "e" and 0 after anything else: sigmoid(+-50)."""
    model = make_tiny(seed=4, hidden_size=8, num_layers=2)
    with torch.no_grad():
        model.embedding.weight[:, 0] = 0
        model.embedding.weight[model.vocab.index("e"), 0] = 1
        w_ih, w_hh, b_ih, b_hh = (getattr(model.rnn, f"{name}_l0") for name in
                                  ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        w_ih[0], w_hh[0], b_hh[0] = 0, 0, 0
        w_ih[0, 0], b_ih[0] = 100, -50
    return model


def test_a_planted_signal_is_explained_by_its_candidate_with_r_heldout_1():
    text = REFERENCE[:4000]
    atlas = build_atlas(planted_model(), text, chunk_size=256)
    row = atlas.explanations.of(1, "reset", 0)
    assert row["explanation"] == 'character "e"' and row["family"] == "character"
    assert row["r_fit"] == pytest.approx(1, abs=1e-4) and row["r_heldout"] == pytest.approx(1, abs=1e-4)
    assert row["chance"] < 0.1
    assert atlas.explanations.best(1)[0] == {"layer": 1, "kind": "reset", "unit": 0, **row}
    assert hover_label({"layer": 1, "kind": "reset", "unit": 0, **row}).startswith(
        'L1 reset 0: character "e", r +1.00 held out (fit +1.00, chance 0.')


def test_values_that_copy_a_candidate_or_are_random():
    """Synthetic columns through the Explainer: an affine copy of line position (r 1, with r -1 for its negative);
    random values have a chance level near 0; a constant column has no explanation."""
    text = REFERENCE[:20_000]
    library = candidates(text)
    line = library.values[library.labels.index("line position")].astype(np.float64)
    noise = np.random.default_rng(1).normal(size=len(text))
    columns = torch.tensor(np.stack([0.01 * line - 0.3, -line, noise, np.full(len(text), 0.5)], axis=1),
                           dtype=torch.float32)
    explainer = Explainer(library, len(text))
    for start in range(0, len(text), 700):  # pieces that straddle the halves' boundary
        explainer.add(columns[start : start + 700], start)
    explained = explainer.result((1, 1, 4), ("hidden",))
    rows = [explained.of(1, "hidden", u) for u in range(4)]
    assert [row["explanation"] for row in rows[:2]] == ["line position"] * 2
    assert rows[0]["r_heldout"] == pytest.approx(1, abs=1e-5) and rows[1]["r_heldout"] == pytest.approx(-1, abs=1e-5)
    assert rows[2]["chance"] < 0.03 and abs(rows[2]["r_heldout"]) < 0.05
    assert rows[3] == {"explanation": None, "family": None, "r_fit": None, "r_heldout": None, "chance": None}
    assert explained.shares()[0] == {"layer": 1, "kind": "hidden", "units": 4, "good": 0.5, "good_chance": 0.0,
                                     "fair": 0.5, "fair_chance": 0.0,
                                     "mean_chance": pytest.approx(np.mean([r["chance"] for r in rows[:3]]) * 3 / 4,
                                                                  abs=1e-4)}
    assert "no explanation" in hover_label({"layer": 1, "kind": "hidden", "unit": 3, **rows[3]})


def test_file_round_trip_profile_search_and_shares(tiny_model, tiny_atlas, tmp_path):
    loaded = load_atlas(save_atlas(tiny_atlas, tmp_path / ATLAS_FILE), tiny_model, TEXT)
    explained = loaded.explanations
    for name in ("index", "r_fit", "r_heldout", "chance"):
        assert torch.equal(getattr(explained, name), getattr(tiny_atlas.explanations, name)), name
    assert explained.labels == tiny_atlas.explanations.labels and explained.patterns == []
    profile = unit_profile(loaded, 2, "update", 5)
    assert {key: profile[key] for key in ("explanation", "family", "r_fit", "r_heldout", "chance")} == \
        explained.of(2, "update", 5)
    rows = explained.rows()
    assert len(rows) == 3 * 2 * 8
    assert rows[0] == {"layer": 1, "kind": "hidden", "unit": 0, **explained.of(1, "hidden", 0)}
    assert [(row["layer"], row["kind"]) for row in rows[::8]] == [(l, k) for l in (1, 2) for k in KINDS]
    for share in explained.shares():
        scores = [abs(row["r_heldout"]) for row in rows if (row["layer"], row["kind"]) == (share["layer"],
                                                                                            share["kind"])]
        assert share["good"] == np.mean(np.array(scores) >= GOOD) and share["fair"] == np.mean(np.array(scores) >= FAIR)
    family = next(row["family"] for row in rows)
    found = explained.search(family.upper())
    assert found and all(row["family"] == family for row in found)
    assert [abs(row["r_heldout"]) for row in found] == sorted((abs(row["r_heldout"]) for row in found), reverse=True)
    word = rows[0]["explanation"].split('"')[1] if '"' in rows[0]["explanation"] else rows[0]["explanation"]
    assert any(row["unit"] == 0 and row["layer"] == 1 for row in explained.search(f"'{word}'"))
    assert explained.search("nothing explains like this") == []
    with pytest.raises(ValueError, match="say what explains the units"):
        explained.search("  ")
    with pytest.raises(ValueError, match="at most 60 allowed"):
        explained.search("x" * 61)
    tensors = {name: t for name, t in safetensors.torch.load_file(tmp_path / ATLAS_FILE).items()
               if not name.startswith("explanation_")}
    safetensors.torch.save_file(tensors, tmp_path / "old.safetensors", metadata=loaded.meta)
    with pytest.raises(AtlasError, match="lacks explanation_index, .*rebuild it with"):
        load_atlas(tmp_path / "old.safetensors", tiny_model, TEXT)


def test_saved_regular_expressions_are_candidates(tiny_model, tmp_path):
    (tmp_path / REFERENCE_FILE).write_text(TEXT, encoding="utf-8")
    assert read_patterns(tmp_path) == []
    (tmp_path / PATTERNS_FILE).write_text(json.dumps(["[aeiou]{2}", "^[A-Z]+:$"]), encoding="utf-8")
    atlas = atlas_for(tiny_model, tmp_path)
    assert atlas.explanations.labels[-2:] == ["/[aeiou]{2}/", "/^[A-Z]+:$/"]
    assert atlas.explanations.patterns == ["[aeiou]{2}", "^[A-Z]+:$"] == json.loads(atlas.meta["patterns"])
    save_atlas(atlas, tmp_path / ATLAS_FILE)
    assert atlas_for(tiny_model, tmp_path, build=False).explanations.labels == atlas.explanations.labels
    (tmp_path / PATTERNS_FILE).write_text(json.dumps(["[aeiou]{2}"]), encoding="utf-8")  # one let go
    with pytest.raises(AtlasError, match="built with other saved regular expressions .* rebuild it with"):
        atlas_for(tiny_model, tmp_path, build=False)
    assert atlas_for(tiny_model, tmp_path).explanations.labels[-1] == "/[aeiou]{2}/"  # built again
    for bad, message in (("{", "not a JSON list"), ('"x"', "must hold a JSON list"), ('["("]', "not a valid regular"),
                         (json.dumps(["a"] * 21), "at most 20 allowed"), ("[1]", "list of non-empty strings")):
        (tmp_path / PATTERNS_FILE).write_text(bad, encoding="utf-8")
        with pytest.raises(AtlasError, match=message):
            read_patterns(tmp_path)
    with pytest.raises(SignalError, match="took more than"):
        build_atlas(tiny_model, "a" * 40 + "b", patterns=["(a+)+$"])


def test_cli_saves_a_pattern_and_reports_the_shares(tiny_model, tmp_path):
    folder = tmp_path / "tiny"
    tiny_model.save_pretrained(folder)
    (folder / REFERENCE_FILE).write_text(TEXT, encoding="utf-8")
    done = run_cli("atlas", "--model", str(folder), "--pattern", "[,.;:]", "--quiet", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert json.loads((folder / PATTERNS_FILE).read_text(encoding="utf-8")) == ["[,.;:]"]
    report = json.loads(done.stdout)
    assert set(report["explained"]) == {"r_heldout >= 0.5", "chance >= 0.5", "r_heldout >= 0.3", "chance >= 0.3"}
    assert load_atlas(folder / ATLAS_FILE, tiny_model, TEXT).explanations.labels[-1] == "/[,.;:]/"
    bad = run_cli("atlas", "--model", str(folder), "--pattern", "(", "--quiet", "--device", "cpu")
    assert bad.returncode == 2 and "not a valid regular expression" in bad.stderr
    assert json.loads((folder / PATTERNS_FILE).read_text(encoding="utf-8")) == ["[,.;:]"]  # left as it was
