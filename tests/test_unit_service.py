"""The Units tab's work without a browser: a model folder with a reference text and no atlas gets one built in the
background (in pieces), equal to the library's; what the tab says for a folder with no reference text and for the
bigram."""

import threading
import time

import pytest
import torch

from charrnn.analysis.atlas import REFERENCE_FILE, build_atlas
from charrnn.serving.registry import ModelKey, ModelRegistry
from charrnn.page.units_service import Preparation, UnitService, UnitsUnavailable, display_name

from conftest import ROOT, SHIPPED, make_tiny
from threads import in_threads

TEXT = (SHIPPED / REFERENCE_FILE).read_text(encoding="utf-8")[:3000]


def settled(prepared: Preparation, timeout: float = 300) -> Preparation:
    deadline = time.time() + timeout
    while not prepared.settled and time.time() < deadline:
        time.sleep(0.1)
    assert prepared.settled, prepared.status()
    return prepared


@pytest.fixture
def service(tmp_path):
    return UnitService(ModelRegistry(device="cpu", allowed_dirs=[tmp_path, ROOT / "weights"]))


def test_a_folder_without_an_atlas_gets_one_built_in_the_background(service, tmp_path):
    model = make_tiny(seed=5, hidden_size=12, num_layers=2)
    model.save_pretrained(tmp_path / "tiny")
    (tmp_path / "tiny" / REFERENCE_FILE).write_text(TEXT, encoding="utf-8")
    key = ModelKey(str(tmp_path / "tiny"))
    asked = in_threads(service.preparation, [key] * 4)  # visitors asking at once
    prepared = asked[0]
    assert all(p is prepared for p in asked) and service.preparation(key) is prepared  # one per model
    assert [t.name for t in threading.enumerate()].count(f"charrnn-units-{display_name(key)}") <= 1
    stages = set()
    while not prepared.settled:
        stages.add(prepared.stage)
        time.sleep(0.01)
    assert "building the atlas" in stages or "building the match index" in stages
    assert prepared.stage == "ready" and prepared.problem is None and prepared.index_problem is None
    expected = build_atlas(service.models.get(key), TEXT)
    assert torch.allclose(prepared.atlas.mean, expected.mean, atol=1e-5)
    assert torch.equal(prepared.atlas.top_offsets, expected.top_offsets)
    assert prepared.index.text == TEXT and prepared.index.codes.shape == (2, len(TEXT), 12)
    assert "the unit atlas over its 3,000-character reference text is ready" in prepared.status()
    profile = service.profile(key, 2, "hidden", 3)
    assert profile["top"][0]["offset"] == int(expected.top_offsets[0, 1, 3, 0])
    overview = service.overview(key)
    assert "borne out" in overview["claims"] or "no clear difference" in overview["claims"]
    # every unit explained, as the library explains them
    assert service.unit_map(key) == expected.explanations.rows() and len(service.unit_map(key)) == 3 * 2 * 12
    assert {k: profile[k] for k in ("explanation", "family", "r_fit", "r_heldout", "chance")} == \
        expected.explanations.of(2, "hidden", 3)
    assert overview["unit_map"].layout.meta["charrnn"]["unitmap"] and len(overview["shares"]) == 6
    assert "follow their explanation with |r| ≥ 0.5 on held-out text" in overview["explained"]
    family = service.unit_map(key)[0]["family"]
    found = service.explained_by(key, family)
    assert found["query"] == family and found["units"] == expected.explanations.search(family, top=50)
    with pytest.raises(ValueError, match="say what explains the units"):
        service.explained_by(key, " ")


def test_a_folder_without_a_reference_text_says_what_is_missing(service, tmp_path):
    make_tiny().save_pretrained(tmp_path / "bare")
    key = ModelKey(str(tmp_path / "bare"))
    prepared = settled(service.preparation(key))
    assert prepared.stage == "unavailable" and prepared.atlas is None
    assert "has no reference.txt" in prepared.status()
    with pytest.raises(UnitsUnavailable, match="has no unit atlas: .* has no reference.txt"):
        service.profile(key, 1, "hidden", 0)
    result = service.select_and_match(key, "ROMEO:\nO she is rich", 0, 5, 0.0)
    assert result["matches"] == [] and "no matches can be searched" in result["note"]
    assert service.find(key, "ROMEO:\nO she is rich", "vowel")["units"]  # the visitor's own text needs no atlas
    assert "has no reference.txt" in service.overview(key)["claims"]
    with pytest.raises(UnitsUnavailable, match="has no unit atlas: .* has no reference.txt"):
        service.unit_map(key)
    assert service.overview(key)["shares"] == [] and "has no reference.txt" in service.overview(key)["explained"]


def test_the_bigram_has_nothing_to_look_into(service):
    key = ModelKey(str(ROOT / "weights" / "bigram"))
    prepared = service.preparation(key)
    assert prepared.stage == "unavailable"
    assert prepared.status().startswith("weights/bigram is a bigram: it has no recurrent layers")
    for call in (lambda: service.find(key, "ROMEO:", "vowel"), lambda: service.profile(key, 1, "hidden", 0),
                 lambda: service.memory_gain(key, "ROMEO:"), lambda: service.select_and_match(key, "ROMEO:", 0, 2, 0.3),
                 lambda: service.unit_map(key), lambda: service.explained_by(key, "vowel")):
        with pytest.raises(UnitsUnavailable, match="is a bigram"):
            call()
    assert display_name(key) == "weights/bigram"


def test_while_the_atlas_is_built_the_tab_says_so():
    prepared = Preparation(None, None, "weights/x", problem="never started")
    prepared.problem, prepared.model = None, make_tiny()
    prepared.set_stage("building the atlas", 1500, 6000)
    assert "being built from its 6,000-character reference text (25 %)" in prepared.status()
    assert prepared.status().startswith("⏳")
    assert "try again in a little while" in prepared.why_no_atlas()

