"""Figures and HTML for What-if (charrnn.analysis.whatif): two texts aligned with their differences marked, how far a
change
moved the next-character distribution step by step, the alternatives at one step, and runs under different
decoding settings side by side.

Each builder takes texts, a Pair or SettingsRuns and nothing else from the model, so each can be tested without a
browser. Texts include the prompt; character i is read at step i and was chosen at step i - 1.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..analysis.whatif import Pair, SettingsRun, first_difference
from ..decoding.interventions import Intervention
from ..decoding.trace import Trace
from ..decoding.unit import KIND_NAMES
from ..vocab import visible_char
from .run import LAYER_COLORS, TEMPLATE

ORIGINAL, CHANGED, MARK = "#f58518", "#e45756", "#7b3fb3"
ALIGN_WIDTH = 80  # characters per aligned row: the two texts fit beside each other's lines in the page's column
SHARED_DRAWS = ("Both runs read the same prompt with the same settings and seed, so they share every random draw "
                "(the draw that picks generated character s depends on the seed and s alone): whatever differs "
                "comes from the one change.")
RANK_COLORS = ["transparent", "rgba(76,120,168,.25)", "rgba(76,120,168,.45)", "rgba(228,87,86,.55)"]

# Scoped to the classes below, so the fragment looks the same wherever it is shown (gr.HTML, a notebook, a file).
STYLE = """<style>
.wi-rows{font-family:ui-monospace,monospace;font-size:14px;line-height:1.55;white-space:pre;overflow-x:auto}
.wi-rows .wi-block{margin-bottom:9px}
.wi-rows .wi-gutter{color:#888;user-select:none}
.wi-ws{color:#aaa}
.wi-prompt{text-decoration:underline dotted #888}
.wi-a{background:rgba(245,133,24,.28)}
.wi-b{background:rgba(228,87,86,.35);font-weight:700}
.wi-first{outline:2px solid #222;outline-offset:-1px}
.wi-mark{box-shadow:inset 3px 0 0 #7b3fb3}
.wi-forced{outline:2px solid #7b3fb3;outline-offset:-1px}
.wi-legend{font-size:13px;color:#555;margin-bottom:6px;white-space:normal}
.wi-key{font-family:ui-monospace,monospace;padding:0 3px}
.wi-cols{display:grid;gap:14px}
.wi-cols .wi-text{font-family:ui-monospace,monospace;font-size:14px;line-height:1.6;white-space:pre-wrap;
  word-break:break-all;border:1px solid #e3e6eb;border-radius:6px;padding:8px}
.wi-cols .wi-head{font-weight:600;margin-bottom:2px}
.wi-cols .wi-stats{font-size:13px;color:#555;margin-bottom:6px}
</style>"""


def shown(text: str) -> str:
    """HTML of characters as the page shows them: whitespace as its symbol, greyed, on one line."""
    out = []
    for c in text:
        symbol = html.escape(visible_char(c))
        out.append(f'<span class="wi-ws">{symbol}</span>' if c.isspace() else symbol)
    return "".join(out)


def aligned_html(original: str, changed: str, prompt_len: int, *, labels: tuple[str, str] = ("original", "changed"),
                 marked: int | None = None, marked_title: str = "", forced: int | None = None,
                 width: int = ALIGN_WIDTH) -> str:
    """The two texts character under character, `width` characters a row, every position where they differ
    marked (the first one outlined), the prompt underlined, whitespace visible. `marked`: a character index to
    flag with a bar before it (where an intervention starts); `forced`: the index of a character written by
    force in the changed text (a branch), outlined."""
    length = max(len(original), len(changed))
    first = first_difference(original, changed)
    differ = sum(1 for i in range(length) if original[i : i + 1] != changed[i : i + 1])
    gutter = max(len(label) for label in labels) + len(str(max(0, length - 1))) + 2

    def classes(i: int, row: int) -> str:
        names = []
        if i < prompt_len:
            names.append("wi-prompt")
        if original[i : i + 1] != changed[i : i + 1]:
            names.append("wi-b" if row else "wi-a")
        if i == first:
            names.append("wi-first")
        if i == marked:
            names.append("wi-mark")
        if row and i == forced:
            names.append("wi-forced")
        return " ".join(names)

    def title(i: int, row: int) -> str:
        if i == marked:
            return marked_title
        if row and i == forced:
            return f"character {i}: written here by force"
        if original[i : i + 1] != changed[i : i + 1]:
            return (f"character {i} (chosen at step {i - 1}): {visible_char(original[i : i + 1] or ' ')!r} in the "
                    f"{labels[0]}, {visible_char(changed[i : i + 1] or ' ')!r} in the {labels[1]}")
        return ""

    def row_html(text: str, row: int, start: int) -> str:
        """One row: runs of characters with the same marks become one span."""
        parts, run, run_key = [], [], None
        for i in range(start, min(start + width, length)):
            key = (classes(i, row), title(i, row) if i in (marked, forced, first) else "")
            if key != run_key and run:
                parts.append(span(run_key, "".join(run)))
                run = []
            run_key = key
            run.append(shown(text[i]) if i < len(text) else " ")  # past the end of the shorter text: blank
        if run:
            parts.append(span(run_key, "".join(run)))
        return "".join(parts)

    def span(key, inner: str) -> str:
        names, tip = key
        if not names:
            return inner
        tip = f' title="{html.escape(tip, quote=True)}"' if tip else ""
        return f'<span class="{names}"{tip}>{inner}</span>'

    blocks = []
    for start in range(0, length, width):
        lines = []
        for row, (label, text) in enumerate(zip(labels, (original, changed))):
            head = f"{start if row == 0 else '':>{len(str(max(0, length - 1)))}} {label}".ljust(gutter)
            lines.append(f'<div><span class="wi-gutter">{html.escape(head)}</span>'
                         f'<span class="wi-line">{row_html(text, row, start)}</span></div>')
        blocks.append(f'<div class="wi-block">{"".join(lines)}</div>')
    if first is None:
        verdict = "The two texts are the same."
    else:
        verdict = (f"They part at character {first} (chosen at step {first - 1}); {differ:,} of {length:,} positions "
                   "differ.")
    legend = (f'<div class="wi-legend">{html.escape(verdict)} Top row: the {html.escape(labels[0])}; below it: the '
              f'{html.escape(labels[1])}. <span class="wi-key wi-a">a</span><span class="wi-key wi-b">b</span> '
              'differ; <span class="wi-key wi-first">x</span> the first difference; '
              '<span class="wi-key wi-prompt">prompt</span> underlined'
              + ('; <span class="wi-key wi-mark">&nbsp;x</span> ' + html.escape(marked_title) if marked is not None
                 else "")
              + ('; <span class="wi-key wi-forced">x</span> the character written by force' if forced is not None
                 else "")
              + ". The number on the left is the index of the row's first character (step t reads character t)."
              "</div>")
    return f'{STYLE}{legend}<div class="wi-rows">{"".join(blocks)}</div>'


def divergence_figure(pair: Pair, *, marked: int | None = None, marked_label: str = "",
                      labels: tuple[str, str] = ("original", "changed")) -> go.Figure:
    """Per step, KL(original || changed) between the two next-character distributions (raw, temperature 1), on a
    log scale (a step where nothing moved has none), and the changed run's probability of the character the
    original chose. A bar marks `marked` (a step), a dashed line the step that chose the first differing
    character: past it the runs read different text, so what follows is drawn grey."""
    kl = pair.divergence().numpy()
    kept = pair.original_choice_probability().double().numpy()
    text = pair.original.text
    first = pair.first_difference
    parted = len(kl) if first is None else first  # steps before this one read the same text in both runs
    steps = np.arange(len(kl))
    read = np.array([visible_char(c) for c in text[: len(kl)]], dtype=object)
    chosen = np.array([visible_char(c) for c in text[1 : len(kept) + 1]], dtype=object)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.5, 0.5],
                           subplot_titles=(f"KL({labels[0]} ‖ {labels[1]}) of the next-character distribution, nats",
                                           f"the {labels[1]} run's probability of the character the {labels[0]} "
                                           "chose"))
    for same, color, line in ((True, CHANGED, LAYER_COLORS[0]), (False, "#d0d0d0", "#c0c0c0")):
        at = steps < parted if same else steps >= parted
        moved = at & (kl > 0)  # a log axis cannot show 0: nothing moved there
        figure.add_trace(go.Bar(x=steps[moved], y=kl[moved], customdata=read[moved], marker_color=color,
                                showlegend=False, hovertemplate="step %{x}, reading %{customdata}<br>KL = %{y:.3g} "
                                "nats<extra></extra>"), row=1, col=1)
        at = at[: len(kept)]
        figure.add_trace(go.Scatter(x=steps[: len(kept)][at], y=kept[at], customdata=chosen[at], mode="lines",
                                    line=dict(color=line, width=1.5), showlegend=False,
                                    hovertemplate="step %{x}: the " + labels[0] + " chose %{customdata}<br>p in the "
                                    + labels[1] + " run = %{y:.3f}<extra></extra>"), row=2, col=1)
    end = max(len(kl) - 0.5, 0.5)
    if first is not None and first - 1 < end:
        figure.add_vrect(x0=first - 0.5, x1=end, fillcolor="#888", opacity=0.08, line_width=0)
        figure.add_vline(x=first - 1, line=dict(color="#222", width=1.5, dash="dash"))
        figure.add_annotation(x=first - 1, y=0.98, xref="x", yref="y domain", xanchor="left", yanchor="top",
                              showarrow=False, align="left", font=dict(size=11), bgcolor="rgba(255,255,255,.7)",
                              text=f" step {first - 1} chose the first different character;<br> after it the runs "
                                   "read different text (grey)")
    if 0 < pair.original.prompt_len < len(kl):
        figure.add_vline(x=pair.original.prompt_len - 1.5, line=dict(color="black", width=1, dash="dot"))
    if marked is not None:
        figure.add_vline(x=marked - 0.5, line=dict(color=MARK, width=2.5))
        figure.add_annotation(x=marked - 0.5, y=-0.09, yref="paper", xanchor="left", yanchor="top", showarrow=False,
                              text=f" {marked_label}", font=dict(size=11, color=MARK))
    figure.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    figure.update_yaxes(range=[-0.02, 1.02], row=2, col=1)
    figure.update_xaxes(range=[-0.5, end], title_text="step (the character read; the dotted line ends the prompt)",
                        row=2, col=1)
    figure.update_layout(template=TEMPLATE, height=480, bargap=0, margin=dict(t=70, b=70))
    return figure


def alternatives(trace: Trace, index: int, top: int = 8) -> list[dict]:
    """What the model offered when it chose character `index` of the trace's text (at step index - 1): the `top`
    most likely characters under the raw distribution, each with its raw and filtered (sampled-from) probability
    and whether it was the one written, most likely first."""
    if not trace.prompt_len <= index < len(trace.text):
        raise ValueError(f"index must be that of a generated character, from {trace.prompt_len} to "
                         f"{len(trace.text) - 1}, not {index}")
    raw, filtered = trace.probs[index - 1].double(), trace.filtered[index - 1].double()
    order = raw.argsort(descending=True, stable=True)[: min(top, len(trace.vocab))].tolist()
    written = int(trace.tokens[index])
    return [{"char": trace.vocab[i], "p": float(raw[i]), "sampled_p": float(filtered[i]), "written": i == written}
            for i in order]


def alternatives_html(trace: Trace, index: int, alternatives: list[dict]) -> str:
    """Where a branch would start: which generated character, the step that chose it, the text before, the
    character written and how likely it was."""
    step = index - 1
    before = trace.text[max(0, index - 30) : index]
    written = trace.text[index]
    p = float(trace.probs[step, trace.tokens[index]])
    sampled = float(trace.filtered[step, trace.tokens[index]])
    cut = sum(1 for a in alternatives if a["sampled_p"] == 0)
    return (f'{STYLE}<div class="wi-legend" style="font-size:14px;color:#222">Generated character '
            f'<b>{index - trace.prompt_len}</b> (character {index} of the text, chosen at step {step} after reading '
            f'<span class="wi-rows" style="white-space:pre">…{shown(before)}</span>): '
            f'<span class="wi-rows wi-b">{shown(written)}</span>, p = {p:.3f} under the model, {sampled:.3f} after '
            "the settings filtered it. Pick another character to write there (listed with the model's probability "
            "at that step" + (f"; {cut} of these were cut by the settings: the branch writes them anyway" if cut
                              else "") + "); every other step keeps its own random draw.</div>")


# ---- decoding settings side by side ----


def settings_label(run: SettingsRun) -> str:
    s = run.settings
    parts = ["greedy" if s.temperature == 0 else f"temperature {s.temperature:g}"]
    parts.append(f"top-k {s.top_k}" if s.top_k else "top-k off")
    parts.append(f"top-p {s.top_p:g}" if s.top_p < 1 else "top-p off")
    return ", ".join(parts)


def sampled_entropy(run: SettingsRun) -> torch.Tensor:
    """Per generated character, the entropy (nats) of the distribution it was drawn from."""
    start = run.trace.prompt_len - 1
    return run.entropy()[start : len(run.trace.text) - 1]


def settings_stats(run: SettingsRun) -> dict:
    ranks = run.chosen_rank().double()
    entropy = sampled_entropy(run)
    return {"settings": settings_label(run), "mean_entropy": float(entropy.mean()) if len(entropy) else 0.0,
            "top_choice": float((ranks == 1).double().mean()) if len(ranks) else 0.0,
            "mean_rank": float(ranks.mean()) if len(ranks) else 0.0}


def rank_class(rank: int) -> int:
    return 0 if rank == 1 else 1 if rank == 2 else 2 if rank <= 5 else 3


def settings_html(runs: list[SettingsRun], names: str = "ABC") -> str:
    """The runs' texts side by side, each generated character shaded by its rank under the model (not shaded:
    the most likely character), the prompt underlined."""
    columns = []
    for n, (name, run) in enumerate(zip(names, runs)):
        trace, stats = run.trace, settings_stats(run)
        parted = first_difference(runs[0].trace.text, trace.text)
        against = ("" if n == 0 else f"; the same text as {names[0]}" if parted is None else
                   f"; parts from {names[0]} at generated character {parted - trace.prompt_len}")
        ranks = run.chosen_rank().tolist()
        parts = [f'<span class="wi-prompt">{text_with_breaks(trace.text[: trace.prompt_len])}</span>']
        for c, rank in zip(trace.text[trace.prompt_len :], ranks):
            inner = text_with_breaks(c)
            level = rank_class(rank)
            parts.append(inner if level == 0 else
                         f'<span style="background:{RANK_COLORS[level]}" title="rank {rank}">{inner}</span>')
        columns.append(
            f'<div><div class="wi-head">{name}: {html.escape(stats["settings"])}</div><div class="wi-stats">'
            f'mean entropy sampled from {stats["mean_entropy"]:.2f} nats; the most likely character '
            f'{stats["top_choice"]:.0%} of the time; mean rank {stats["mean_rank"]:.2f}{against}</div>'
            f'<div class="wi-text">{"".join(parts)}</div></div>')
    legend = ('<div class="wi-legend">Shading: the rank of each written character under the model '
              f'(none: the most likely; <span class="wi-key" style="background:{RANK_COLORS[1]}">2nd</span> '
              f'<span class="wi-key" style="background:{RANK_COLORS[2]}">3rd–5th</span> '
              f'<span class="wi-key" style="background:{RANK_COLORS[3]}">6th or lower</span>). Prompt underlined; '
              "hover a shaded character for its rank.</div>")
    return (f'{STYLE}{legend}<div class="wi-cols" style="grid-template-columns:repeat({len(runs)},minmax(0,1fr))">'
            f'{"".join(columns)}</div>')


def text_with_breaks(text: str) -> str:
    """Escaped text for a wrapping block: spaces kept, newlines shown as ↵ and then broken."""
    return "".join('<span class="wi-ws">↵</span>\n' if c == "\n" else html.escape(c) for c in text)


def settings_figure(runs: list[SettingsRun], names: str = "ABC") -> go.Figure:
    """Per generated character, the entropy of what each run sampled from and the rank of the character it
    chose under the model (1 = the most likely)."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=(
        "entropy of the distribution sampled from (after the settings), nats",
        "rank of the character written under the model (1 = the most likely)"))
    for i, (name, run) in enumerate(zip(names, runs)):
        color = LAYER_COLORS[i % len(LAYER_COLORS)]
        entropy, ranks = sampled_entropy(run).numpy(), run.chosen_rank().numpy()
        chars = [visible_char(c) for c in run.trace.text[run.trace.prompt_len :]]
        label = f"{name}: {settings_label(run)}"
        x = np.arange(len(ranks))
        figure.add_trace(go.Scatter(x=x, y=entropy, customdata=chars, mode="lines", name=label, legendgroup=name,
                                    line=dict(color=color, width=1.5),
                                    hovertemplate=f"{name}, character %{{x}} (%{{customdata}}): entropy %{{y:.2f}} "
                                                  "nats<extra></extra>"), row=1, col=1)
        figure.add_trace(go.Scatter(x=x, y=ranks, customdata=chars, mode="markers", name=label, legendgroup=name,
                                    showlegend=False, marker=dict(color=color, size=5, opacity=0.7),
                                    hovertemplate=f"{name}, character %{{x}} (%{{customdata}}): rank %{{y}}"
                                                  "<extra></extra>"), row=2, col=1)
    figure.update_yaxes(rangemode="tozero", row=1, col=1)
    figure.update_yaxes(type="log", tickvals=[1, 2, 5, 10, 20, 50], row=2, col=1)
    figure.update_xaxes(title_text="generated character (0 = the first written)", row=2, col=1)
    figure.update_layout(template=TEMPLATE, height=480, legend=dict(orientation="h", y=-0.18, x=0),
                         margin=dict(t=60, b=90))
    return figure


# ---- what a change did, in words ----


def code_char(c: str) -> str:
    return f"<code>{html.escape(visible_char(c))}</code>"


def step_place(step: int, prompt_len: int) -> str:
    """Where a step is, in words: which character it reads."""
    if step < prompt_len - 1:
        return f"reading prompt character {step}"
    if step == prompt_len - 1:
        return "the step that chooses the first generated character"
    return f"reading generated character {step - prompt_len}"


def describe_html(pair: Pair, intervention: Intervention | None = None, forced_step: int | None = None,
                  changed_label: str = "forced") -> str:
    """What was changed (an intervention, or the character written as generated character `forced_step`), from
    where, and what it did to the distribution and the text, in a few sentences of HTML."""
    original, changed, prompt_len = pair.original, pair.changed, pair.original.prompt_len
    first = pair.first_difference
    if intervention is not None:
        i = intervention
        what = (f"<b>Forced</b> the {KIND_NAMES[i.kind]} of unit {i.unit} in layer {i.layer} to {i.value:g} at every "
                f"step from step {i.from_step} on ({step_place(i.from_step, prompt_len)}).")
        t = pair.first_move()
        if t is not None:
            what += (f" The next-character distribution first moved at step {t} (KL {float(pair.divergence()[t]):.3g} "
                     f"nats); the largest move {'before the texts part ' if first else ''}is "
                     f"{pair.largest_move():.3g} nats.")
        else:
            what += " The next-character distribution did not move at all."
    else:
        step = forced_step
        index = prompt_len + step
        what = (f"<b>Wrote</b> {code_char(changed.text[index])} instead of {code_char(original.text[index])} as "
                f"generated character {step} (character {index}, chosen at step {index - 1}); every other step kept "
                "its own draw.")
    if first is None:
        return (f"{what} <b>The texts are the same</b>" + (": the change moved the probabilities, never enough to "
                "change a choice." if intervention else ".") + f" {SHARED_DRAWS}")
    differ = f"{pair.differing_after():,} of the {len(original.text) - first:,} characters from there differ."
    if intervention is None:  # a branch parts where it writes
        return f"{what} {differ} {SHARED_DRAWS}"
    chosen = original.tokens[first]
    return (f"{what} <b>The texts part at character {first}</b> (chosen at step {first - 1}): the original wrote "
            f"{code_char(original.text[first])} (p = {float(original.probs[first - 1, chosen]):.3f}), the "
            f"{changed_label} run {code_char(changed.text[first])}, where the original's choice had p = "
            f"{float(changed.probs[first - 1, chosen]):.3f}. {differ} {SHARED_DRAWS}")
