"""What-if's figures and input checks: the aligned texts, the divergence figure, the alternatives at a step and the
settings compared, each checked against the same quantities computed here from the traces."""

import math
from html.parser import HTMLParser

import pytest

from charrnn import DecodeSettings
from charrnn.figures import whatif as wf
from charrnn.decoding.interventions import Intervention
from charrnn.page.inputs import InputError
from charrnn.vocab import visible_char
from charrnn.analysis.whatif import SettingsRun, intervene
from charrnn.page.inputs import branch_char, check_intervention, forced_value, parse_unit_name


class Rows(HTMLParser):
    """The characters of aligned_html's rows, each with the classes of the spans around it."""

    def __init__(self):
        super().__init__()
        self.stack, self.rows, self.in_line = [], [], 0

    def handle_starttag(self, tag, attrs):
        classes = dict(attrs).get("class", "").split()
        if "wi-line" in classes:
            self.rows.append([])
        self.stack.append(classes)

    def handle_endtag(self, tag):
        self.stack.pop()

    def handle_data(self, data):
        if any("wi-line" in c for c in self.stack):
            marks = {c for classes in self.stack for c in classes}
            self.rows[-1].extend((ch, marks) for ch in data)


def parsed_rows(fragment: str):
    parser = Rows()
    parser.feed(fragment)
    originals, changeds = parser.rows[0::2], parser.rows[1::2]
    return [c for row in originals for c in row], [c for row in changeds for c in row]


def visible(text: str) -> str:
    return "".join(visible_char(c) for c in text)


def test_aligned_texts_mark_exactly_the_positions_that_differ_and_show_whitespace():
    original = "ROMEO:\nI will not stay thee to the king.\n"
    changed = "ROMEO:\nI will not stay to hear him speak.\n"
    fragment = wf.aligned_html(original, changed, 7, marked=6, marked_title="forcing starts", width=16)
    top, bottom = parsed_rows(fragment)
    # The original is one character shorter: its row ends in a blank under the changed text's last character.
    assert "".join(c for c, _ in top) == visible(original) + " " and "".join(c for c, _ in bottom) == visible(changed)
    first = next(i for i, (a, b) in enumerate(zip(original, changed)) if a != b)
    for i, ((_, top_marks), (_, bottom_marks)) in enumerate(zip(top, bottom)):
        differs = original[i : i + 1] != changed[i : i + 1]
        assert ("wi-a" in top_marks) == differs and ("wi-b" in bottom_marks) == differs
        assert ("wi-prompt" in top_marks) == (i < 7) == ("wi-prompt" in bottom_marks)
        assert ("wi-first" in top_marks) == (i == first)
        assert ("wi-mark" in top_marks) == (i == 6)
    assert f"They part at character {first} (chosen at step {first - 1})" in fragment
    assert fragment.count('class="wi-block"') == math.ceil(len(original) / 16)


def test_aligned_texts_are_escaped_and_a_forced_character_is_outlined():
    fragment = wf.aligned_html("ab<b>&", "ab<i>&", 2, forced=3, labels=("original", "branch"))
    rows = fragment.split("</style>")[1]
    assert "<b>" not in rows and "<i>" not in rows and "&lt;" in rows and "&gt;" in rows and "&amp;" in rows
    top, bottom = parsed_rows(fragment)
    assert "".join(c for c, _ in top) == "ab<b>&" and "".join(c for c, _ in bottom) == "ab<i>&"
    assert [i for i, (_, marks) in enumerate(bottom) if "wi-forced" in marks] == [3]
    assert not any("wi-forced" in marks for _, marks in top)
    same = wf.aligned_html("same text", "same text", 4)
    assert "The two texts are the same." in same
    assert not any({"wi-a", "wi-b", "wi-first"} & marks for row in parsed_rows(same) for _, marks in row)


@pytest.fixture(scope="module")
def forced_pair(shipped):
    settings = DecodeSettings(80, 0.8, 0, 0.95, 4)
    return intervene(shipped, "ROMEO:\n", settings, Intervention(3, "hidden", 99, 0.9, 6))


def test_the_divergence_figure_shows_the_kl_and_the_kept_probability_computed_from_the_traces(forced_pair):
    original, changed = forced_pair.original, forced_pair.changed
    first = next(i for i, (a, b) in enumerate(zip(original.text, changed.text)) if a != b)
    figure = wf.divergence_figure(forced_pair, marked=6, marked_label="forcing starts")
    same_kl, same_p, other_kl, other_p = figure.data
    for bars, steps in ((same_kl, range(0, first)), (other_kl, range(first, len(original.text)))):
        expected = {}
        for t in steps:  # KL(p || q) in float64, term by term; 0 where nothing moved (a log axis has no 0)
            p, q = original.probs[t].double().tolist(), changed.probs[t].double().tolist()
            kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q) if a > 0)
            if kl != 0:
                expected[t] = kl
        assert list(bars.x) == list(expected)
        assert list(bars.y) == pytest.approx(list(expected.values()), rel=1e-6, abs=1e-12)
    assert min(same_kl.x) == 6  # nothing moved before forcing started
    kept = [float(changed.probs[t, original.tokens[t + 1]]) for t in range(len(original.text) - 1)]
    assert list(same_p.x) == list(range(first)) and list(other_p.x) == list(range(first, len(original.text) - 1))
    assert list(same_p.y) + list(other_p.y) == pytest.approx(kept, abs=1e-6)
    lines = {(shape.x0, shape.line.dash) for shape in figure.layout.shapes if shape.type == "line"}
    assert (first - 1, "dash") in lines and (5.5, None) in lines  # the step that chose it; forcing starts


def test_alternatives_are_the_most_likely_characters_at_the_step_that_chose(forced_pair):
    trace = forced_pair.original
    index = trace.prompt_len + 5
    offered = wf.alternatives(trace, index, top=6)
    probs = trace.probs[index - 1].tolist()
    expected = sorted(range(len(probs)), key=lambda i: -probs[i])[:6]
    assert [a["char"] for a in offered] == [trace.vocab[i] for i in expected]
    assert [a["p"] for a in offered] == pytest.approx([probs[i] for i in expected])
    assert [a["sampled_p"] for a in offered] == pytest.approx([float(trace.filtered[index - 1, i]) for i in expected])
    assert [a["written"] for a in offered] == [trace.vocab[i] == trace.text[index] for i in expected]
    with pytest.raises(ValueError, match="generated character"):
        wf.alternatives(trace, 3)


def test_the_settings_figure_and_texts_show_entropy_and_rank_computed_from_the_traces(shipped):
    runs = [SettingsRun(s, shipped.generate("JULIET:\n", s)) for s in
            (DecodeSettings(60, 0, 0, 1.0, 2), DecodeSettings(60, 1.0, 5, 1.0, 2), DecodeSettings(60, 1.5, 0, 0.9, 2))]
    figure = wf.settings_figure(runs)
    for n, run in enumerate(runs):
        trace = run.trace
        steps = range(trace.prompt_len - 1, len(trace.text) - 1)
        entropy = [-sum(p * math.log(p) for p in trace.filtered[t].double().tolist() if p > 0) for t in steps]
        ranks = [1 + sum(p > trace.probs[t, trace.tokens[t + 1]] for p in trace.probs[t]) for t in steps]
        assert list(figure.data[2 * n].y) == pytest.approx(entropy, abs=1e-6)
        assert list(figure.data[2 * n + 1].y) == ranks
    assert all(y == 1 for y in figure.data[1].y)  # greedy takes the most likely character every time
    fragment = wf.settings_html(runs)
    for run in runs[1:]:
        first = next(i for i, (a, b) in enumerate(zip(runs[0].trace.text, run.trace.text)) if a != b)
        assert f"parts from A at generated character {first - run.trace.prompt_len}" in fragment
    assert "A: greedy, top-k off, top-p off" in fragment and "B: temperature 1, top-k 5, top-p off" in fragment


def test_unit_names_values_and_characters_are_checked_with_clear_messages(shipped):
    assert parse_unit_name("L3 hidden 99") == (3, "hidden", 99) == parse_unit_name(" l3 u99 HIDDEN ")
    with pytest.raises(InputError, match="named like 'L3 hidden 99'"):
        parse_unit_name("layer three")
    assert forced_value("zero", "update", lambda: 0.5) == 0.0 and forced_value(" 0.25 ", "hidden", None) == 0.25
    assert forced_value("mean", "reset", lambda: 0.125) == 0.125
    with pytest.raises(InputError, match='number from 0 to 1 .*"zero", or "mean"'):
        forced_value("half", "reset", None)

    def check(**kwargs):
        args = dict(layer=3, kind="hidden", unit=99, value=0.9, from_step=6) | kwargs
        return check_intervention(shipped, **args, steps=100, mean=lambda *unit: 0.0)

    assert check() == Intervention(3, "hidden", 99, 0.9, 6)
    assert check(layer=2.0, unit="7", kind=" Update ", value="mean") == Intervention(2, "update", 7, 0.0, 6)
    for kwargs, message in [(dict(layer=0), "Layer must be a whole number from 1 to 3"),
                            (dict(unit=512), "Unit must be a whole number from 0 to 511"),
                            (dict(kind="cell"), "Kind must be one of hidden .*, reset .*, update"),
                            (dict(kind="update", value=1.5), "update gate z_t must be a number from 0 to 1"),
                            (dict(value=-1.5), "hidden state h_t must be a number from -1 to 1"),
                            (dict(value=float("nan")), "Value must be a number"),
                            (dict(from_step=100), "From step must be a whole number from 0 to 99")]:
        with pytest.raises(InputError, match=message):
            check(**kwargs)
    assert [branch_char(shipped, c) for c in ("␣", "↵", "e")] == [" ", "\n", "e"]
    for char, message in [("", "exactly one character"), ("ab", "exactly one character.*'ab'"),
                          ("ñ", "'ñ' is not in the model's vocabulary; allowed are the 65 characters")]:
        with pytest.raises(InputError, match=message):
            branch_char(shipped, char)


def test_a_browser_offset_into_the_text_becomes_a_python_index():
    from charrnn.page.whatif import python_index

    text = "a\U0001F600b\nc"  # the emoji is two UTF-16 code units in the browser, one character in Python
    assert [python_index(text, i) for i in (0, 1, 3, 4, 5)] == [0, 1, 2, 3, 4]
