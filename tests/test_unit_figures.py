"""The unit figures and HTML carry exactly the numbers of the analyses they draw."""

import json

import numpy as np
import pytest

from charrnn.analysis.atlas import REFERENCE_FILE, build_atlas, unit_profile
from charrnn.analysis.contexts import gates_by_context_of
from charrnn.analysis.matching import build_match_index, match, select_units
from charrnn.figures.units import claims_html, context_html, contexts_html, found_units_figure, gate_context_figure, histogram_figure, matches_html, pushes_figure, timescale_figure
from charrnn.analysis.units import find_units
from charrnn.analysis.explain import FAMILIES, hover_label
from charrnn.figures.units import (FAMILY_COLORS, SHARES_HEADERS, shares_rows, shares_summary, unit_map_figure,
                                   unit_map_labels)

from conftest import SHIPPED, make_tiny

TEXT = (SHIPPED / REFERENCE_FILE).read_text(encoding="utf-8")[:800]


@pytest.fixture(scope="module")
def model():
    return make_tiny(hidden_size=8, num_layers=2)


@pytest.fixture(scope="module")
def atlas(model):
    return build_atlas(model, TEXT)


def test_contexts_html_marks_and_colours_every_character(model, atlas):
    profile = unit_profile(atlas, 2, "hidden", 1, model=model)
    page = contexts_html(profile)
    assert page.count("outline:2px solid") == len(profile["top"]) + len(profile["bottom"])
    entry = profile["top"][0]
    line = context_html(entry, "hidden")
    assert line.count("<span style=") == 1 + len(entry["before"]) + 1 + len(entry["after"])  # the value, the chars
    assert f"{entry['value']:+.3f}" in line
    shown = "".join(e["before"] + e["char"] + e["after"] for e in profile["top"] + profile["bottom"])
    assert "\n" not in page and page.count(">↵</span>") == shown.count("\n")  # one line per context, newlines shown
    assert "<script" not in page


def test_histogram_and_pushes_figures(model, atlas):
    profile = unit_profile(atlas, 2, "hidden", 1, model=model)
    figure = json.loads(histogram_figure(profile).to_json())
    assert figure["data"][0]["y"] == profile["histogram"]["counts"]
    pushes = json.loads(pushes_figure(profile).to_json())["data"][0]
    weights = [p["weight"] for p in profile["pushes"]["up"] + profile["pushes"]["down"][::-1]]
    assert pushes["x"] == pytest.approx(weights)
    with pytest.raises(ValueError, match="last-layer hidden unit"):
        pushes_figure(unit_profile(atlas, 1, "reset", 1))


def test_found_units_figure(model):
    result = find_units(model, TEXT, "line position")
    bars = json.loads(found_units_figure(result).to_json())["data"][0]
    assert bars["x"] == pytest.approx([r["r"] for r in result["units"]])
    assert bars["y"][0] == f"L{result['units'][0]['layer']} {result['units'][0]['kind']} {result['units'][0]['unit']}"


def test_timescale_figure_counts_every_unit(atlas):
    figure = json.loads(timescale_figure(atlas.timescale).to_json())
    assert len(figure["data"]) == 2
    for layer, trace in enumerate(figure["data"]):
        assert np.array(trace["x"]) == pytest.approx(np.log10(atlas.timescale[layer]), abs=1e-4)
        assert trace["name"].startswith(f"layer {layer + 1} (median τ")


def test_gate_context_figure_and_claims_table(atlas):
    result = gates_by_context_of(atlas)
    figure = json.loads(gate_context_figure(result).to_json())
    contexts = {row["context"]: row for row in result["contexts"]}
    first = result["claims"][0]
    box = next(t for t in figure["data"] if t["name"] == first["context"])
    assert box["median"] == pytest.approx([s["quantiles"][2] for s in contexts[first["context"]][first["gate"]]])
    table = claims_html(result)
    assert table.count("<tr>") == len(result["claims"]) + 1
    for claim in result["claims"]:
        for row in claim["layers"]:
            assert row["verdict"] in table


def test_matches_html(model):
    selection = select_units(model, TEXT, 100, 104, threshold=0.0, pad=1)
    if not selection["units"]:
        selection = select_units(model, TEXT, 100, 104, threshold=-0.5, pad=0)
    result = match(build_match_index(model, TEXT), selection, top=3)
    page = matches_html(result)
    assert page.count("outline:2px solid") == len(result["matches"])  # one around each match
    for m in result["matches"]:
        assert len(m["before"] + m["match"] + m["after"]) == len(m["on_fraction"])
    assert f"{result['matches'][0]['score']:.2f}" in page


def test_unit_map_colours_each_unit_by_family_and_shades_it_by_its_held_out_score(atlas):
    rows = atlas.explanations.rows()
    figure = unit_map_figure(rows, atlas.kinds)
    heatmap = figure.data[0]
    assert list(heatmap.y) == [f"L{layer} {kind}" for layer in (1, 2) for kind in atlas.kinds]
    assert "unitmap" in figure.layout.meta["charrnn"]  # page.js writes the hover labels and opens a clicked unit
    labels = unit_map_labels(figure)
    z = np.asarray(heatmap.z)
    for row in rows:
        y = (row["layer"] - 1) * len(atlas.kinds) + atlas.kinds.index(row["kind"])
        assert labels[y][row["unit"]] == hover_label(row)
        assert labels[y][row["unit"]].startswith(f"L{row['layer']} {row['kind']} {row['unit']}: ")
        assert int(z[y, row["unit"]]) == FAMILIES.index(row["family"])
        assert z[y, row["unit"]] % 1 == pytest.approx(abs(row["r_heldout"]), abs=1e-3)
    scale = heatmap.colorscale
    assert len(scale) == 2 * len(FAMILIES) and heatmap.zmin == 0 and heatmap.zmax == len(FAMILIES)
    assert [c for _, c in scale[1::2]] == [FAMILY_COLORS[f] for f in FAMILIES]  # full colour at |r| 1
    legend = [trace.name for trace in figure.data[1:]]
    counts = {f: sum(r["family"] == f for r in rows) for f in FAMILIES}
    assert legend == [f"{f} ({counts[f]:,})" for f in FAMILIES if counts[f]]
    assert len(figure.to_json()) < 20_000 + 30 * len(rows)  # compact: no text per unit
    none = dict(rows[0], explanation=None, family=None, r_fit=None, r_heldout=None, chance=None)
    assert unit_map_labels(unit_map_figure([none, *rows[1:]], atlas.kinds))[0][0] == hover_label(none)


def test_shares_rows_and_summary(atlas):
    shares = atlas.explanations.shares()
    rows = shares_rows(shares)
    assert len(rows) == 2 * 3 and len(rows[0]) == len(SHARES_HEADERS)
    assert rows[0][:3] == [1, "hidden", 8] and rows[0][3] == f"{100 * shares[0]['good']:.0f} %"
    summary = shares_summary(atlas.explanations.overall(), "weights/x")
    assert summary.startswith("Of weights/x's units, **") and "by chance" in summary
