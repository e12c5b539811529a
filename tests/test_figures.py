"""Figure builders, checked against the trace they draw (no browser)."""

import json
import re

import pytest
import torch

from charrnn import DecodeSettings
from charrnn import figures
from charrnn.gates import saturation
from charrnn.vocab import visible_char


@pytest.fixture(scope="module")
def trace(shipped):
    return shipped.generate("ROMEO:\nMy lord", DecodeSettings(max_new_chars=120, temperature=0.9, top_k=20,
                                                               top_p=0.8, seed=4))


def test_probability_figure_has_one_slider_step_per_character(trace):
    figure = figures.probability_figure(trace, top_n=12)
    slider = figure.layout.sliders[0]
    assert len(slider.steps) == len(trace.text) == 134
    assert slider.active == trace.prompt_len - 1
    raw, filtered = figure.data[0], figure.data[1]
    t = trace.prompt_len - 1
    assert list(raw.x) == list(slider.steps[t].args[0]["x"][0])
    assert list(raw.y) == slider.steps[t].args[0]["y"][0]


@pytest.mark.parametrize("t", [0, 5, 13, 60, 133])
def test_probability_bars_match_the_trace_at_every_step(trace, t):
    figure = figures.probability_figure(trace, top_n=12)
    data, title = figure.layout.sliders[0].steps[t].args[:2]
    labels, (raw, filtered), (raw_colors, filtered_colors) = data["x"][0], data["y"], data["marker.color"]
    assert len(labels) == 12 and data["x"][1] == labels
    ids = [trace.vocab.index({"␣": " ", "↵": "\n"}.get(c, c)) for c in labels]
    assert raw == pytest.approx(trace.probs[t, ids].tolist(), abs=6e-4)
    assert filtered == pytest.approx(trace.filtered[t, ids].tolist(), abs=6e-4)
    top = trace.probs[t].topk(12).indices.tolist()
    assert ids[:11] == top[:11]
    if t + 1 < len(trace.text):
        taken = trace.vocab.index(trace.text[t + 1])
        assert taken in ids and raw_colors[ids.index(taken)] == 2 and filtered_colors[ids.index(taken)] == 2
        assert visible_char(trace.text[t + 1]) in title["title.text"]
    for i, color in zip(ids, raw_colors):
        if color != 2:
            assert color == (1 if trace.filtered[t, i] == 0 else 0)
    assert "␣" not in "".join(labels) or " " not in "".join(labels)


def test_cut_characters_are_marked(trace):
    figure = figures.probability_figure(trace)
    colors = [c for step in figure.layout.sliders[0].steps for c in step.args[0]["marker.color"][0]]
    assert 1 in colors and 0 in colors and 2 in colors


@pytest.mark.parametrize("kind", ["reset", "update", "hidden"])
def test_gate_heatmap_values_are_the_traces(trace, kind):
    figure = figures.gate_figure(trace, kind, layer=1, order="variance", max_units=40)
    heatmap = figure.data[0]
    values = figures.gate_values(trace, kind)[1]
    units = [int(label.split()[1]) for label in heatmap.y]
    assert len(units) == 40
    variances = values.var(0, unbiased=False)
    assert units == variances.argsort(descending=True)[:40].tolist()
    z = torch.tensor(heatmap.z)
    assert z.shape == (40, len(trace.text))
    assert torch.allclose(z, values[:, units].T)
    assert heatmap.x[0] == "0 R" and heatmap.x[6] == "6 ↵"
    assert (heatmap.zmin, heatmap.zmax) == ((-1, 1) if kind == "hidden" else (0, 1))
    boundary = [s for s in figure.layout.shapes if s.type == "line"]
    assert boundary and boundary[0].x0 == trace.prompt_len - 0.5
    assert "layer 2" in figure.layout.title.text


def test_gate_heatmaps_stay_near_100k_cells_for_long_texts(shipped):
    long = shipped.generate("ROMEO:", DecodeSettings(max_new_chars=2000, temperature=0.8, top_p=0.95, seed=1))
    heatmap = figures.gate_figure(long, "update", layer=0, order="index", max_units=512).data[0]
    z = torch.tensor(heatmap.z)
    assert z.shape[1] == 2006 and z.shape[0] * z.shape[1] <= figures.MAX_CELLS
    assert [int(y.split()[1]) for y in heatmap.y] == list(range(z.shape[0]))
    payload = sum(len(f.to_json()) for f in (
        figures.probability_figure(long), figures.gate_figure(long, "reset", 0),
        figures.gate_figure(long, "update", 0), figures.saturation_figure(long)))
    payload += len(figures.surprisal_html(long)) + len(figures.activation_html(long, "hidden", 0, 0))
    assert payload < 5_000_000


def test_saturation_figure_plots_each_units_fractions(trace):
    figure = figures.saturation_figure(trace)
    left, right = saturation(trace.update_gate)
    update_layer_2 = [d for d in figure.data if d.name == "layer 2" and d.xaxis == "x2"][0]
    assert list(update_layer_2.x) == pytest.approx(left[1].tolist(), abs=1e-4)
    assert list(update_layer_2.y) == pytest.approx(right[1].tolist(), abs=1e-4)
    assert len(update_layer_2.x) == 512


def test_surprisal_view_colours_every_character(trace):
    page = figures.surprisal_html(trace)
    titles = re.findall(r'title="([^"]*)"', page)
    assert len(titles) == len(trace.text)
    p = trace.probs[9, trace.tokens[10]].item()
    assert f"p = {p:.3f}" in titles[10]
    assert page.count("<br>") == trace.text.count("\n")
    assert "↵" in page and "border-bottom" in page


def test_unit_view_and_its_limits(trace):
    page = figures.activation_html(trace, "reset", 2, 7)
    value = trace.reset_gate[2, 3, 7].item()
    assert f"reset = {value:.3f}" in page
    with pytest.raises(ValueError, match="unit must be from 0 to 511"):
        figures.activation_html(trace, "hidden", 0, 512)
    with pytest.raises(ValueError, match="layer must be from 1 to 3"):
        figures.activation_html(trace, "hidden", 3, 0)


def test_html_in_the_text_is_escaped(tiny):
    vocabulary_with_markup = "<>&ab"
    from charrnn import CharRNN

    model = CharRNN(vocabulary_with_markup, 4, 8, 1, 0.0).eval()
    page = figures.surprisal_html(model.trace("<a&b>"))
    assert "<a&b>" not in page and "&lt;" in page and "&amp;" in page


def test_figures_serialise_for_the_browser(trace):
    for figure in (figures.probability_figure(trace), figures.gate_figure(trace, "reset", 0),
                   figures.saturation_figure(trace)):
        parsed = json.loads(figure.to_json())
        assert parsed["data"] and parsed["layout"]["template"]["layout"]["font"]["size"] == 12
