"""Figures and HTML for the unit analyses: a unit's contexts, histogram and pushes, found units, matches, gates by
context, memory timescales, and the map of every unit's explanation with the shares explained. Each builder takes
the dict (or atlas) an analysis returns and nothing else, so each can be tested without a browser."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.explain import FAIR, FAMILIES, GOOD, hover_label
from ..analysis.memory_gain import MemoryGainError, summarize
from ..analysis.units import format_timescale
from ..decoding.unit import KIND_NAMES, KIND_RANGES, Unit
from ..vocab import visible_char
from .run import LAYER_COLORS, TEMPLATE, from_typed_array, text_html, typed_array, value_color

HELPED, HURT = (76, 120, 168), (228, 87, 86)  # the blue and red of charrnn.figures.run

UP, DOWN = "#e45756", "#4c78a8"
MONO = "font-family:ui-monospace,monospace;font-size:14px;line-height:1.9;white-space:pre"


def unit_name(row: dict) -> str:
    """The name of the unit an analysis's row or profile is about ({"layer", "kind", "unit"}), "L3 hidden 99"."""
    return str(Unit(row["layer"], row["kind"], row["unit"]))


def char_span(c: str, background: str, title: str, marked: bool = False) -> str:
    style = f"background:{background}" + (";outline:2px solid #222;font-weight:700" if marked else "")
    return (f'<span style="{style}" title="{html.escape(title, quote=True)}">'
            f"{html.escape(visible_char(c))}</span>")


def context_html(entry: dict, kind: str) -> str:
    """One context of unit_profile as a line: each character coloured by the unit's value after it (blue low, red
    high), the context's own character outlined and bold (it is the one marked ⟦c⟧ in entry["context"])."""
    low = KIND_RANGES[kind][0]
    chars = entry["before"] + entry["char"] + entry["after"]
    marked = len(entry["before"])
    spans = []
    for i, (c, v) in enumerate(zip(chars, entry["values"])):
        offset = entry["offset"] - marked + i
        background = "transparent" if v is None or np.isnan(v) else value_color(v, low)
        shown = "n/a" if v is None or np.isnan(v) else f"{v:.3f}"
        spans.append(char_span(c, background, f"offset {offset} {visible_char(c)!r}: {kind} ≈ {shown}", i == marked))
    return (f'<div style="{MONO}"><span style="color:#666;display:inline-block;width:5.5em">{entry["value"]:+.3f}'
            f'</span>{"".join(spans)}</div>')


def contexts_html(profile: dict) -> str:
    """The unit's top and bottom contexts over the reference text, strongest first, as coloured lines."""
    kind = profile["kind"]
    heading = (f"{unit_name(profile)}, {KIND_NAMES[kind]} (τ {format_timescale(profile['timescale'])}, mean "
               f"{profile['mean']:+.3f}). Each character is coloured by the unit's value after it "
               f"(<span style='background:rgba(76,120,168,.8);color:white'>&nbsp;{KIND_RANGES[kind][0]:g}&nbsp;</span> … "
               "<span style='background:rgba(228,87,86,.8);color:white'>&nbsp;1&nbsp;</span>); the outlined "
               "character is where the value on the left was reached.")
    parts = [f'<div style="font-size:13px;color:#555;margin-bottom:6px">{heading}</div>']
    for title, rows in (("Highest values", profile["top"]), ("Lowest values", profile["bottom"])):
        parts.append(f'<div style="font-weight:600;margin-top:8px">{title}</div>')
        parts.extend(context_html(row, kind) for row in rows)
    return "".join(parts)


def histogram_figure(profile: dict) -> go.Figure:
    """The unit's values over the reference text, as counts over the atlas's fixed bins, with its mean."""
    edges = np.array(profile["histogram"]["edges"])
    counts = profile["histogram"]["counts"]
    # Plain lists (not numpy arrays, which plotly 7 sends as typed-array blobs) keep the JSON readable everywhere.
    figure = go.Figure(go.Bar(x=((edges[:-1] + edges[1:]) / 2).round(6).tolist(), y=counts,
                              width=np.diff(edges).round(6).tolist(), marker_color=DOWN,
                              hovertemplate="%{x:.3f}: %{y} characters<extra></extra>"))
    figure.add_vline(x=profile["mean"], line=dict(color=UP, dash="dot"),
                     annotation_text=f"mean {profile['mean']:+.3f}", annotation_position="top")
    figure.update_layout(template=TEMPLATE, height=300, bargap=0,
                         title=dict(text=f"{unit_name(profile)}: {KIND_NAMES[profile['kind']]} over the reference text",
                                    x=0.01),
                         xaxis=dict(range=[edges[0], edges[-1]], title="value"), yaxis=dict(title="characters"))
    return figure


def pushes_figure(profile: dict) -> go.Figure:
    """The characters a last-layer hidden unit pushes up and down: its output weights head.weight[:, unit]."""
    if not profile.get("pushes"):
        raise ValueError("only a last-layer hidden unit's profile, made with the model, has pushes")
    rows = profile["pushes"]["up"] + profile["pushes"]["down"][::-1]
    figure = go.Figure(go.Bar(
        x=[r["weight"] for r in rows], y=[visible_char(r["char"]) for r in rows], orientation="h",
        marker_color=[UP if r["weight"] >= 0 else DOWN for r in rows],
        hovertemplate="%{y}: weight %{x:+.3f}<extra></extra>"))
    figure.update_layout(template=TEMPLATE, height=120 + 18 * len(rows),
                         title=dict(text=f"{unit_name(profile)}: characters it pushes up and down (logit per unit "
                                         "of h_t)", x=0.01),
                         yaxis=dict(type="category", autorange="reversed", tickfont=dict(size=14), dtick=1),
                         xaxis=dict(title="output weight", zeroline=True))
    return figure


def found_units_figure(result: dict) -> go.Figure:
    """find_units' ranking as bars of r, best first."""
    rows = result["units"]
    labels = [unit_name(r) for r in rows]
    figure = go.Figure(go.Bar(x=[r["r"] for r in rows], y=labels, orientation="h",
                              marker_color=[UP if r["r"] >= 0 else DOWN for r in rows],
                              hovertemplate="%{y}: r = %{x:+.3f}<extra></extra>"))
    figure.update_layout(template=TEMPLATE, height=120 + 20 * len(rows),
                         title=dict(text=f"Units following {html.escape(result['signal'])} over {result['chars']:,} "
                                         "characters (Pearson r)", x=0.01),
                         xaxis=dict(range=[-1, 1], title="r"),
                         yaxis=dict(type="category", autorange="reversed", automargin=True, dtick=1))
    return figure


def matches_html(result: dict) -> str:
    """select_and_match's matches: each place's characters shaded by the fraction of the selected units on there,
    the matched span outlined."""
    parts = [f'<div style="font-size:13px;color:#555;margin-bottom:6px">{result["units"]} selected units; '
             f'searched the first {result["searched_chars"]:,} characters of the reference text. Darker = more of '
             "the units on (above the threshold).</div>"]
    for row in result["matches"]:
        chars = row["before"] + row["match"] + row["after"]
        first = row["offset"] - len(row["before"])
        spans = [char_span(c, f"rgba(228,87,86,{0.7 * f:.2f})", f"offset {first + i}: {f:.0%} of the units on")
                 for i, (c, f) in enumerate(zip(chars, row["on_fraction"]))]
        starts, ends = len(row["before"]), len(row["before"]) + len(row["match"])
        # One outline around the whole match: one per character would run together into a black bar.
        marked = f'<span style="outline:2px solid #222;font-weight:700">{"".join(spans[starts:ends])}</span>'
        parts.append(f'<div style="{MONO}"><span style="color:#666;display:inline-block;width:5.5em">'
                     f'{row["score"]:.2f}</span>{"".join(spans[:starts])}{marked}{"".join(spans[ends:])}</div>')
    return "".join(parts)


def timescale_figure(timescale) -> go.Figure:
    """The memory timescale 1 / (1 - mean z_t) of every unit (timescale [layers, H], e.g. atlas.timescale), one
    histogram per layer on a log scale."""
    timescale = np.asarray(timescale, dtype=np.float64)
    logs = np.log10(np.clip(timescale, 1.0, 1e6))
    figure = go.Figure()
    for k, row in enumerate(logs):
        figure.add_trace(go.Histogram(
            x=np.round(row, 4).tolist(), xbins=dict(start=0, end=float(logs.max()) + 0.1, size=0.1), opacity=0.6,
            name=f"layer {k + 1} (median τ {format_timescale(float(np.median(timescale[k])))})",
            marker_color=LAYER_COLORS[k % len(LAYER_COLORS)],
            hovertemplate="log10 τ %{x}: %{y} units<extra></extra>"))
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if t <= 10 ** (logs.max() + 0.1)]
    figure.update_layout(
        template=TEMPLATE, height=380, barmode="overlay", legend=dict(orientation="h", y=-0.32),
        title=dict(text="Memory timescale of every unit, τ = 1 / (1 − mean z_t): steps a value survives", x=0.01),
        xaxis=dict(title="τ (steps, log scale)", tickvals=np.log10(ticks).tolist(), ticktext=[f"{t:g}" for t in ticks]),
        yaxis=dict(title="units"))
    return figure


def gate_context_figure(result: dict) -> go.Figure:
    """gates_by_context's claims: per claim and layer, the distribution (5, 25, 50, 75, 95 %) of the layer's mean
    gate in the context beside the baseline."""
    contexts = {row["context"]: row for row in result["contexts"]}
    claims = result["claims"]
    titles = [f"{c['gate']} gate: {c['context']} vs {c['baseline']} (claimed {c['expected']}): {c['summary']}"
              for c in claims]
    figure = make_subplots(rows=len(claims), cols=1, subplot_titles=titles, vertical_spacing=0.45 / len(claims))
    for i, claim in enumerate(claims, start=1):
        for name, color, role in ((claim["context"], UP, "context"), (claim["baseline"], DOWN, "baseline")):
            stats = contexts[name][claim["gate"]]
            layers = [f"layer {k + 1}" for k, s in enumerate(stats) if s["quantiles"]]
            q = np.array([s["quantiles"] for s in stats if s["quantiles"]])
            if not len(q):
                continue
            figure.add_trace(go.Box(
                x=layers, lowerfence=q[:, 0].tolist(), q1=q[:, 1].tolist(), median=q[:, 2].tolist(),
                q3=q[:, 3].tolist(), upperfence=q[:, 4].tolist(),
                mean=[s["mean"] for s in stats if s["quantiles"]], name=name, marker_color=color,
                offsetgroup=role, showlegend=False, hoverinfo="y+name"), row=i, col=1)
        figure.update_yaxes(title_text=f"mean {claim['gate']}", row=i, col=1)
    figure.update_layout(template=TEMPLATE, height=230 * len(claims) + 80, boxmode="group",
                         title=dict(text="Gates by context: each layer's mean gate over its units (5-95 %), "
                                         f"<span style='color:{UP}'>in the context</span> and "
                                         f"<span style='color:{DOWN}'>in its baseline</span>", x=0.01),
                         margin=dict(t=90))
    figure.update_annotations(font_size=12)
    return figure


def claims_html(result: dict) -> str:
    """The seed's claims against the measurements, one row per claim, one column per layer."""
    colors = {"borne out": "#2e7d32", "contradicted": "#c62828"}
    layers = len(result["claims"][0]["layers"]) if result["claims"] else 0
    head = "".join(f"<th>layer {k + 1}</th>" for k in range(layers))
    rows = []
    for claim in result["claims"]:
        cells = []
        for row in claim["layers"]:
            if row["difference"] is None:
                cells.append(f"<td>{row['verdict']}</td>")
                continue
            color = colors.get(row["verdict"], "#555")
            cells.append(f"<td>{row['context_mean']:.3f} vs {row['baseline_mean']:.3f}<br>Δ {row['difference']:+.4f} "
                         f"[{row['ci'][0]:+.4f}, {row['ci'][1]:+.4f}], d {row['d']:+.2f}<br>"
                         f"<b style='color:{color}'>{row['verdict']}</b></td>")
        rows.append(f"<tr><td>{claim['gate']}</td><td>{html.escape(claim['seed'])}</td><td>{html.escape(claim['context'])}"
                    f" vs {html.escape(claim['baseline'])} ({claim['counts'][0]:,} vs {claim['counts'][1]:,}): "
                    f"{claim['expected']}</td>{''.join(cells)}</tr>")
    return ('<table class="charrnn-claims" style="font-size:13px;border-collapse:collapse">'
            f"<tr><th>gate</th><th>the seed's claim</th><th>context vs baseline: expected</th>{head}</tr>"
            f"{''.join(rows)}</table><div style='font-size:12px;color:#555'>Rule: {html.escape(result['rule'])}. "
            "In torch.nn.GRU a z_t near 1 keeps the old state.</div>")


def difference_colors(text: str, rows: list[dict], better: str, worse: str, describe, saturate_at: float):
    """The colours and hover titles of a text whose characters (from the second) each have two surprisals: blue
    where row[better] was the smaller (less surprised), red where larger, full colour at `saturate_at` nats;
    describe(row, difference) words the title. ValueError when the rows are not this text's."""
    if len(rows) != len(text) - 1 or any(r["char"] != c for r, c in zip(rows, text[1:])):
        raise MemoryGainError("the rows are not those of this text: pass the text the rows were computed on")
    colors, titles = ["transparent"], [f"step 0 {visible_char(text[0])!r}: first character, no prediction"]
    for t, row in enumerate(rows, start=1):
        difference = row[worse] - row[better]
        r, g, b = HELPED if difference >= 0 else HURT
        colors.append(f"rgba({r},{g},{b},{min(1.0, abs(difference) / saturate_at):.2f})")
        titles.append(f"step {t} {visible_char(row['char'])!r}: {describe(row, difference)}")
    return colors, titles


def swatch(color: tuple, word: str) -> str:
    return f"<span style='background:rgba({','.join(map(str, color))},.8);color:white'>&nbsp;{word}&nbsp;</span>"


def memory_gain_html(text: str, rows: list[dict], saturate_at: float = 3.0) -> str:
    """The text coloured by the gain at each character: blue where the GRU's memory made it less surprising than
    the bigram found it, red where more; full colour at `saturate_at` nats. The hover title gives both."""
    colors, titles = difference_colors(
        text, rows, "gru", "bigram", saturate_at=saturate_at,
        describe=lambda row, gain: (f"GRU {row['gru']:.2f} nats, bigram {row['bigram']:.2f} nats, memory gain "
                                    f"{gain:+.2f}"))
    stats = summarize(rows)
    legend = (f"{swatch(HELPED, 'blue')}: the GRU, remembering everything before, found the character less surprising "
              f"than a bigram that sees only the previous character; {swatch(HURT, 'red')}: more (full colour at "
              f"{saturate_at:g} nats). Mean: GRU {stats['gru']:.2f}, bigram {stats['bigram']:.2f}, gain "
              f"{stats['gain']:.2f} nats/char; the GRU did better on {stats['helped']:.0%} of the characters.")
    return text_html(text, colors, titles, legend)


def comparison_html(result: dict, saturate_at: float = 3.0) -> str:
    """compare_models' answer as HTML: its means, the text coloured by the difference at each character (blue where
    model A found it less surprising than model B, red where more; full colour at `saturate_at` nats; the hover
    title gives both), the characters where they disagree most, and the unit matching."""
    text, rows, (a, b) = result["text"], result["rows"], (result["model_a"], result["model_b"])
    colors, titles = difference_colors(
        text, rows, "a", "b", saturate_at=saturate_at,
        describe=lambda row, difference: f"A {row['a']:.2f} nats, B {row['b']:.2f} nats, B − A {difference:+.2f}")
    s = result["summary"]
    legend = (f"A is <b>{html.escape(a)}</b>, B is <b>{html.escape(b)}</b>. {swatch(HELPED, 'blue')}: A found the "
              f"character less surprising than B; {swatch(HURT, 'red')}: more (full colour at {saturate_at:g} nats). "
              f"Mean: A {s['a']:.3f}, B {s['b']:.3f} nats/char (B − A {s['difference']:+.3f}); A did better on "
              f"{s['a_better']:.0%} of the characters, B on {s['b_better']:.0%}.")
    return text_html(text, colors, titles, legend) + disagreements_html(result) + unit_matches_html(result)


def disagreements_html(result: dict) -> str:
    rows = "".join(
        f"<tr><td>{d['offset']:,}</td><td style='{MONO}'>{html.escape(''.join(map(visible_char, d['context'])))}"
        f"<b style='outline:1px solid #222'>{html.escape(visible_char(d['char']))}</b></td>"
        f"<td>{d['a']:.2f}</td><td>{d['b']:.2f}</td><td>{d['difference']:+.2f}</td></tr>"
        for d in result["disagreements"])
    return ("<h4>Where they disagree most</h4><table class='charrnn-disagreements'><tr><th>offset</th>"
            "<th>context and character</th><th>A (nats)</th><th>B (nats)</th><th>B − A</th></tr>" + rows + "</table>")


def unit_matches_html(result: dict) -> str:
    if not result["units"]:
        return f"<p>Units: {html.escape(result['units_over'])}.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(m['signal'])}</td><td>{html.escape(m['a']['unit'])} (r {m['a']['r']:+.2f})</td>"
        f"<td>{html.escape(m['b']['unit'])} (r {m['b']['r']:+.2f})</td>"
        f"<td>{html.escape(m['b_tracking_a']['unit'])} (r {m['b_tracking_a']['r']:+.2f})</td></tr>"
        for m in result["units"])
    return (f"<h4>Units that follow the built-in signals, over {html.escape(result['units_over'])}</h4>"
            "<table class='charrnn-unit-matches'><tr><th>signal</th><th>A's unit that follows it most</th>"
            "<th>B's unit that follows it most</th><th>B's unit that tracks A's most</th></tr>" + rows + "</table>")


# ---- every unit explained ----

FAMILY_COLORS = dict(zip(FAMILIES, ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#d4a017")))
LIGHT = 0.12  # a family's shade at held-out |r| 0: nearly white, so unexplained units fade out
NO_R = -32768  # the int16 code of an r that is not there


def shade(color: str, amount: float) -> str:
    """The colour mixed with white: amount 1 the colour itself, 0 white."""
    rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return "rgb({},{},{})".format(*(round(255 - (255 - c) * amount) for c in rgb))


def family_colorscale() -> list:
    """One band per family over [f, f + 1) of z (scaled to [0, 1]): from its lightest shade to its full colour."""
    scale, bands = [], len(FAMILIES)
    for f, family in enumerate(FAMILIES):
        scale += [[f / bands, shade(FAMILY_COLORS[family], LIGHT)], [(f + 1) / bands, FAMILY_COLORS[family]]]
    return scale


def unit_map_figure(rows: list[dict], kinds: tuple) -> go.Figure:
    """Every unit (unit_map's rows: layer x kind rows, a column per unit), coloured by its explanation's family and
    shaded by its held-out |r|. The hover labels ("L1 hidden 3: line position, r +0.95 held out (fit +0.95, chance
    0.01)", as explain.hover_label) are written in the browser from layout.meta.charrnn.unitmap (the labels once, each
    unit's label index and its three r as int16 codes of 1e-4: about 50 kB for 4,608 units instead of 360 kB of
    text); a click opens the unit's profile (charrnn/page/page.js)."""
    layers = max(row["layer"] for row in rows)
    hidden = max(row["unit"] for row in rows) + 1
    names = [f"L{layer} {kind}" for layer in range(1, layers + 1) for kind in kinds]
    z = np.full((len(names), hidden), np.nan, dtype=np.float32)
    labels = list(dict.fromkeys(row["explanation"] for row in rows if row["explanation"] is not None))
    position = {text: i for i, text in enumerate(labels)}
    label = np.full((len(names), hidden), -1, dtype=np.int16)
    codes = np.full((3, len(names), hidden), NO_R, dtype=np.int16)  # r_heldout, r_fit, chance
    for row in rows:
        y, u = (row["layer"] - 1) * len(kinds) + kinds.index(row["kind"]), row["unit"]
        if row["family"] is None or row["r_heldout"] is None:
            continue
        z[y, u] = FAMILIES.index(row["family"]) + min(abs(row["r_heldout"]), 0.999)
        label[y, u] = position[row["explanation"]]
        codes[:, y, u] = [round(row[key] * 10_000) for key in ("r_heldout", "r_fit", "chance")]
    figure = go.Figure(go.Heatmap(
        z=z, y=names, colorscale=family_colorscale(), zmin=0, zmax=len(FAMILIES), showscale=False, xgap=0, ygap=1,
        hovertemplate="%{text}<extra></extra>"))
    counts = {family: sum(row["family"] == family for row in rows) for family in FAMILIES}
    for family in FAMILIES:  # the legend: one entry per family, with its count of units
        if counts[family]:
            figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{family} ({counts[family]:,})",
                                        marker=dict(color=FAMILY_COLORS[family], size=11, symbol="square")))
    unitmap = {"rows": names, "labels": labels, "label": typed_array(label), "r": typed_array(codes)}
    figure.update_layout(
        template=TEMPLATE, height=140 + 26 * len(names), meta={"charrnn": {"unitmap": unitmap}},
        title=dict(text="Every unit, coloured by the family of its explanation, darker the higher its held-out |r| "
                        "(click one for its profile)", x=0.01),
        xaxis=dict(title="unit", showgrid=False), yaxis=dict(autorange="reversed", type="category"),
        legend=dict(orientation="h", y=-0.25 if len(names) > 4 else -0.5), margin=dict(l=90, r=20, t=50, b=40))
    return figure


def unit_map_labels(figure: go.Figure) -> list[list[str]]:
    """The hover labels page.js writes from a unit map's meta, as Python writes them (explain.hover_label)."""
    unitmap = figure.layout.meta["charrnn"]["unitmap"]
    label, codes = from_typed_array(unitmap["label"]), from_typed_array(unitmap["r"])
    out = []
    for y, name in enumerate(unitmap["rows"]):
        layer, kind = name[1:].split(" ")
        out.append([hover_label({"layer": int(layer), "kind": kind, "unit": u, "family": None,
                                 "explanation": unitmap["labels"][label[y, u]] if label[y, u] >= 0 else None,
                                 **{key: None if codes[k, y, u] == NO_R else codes[k, y, u] / 10_000
                                    for k, key in enumerate(("r_heldout", "r_fit", "chance"))}})
                    for u in range(label.shape[1])])
    return out


def percent(share: float) -> str:
    return f"{100 * share:.0f} %"


def shares_rows(shares: list[dict]) -> list[list]:
    """The shares table: per layer and kind, the units whose held-out |r| reaches GOOD and FAIR beside chance."""
    return [[row["layer"], row["kind"], row["units"], percent(row["good"]), percent(row["good_chance"]),
             percent(row["fair"]), percent(row["fair_chance"]), round(row["mean_chance"], 3)] for row in shares]


SHARES_HEADERS = ["layer", "kind", "units", f"held out ≥ {GOOD}", f"chance ≥ {GOOD}", f"held out ≥ {FAIR}",
                  f"chance ≥ {FAIR}", "mean chance"]


def shares_summary(overall: dict, name: str) -> str:
    """One line of Markdown: how interpretable the model is, over all its units."""
    return (f"Of {name}'s units, **{percent(overall[f'r_heldout >= {GOOD}'])}** follow their explanation with "
            f"|r| ≥ {GOOD} on held-out text (by chance: {percent(overall[f'chance >= {GOOD}'])}), "
            f"**{percent(overall[f'r_heldout >= {FAIR}'])}** with |r| ≥ {FAIR} (by chance: "
            f"{percent(overall[f'chance >= {FAIR}'])}).")
