"""Gates by context: the contexts' offsets by hand, their means against the stepwise GRU, and the verdict rule."""

import re

import numpy as np
import pytest

from charrnn.analysis.atlas import ATLAS_FILE, REFERENCE_FILE, build_atlas, load_atlas
from charrnn.analysis.contexts import CLAIMS, CONTEXTS, context_offsets, gates_by_context, gates_by_context_of

from conftest import SHIPPED, make_tiny
from stepwise import stepwise_values

TEXT = (SHIPPED / REFERENCE_FILE).read_text(encoding="utf-8")[:1000]


def test_context_offsets_by_hand():
    text = "KENT:\nNo, not I.\nSo go.\n\nLEAR:\nNo.\n"
    found = {name: at.tolist() for name, at in context_offsets(text).items()}
    # KENT: at 0-4, "No, not I." at 6-15, "So go." at 17-22, a blank line at 24, LEAR: at 25-29, "No." at 31-33
    assert found["new speaker"] == [0, 25]
    assert found["other line start"] == [6, 17, 31]  # not the blank line
    assert found["word start"] == [0, 6, 10, 14, 17, 20, 25, 31]
    assert found["inside a word"] == [1, 2, 3, 7, 11, 12, 18, 21, 26, 27, 28, 32]
    assert found["after a word"] == [4, 8, 13, 15, 19, 22, 29, 33]
    assert found['after "not"/"no"'] == [8, 13, 33]  # "No," "not " "No."
    assert found["after another word"] == [4, 15, 19, 22, 29]
    assert set(found) == set(CONTEXTS)


def direct_contexts(text):
    """The same contexts by plain loops, for the comparison below."""
    letter = [c.isalpha() for c in text]
    out = {name: [] for name in CONTEXTS}
    lines = text.split("\n")
    line_start, speaker_starts, other_starts = 0, set(), set()
    for line in lines:
        if line_start < len(text):
            (speaker_starts if re.fullmatch(r"[A-Z][A-Za-z ]*:", line) else other_starts if line else set()).add(line_start)
        line_start += len(line) + 1
    for i, c in enumerate(text):
        before = i > 0 and letter[i - 1]
        if letter[i]:
            out["inside a word" if before else "word start"].append(i)
        elif before:
            out["after a word"].append(i)
            j = i
            while j > 0 and letter[j - 1]:
                j -= 1
            out['after "not"/"no"' if text[j:i].lower() in ("not", "no") else "after another word"].append(i)
    out["new speaker"], out["other line start"] = sorted(speaker_starts), sorted(other_starts)
    return out


def test_context_means_equal_the_stepwise_gates():
    model = make_tiny(hidden_size=12, num_layers=3)
    values = stepwise_values(model, TEXT)
    atlas = build_atlas(model, TEXT, chunk_size=256)
    result = gates_by_context_of(atlas)
    direct = direct_contexts(TEXT)
    for row in result["contexts"]:
        at = direct[row["context"]]
        assert row["count"] == len(at)
        for gate, k in (("reset", 1), ("update", 2)):
            for layer in range(3):
                expected = values[k, layer, at].mean().item()  # the mean over the offsets and the layer's units
                assert row[gate][layer]["mean"] == pytest.approx(expected, abs=1e-6)
    for claim in result["claims"]:
        for row in claim["layers"]:
            a = values[1 if claim["gate"] == "reset" else 2, row["layer"] - 1][direct[claim["context"]]].mean(-1)
            b = values[1 if claim["gate"] == "reset" else 2, row["layer"] - 1][direct[claim["baseline"]]].mean(-1)
            assert row["difference"] == pytest.approx((a.mean() - b.mean()).item(), abs=1e-6)
            pooled = ((len(a) - 1) * a.var() + (len(b) - 1) * b.var()) / (len(a) + len(b) - 2)
            assert row["d"] == pytest.approx(((a.mean() - b.mean()) / pooled.sqrt()).item(), rel=1e-4)


def synthetic(shift_inside_word):
    """A text and gate means where the reset gate is higher inside words by `shift_inside_word`, plus noise."""
    text = "KING:\nWe go not there, my lord, nor no man.\n\n" * 60
    rng = np.random.default_rng(1)
    inside = np.zeros(len(text))
    inside[context_offsets(text)["inside a word"]] = 1
    reset = 0.5 + shift_inside_word * inside + 0.02 * rng.standard_normal(len(text))
    update = 0.5 + 0.02 * rng.standard_normal(len(text))
    return text, np.stack([reset, reset]), np.stack([update, update])


@pytest.mark.parametrize("shift,verdict", [(0.05, "borne out"), (-0.05, "contradicted"), (0.0, "no clear difference")])
def test_verdict_rule(shift, verdict):
    text, reset, update = synthetic(shift)
    result = gates_by_context(text, reset, update)
    claim = next(c for c in result["claims"] if c["gate"] == "reset" and c["context"] == "inside a word")
    for row in claim["layers"]:
        assert row["verdict"] == verdict
        low, high = row["ci"]
        assert low <= row["difference"] <= high
        assert row["difference"] == pytest.approx(shift, abs=0.005)
    assert claim["summary"] == f"{verdict} in layers 1, 2"
    # the update gate carries no signal in this text: every update claim finds no clear difference
    assert all(r["verdict"] == "no clear difference" for c in result["claims"] if c["gate"] == "update"
               for r in c["layers"])
    assert gates_by_context(text, reset, update) == result  # the bootstrap is seeded


def test_gate_means_must_fit_the_text():
    with pytest.raises(ValueError, match="must be \\[layers, 5\\]"):
        gates_by_context("abcde", np.zeros((2, 4)), np.zeros((2, 4)))


def test_shipped_claims_table_is_complete(shipped):
    text = (SHIPPED / REFERENCE_FILE).read_text(encoding="utf-8")
    result = gates_by_context_of(load_atlas(SHIPPED / ATLAS_FILE, shipped, text))
    assert len(result["claims"]) == len(CLAIMS)
    for claim in result["claims"]:
        assert [r["layer"] for r in claim["layers"]] == [1, 2, 3]
        assert all(r["verdict"] in ("borne out", "contradicted", "no clear difference") for r in claim["layers"])
        assert min(claim["counts"]) >= 100
    counts = {row["context"]: row["count"] for row in result["contexts"]}
    assert counts["new speaker"] == len(re.findall(r"(?m)^[A-Z][A-Za-z ]*:$", text))
