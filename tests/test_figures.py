"""Figure builders, checked against the trace they draw (no browser)."""

import json
import re

import numpy as np
import pytest

from charrnn import DecodeSettings
from charrnn.figures import run as figures
from charrnn.page import views as pg
from charrnn.page import inputs
from charrnn.decoding.trace import saturation
from charrnn.analysis.units import format_timescale, order_units
from charrnn.vocab import visible_char

SHOWN = {"␣": " ", "↵": "\n"}


@pytest.fixture(scope="module")
def trace(shipped):
    return shipped.generate("ROMEO:\nMy lord", DecodeSettings(max_new_chars=120, temperature=0.9, top_k=20,
                                                               top_p=0.8, seed=4))


@pytest.fixture(scope="module")
def long(shipped):
    return shipped.generate("ROMEO:", DecodeSettings(max_new_chars=2000, temperature=0.8, top_p=0.95, seed=1))


def bars_of(figure):
    """Every step's bars as the page's script reads them: {name: [T, top_n] numpy array}."""
    meta = figure.layout.meta["charrnn"]["bars"]
    return {name: figures.from_typed_array(meta[name]) for name in ("chars", "raw", "filtered")}


def test_probability_figure_carries_every_steps_bars_compactly(trace):
    figure = figures.probability_figure(trace, top_n=12)
    meta = figure.layout.meta["charrnn"]
    bars = bars_of(figure)
    assert all(values.shape == (len(trace.text), 12) for values in bars.values()) and len(trace.text) == 134
    assert bars["chars"].dtype == np.uint8 and bars["raw"].dtype == np.uint16
    assert meta["bars"]["active"] == trace.prompt_len - 1 and not figure.layout.sliders
    tokens = figures.from_typed_array(meta["text"]["tokens"])
    assert "".join(SHOWN.get(meta["text"]["vocab"][i], meta["text"]["vocab"][i]) for i in tokens) == trace.text
    t = trace.prompt_len - 1  # the bars drawn first are that step's
    raw, filtered = figure.data[0], figure.data[1]
    assert list(raw.x) == [visible_char(trace.vocab[i]) for i in bars["chars"][t]] == list(filtered.x)
    assert figure.layout.title.text == figures.context(trace, t)


@pytest.mark.parametrize("t", [0, 5, 13, 60, 133])
def test_probability_bars_match_the_trace_at_every_step(trace, t):
    bars = bars_of(figures.probability_figure(trace, top_n=12))
    ids = bars["chars"][t].tolist()
    assert figures.dequantise(bars["raw"][t]) == pytest.approx(trace.probs[t, ids].tolist(), abs=1e-5)
    assert figures.dequantise(bars["filtered"][t]) == pytest.approx(trace.filtered[t, ids].tolist(), abs=1e-5)
    assert ids[:11] == trace.probs[t].topk(12).indices.tolist()[:11]
    shown = figures.bar_data(trace, bars, t)
    labels, (raw_colors, filtered_colors) = shown["x"][0], shown["marker.color"]
    assert [trace.vocab.index(SHOWN.get(c, c)) for c in labels] == ids
    if t + 1 < len(trace.text):
        taken = trace.vocab.index(trace.text[t + 1])
        assert taken in ids and raw_colors[ids.index(taken)] == 2 and filtered_colors[ids.index(taken)] == 2
        assert visible_char(trace.text[t + 1]) in figures.context(trace, t)
    for i, color in zip(ids, raw_colors):
        if color != 2:
            assert color == (1 if trace.filtered[t, i] == 0 else 0)


def test_cut_characters_are_marked(trace):
    figure = figures.probability_figure(trace)
    bars = bars_of(figure)
    colors = [c for t in range(len(trace.text)) for c in figures.bar_data(trace, bars, t)["marker.color"][0]]
    assert 1 in colors and 0 in colors and 2 in colors


def test_quantised_values_round_trip():
    values = np.linspace(-1, 1, 1001)
    codes = figures.quantise(values, -1, 1)
    assert codes.dtype == np.uint16 and codes.min() == 0 and codes.max() == figures.QUANTUM
    assert np.abs(figures.dequantise(codes, -1, 1) - values).max() <= 1 / figures.QUANTUM
    spec = figures.typed_array(codes.reshape(7, -1)[:, :100])
    assert spec["dtype"] == "u2" and spec["shape"] == "7, 100"
    assert (figures.from_typed_array(spec) == codes.reshape(7, -1)[:, :100]).all()


@pytest.mark.parametrize("kind", ["reset", "update", "hidden"])
def test_gate_heatmap_values_are_the_traces(trace, kind):
    figure = figures.gate_figure(trace, kind, layer=2, order="variance", max_units=40)
    heatmap = figure.data[0]
    values = figures.gate_values(trace, kind)[1]
    units = [int(re.search(r" (\d+)", label).group(1)) for label in heatmap.y]
    assert len(units) == 40 and all(label.startswith(f"L2 {kind} ") for label in heatmap.y)
    # The rows are the layer's most variable hidden states, the same rows in every kind's heatmap.
    assert units == trace.hidden[1].var(0, unbiased=False).argsort(descending=True, stable=True)[:40].tolist()
    shown = figures.heatmap_values(figure)
    assert shown.shape == (40, len(trace.text))
    assert np.abs(shown - values[:, units].T.double().numpy()).max() <= 1.01 / figures.QUANTUM
    assert heatmap.x[0] == "0 R" and heatmap.x[6] == "6 ↵"
    assert (heatmap.zmin, heatmap.zmax) == ((-1, 1) if kind == "hidden" else (0, 1))
    boundary = [s for s in figure.layout.shapes if s.type == "line"]
    assert boundary and boundary[0].x0 == trace.prompt_len - 0.5
    assert "layer 2" in figure.layout.title.text and figure.layout.height
    assert figure.layout.meta["charrnn"]["heatmap"] == {"kind": kind, "layer": 2, "low": -1.0 if kind == "hidden"
                                                        else 0.0, "high": 1.0, "quantum": figures.QUANTUM}


def test_heatmap_rows_grouped_by_signal_labelled_with_timescales_and_pinned_on_top(trace):
    timescale = np.linspace(1, 50, 512)
    values = trace.hidden[2]
    expected = order_units(trace.text, values)
    figure = figures.gate_figure(trace, "reset", layer=3, order="signal", max_units=30, pinned=(99, 337, 99),
                                 timescale=timescale)
    labels = list(figure.data[0].y)
    assert labels[:2] == ["★ L3 reset 99 (τ 10)", "★ L3 reset 337 (τ 33)"]
    rest = [u for u in expected["units"] if u not in (99, 337)][:28]
    assert labels[2:] == [f"L3 reset {u} (τ {format_timescale(timescale[u])})" for u in rest]
    lines = [s.y0 for s in figure.layout.shapes if s.type == "line" and s.y0 == s.y1]
    assert lines[0] == 1.5  # under the pinned rows
    # a line above each group of units following the same built-in signal, named where there is room
    notes = dict(zip(expected["units"], expected["signal"]))
    groups = figures.signal_groups([""] * 2 + [notes[u] for u in rest])
    assert groups and groups[0][0] == 2 and lines[1:] == [row - 0.5 for row, _ in groups[1:]]
    named = [(a.y + 0.5, a.text) for a in figure.layout.annotations if a.xref == "paper" and a.x == 1.0]
    ends = [row for row, _ in groups[1:]] + [30]
    assert named == [(row, name) for (row, name), end in zip(groups, ends) if (end - row) * 14 >= 14]
    first_row, name = groups[0]
    assert notes[rest[first_row - 2]].startswith(name.rsplit(" (", 1)[0])
    # the update heatmap shows the same rows
    update = figures.gate_figure(trace, "update", layer=3, order="signal", max_units=30, pinned=(99, 337),
                                 timescale=timescale)
    assert [label.replace(" update ", " reset ") for label in update.data[0].y] == labels
    with pytest.raises(ValueError, match="pinned units must be from 0 to 511"):
        figures.gate_figure(trace, "reset", 1, pinned=(512,))


def test_signal_groups_name_runs_of_rows():
    notes = ["", "line position +0.9", "line position +0.5", "line position -0.4", "vowel +0.6", "", ""]
    assert figures.signal_groups(notes) == [(1, "line position (+)"), (3, "line position (−)"), (4, "vowel (+)")]


def test_step_ticks_do_not_overlap(trace, long):
    # a short run: every character under its column
    values, text = figures.step_ticks(trace.text[:60], 0, 60, 1)
    assert values == list(range(60)) and text == [visible_char(c) for c in trace.text[:60]]
    # longer: round step numbers, at most one label per 50 px of the plot, at the columns holding those steps
    for start, stop, per in (figures.step_columns(134), figures.step_columns(2006), figures.step_columns(2006, 500)):
        values, text = figures.step_ticks(long.text, start, stop, per)
        steps = [int(t.replace(",", "")) for t in text]
        columns = -(-(stop - start) // per)
        assert len(values) <= figures.PLOT_WIDTH_PX / 50 + 1 and len(set(np.diff(steps))) <= 1
        assert all(start <= s < stop and v == (s - start) // per and 0 <= v < columns for s, v in zip(steps, values))
    figure = figures.gate_figure(long, "reset", 1)
    assert len(figure.layout.xaxis.tickvals) <= 21
    assert set(figure.layout.xaxis.tickvals) <= set(figure.data[0].x)


def test_long_runs_are_averaged_per_column_and_windows_show_every_step(long):
    steps = len(long.text)
    start, stop, per = figures.step_columns(steps)
    assert (start, stop, per) == (0, 2006, 5)
    figure = figures.gate_figure(long, "update", layer=1, order="index", max_units=512)
    z = figures.heatmap_values(figure)
    assert z.shape[1] == 402 and z.shape[0] * z.shape[1] <= figures.MAX_CELLS
    assert [int(re.search(r" (\d+)", y).group(1)) for y in figure.data[0].y] == list(range(z.shape[0]))
    update = long.update_gate[0].double().numpy()
    assert np.abs(z[:, 0] - update[0:5, : z.shape[0]].mean(0)).max() <= 1e-4
    assert np.abs(z[:, -1] - update[2005:2006, : z.shape[0]].mean(0)).max() <= 1e-4  # the last column: one step
    assert figure.data[0].x[1] == "5–9 " + "".join(visible_char(c) for c in long.text[5:10])
    # a window: MAX_COLUMNS steps from its start, one per column
    window = figures.gate_figure(long, "update", layer=1, order="index", max_units=64, window=1500)
    z = figures.heatmap_values(window)
    assert z.shape == (64, 500) and window.data[0].x[0] == f"1500 {visible_char(long.text[1500])}"
    assert "steps 1,500–1,999" in window.layout.title.text
    assert np.abs(z - update[1500:2000, :64].T).max() <= 1.01 / figures.QUANTUM
    assert [w for _, w in figures.windows(steps)] == [None, 0, 500, 1000, 1500, 2000]
    assert figures.windows(300) == [("all 300 steps", None)]


def plot_bytes(value) -> int:
    """What the page receives for one output: a plot's JSON as a string inside the event's JSON."""
    return len(json.dumps(value if isinstance(value, str) else {"type": "plotly", "plot": value.to_json()}))


def test_the_figures_of_2000_characters_stay_light(long):
    shown = pg.all_figures(long, pg.View())
    sizes = {name: plot_bytes(value) for name, value in shown.items() if value is not None}  # a GRU: 2 heatmaps
    assert sum(sizes.values()) < 600_000, sizes
    assert sizes["surprisal"] < 12_000 and sizes["unit"] < 12_000  # a few bytes per character, not a span each
    for name in ("heatmap-1", "heatmap-2"):  # reset, update
        heatmap = shown[name].data[0]
        assert len(heatmap.x) * len(heatmap.y) <= figures.MAX_CELLS


def test_saturation_figure_plots_each_units_fractions(trace):
    figure = figures.saturation_figure(trace)
    left, right = saturation(trace.update_gate)
    update_layer_2 = [d for d in figure.data if d.name == "layer 2" and d.xaxis == "x2"][0]
    assert list(update_layer_2.x) == pytest.approx(left[1].tolist(), abs=1e-6)
    assert list(update_layer_2.y) == pytest.approx(right[1].tolist(), abs=1e-6)
    assert len(update_layer_2.x) == 512 and list(update_layer_2.customdata) == list(range(512))


def test_surprisal_view_codes_every_character(trace):
    page = figures.surprisal_html(trace)
    codes = figures.text_codes(page)
    assert len(codes) == len(trace.text) and codes[0] == figures.QUANTUM  # the first character has no prediction
    surprisal = codes[1:] / figures.SURPRISAL_SCALE
    assert surprisal == pytest.approx(trace.surprisal().tolist(), abs=6e-4)
    assert f'data-prompt="{trace.prompt_len}"' in page and 'data-kind="surprisal"' in page
    assert "&quot;\\n&quot;: &quot;↵&quot;" in page  # how newlines are shown, from charrnn.vocab


def test_unit_view_codes_the_units_values_and_its_limits(trace):
    page = figures.activation_html(trace, "reset", 3, 7)
    values = figures.dequantise(figures.text_codes(page), 0, 1)
    assert values == pytest.approx(trace.reset_gate[2, :, 7].tolist(), abs=1e-5)
    assert 'data-name="reset"' in page and "Layer 3, unit 7" in page
    with pytest.raises(ValueError, match="unit must be a whole number from 0 to 511"):
        figures.activation_html(trace, "hidden", 1, 512)
    with pytest.raises(ValueError, match="layer must be a whole number from 1 to 3"):
        figures.activation_html(trace, "hidden", 4, 0)


def test_html_in_the_text_is_escaped(tiny):
    vocabulary_with_markup = "<>&ab"
    from charrnn import CharRNN

    model = CharRNN(vocabulary_with_markup, 4, 8, 1, 0.0).eval()
    page = figures.surprisal_html(model.trace("<a&b>"))
    assert "<a&b>" not in page and "&lt;a&amp;b&gt;" in page


def test_text_html_colours_a_plain_string():
    page = figures.text_html("a b\n", ["red"] * 4, ["t0", "t1", "t2", "t3"], "legend")
    assert page.count("<span") == 4 and "␣" in page and "<br>" in page and 'title="t2"' in page


def test_figures_serialise_for_the_browser(trace):
    for figure in (figures.probability_figure(trace), figures.gate_figure(trace, "reset", 1),
                   figures.saturation_figure(trace)):
        parsed = json.loads(figure.to_json())
        assert parsed["data"] and parsed["layout"]["template"]["layout"]["font"]["size"] == 12
    heatmap = json.loads(figures.gate_figure(trace, "reset", 1).to_json())["data"][0]
    assert heatmap["z"]["dtype"] == "u2" and "bdata" in heatmap["z"]  # binary, as plotly.js reads it


def test_pinned_units_are_read_from_text():
    assert inputs.pinned_units(" 99, 337 99 ", 512) == (99, 337)
    assert inputs.pinned_units("", 512) == ()
    with pytest.raises(inputs.InputError, match="Pinned unit must be a whole number from 0 to 511, not 600"):
        inputs.pinned_units("3, 600", 512)
    with pytest.raises(inputs.InputError, match="Pinned unit must be a whole number"):
        inputs.pinned_units("3, x", 512)
    with pytest.raises(inputs.InputError, match="at most 32"):
        inputs.pinned_units(" ".join(map(str, range(40))), 512)
