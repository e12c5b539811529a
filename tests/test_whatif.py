"""Interventions and branches, checked against the GRU equations stepped by hand in float64 with the unit forced."""

import pytest
import torch

from charrnn import DecodeSettings
from charrnn.decoding.interventions import Intervention, InterventionError
from charrnn.analysis.whatif import branch, compare_settings, intervene

from conftest import ROOT
from stepwise import step_equations

PROMPT = "ROMEO:\nI will "
GREEDY = DecodeSettings(120, 0, 0, 1.0, 0)


def by_hand(model, prompt: str, new_chars: int, intervention: Intervention | None):
    """Greedy decoding, one character at a time, from the textbook equations in float64."""
    ids, values, _ = step_equations(model, model.tokenizer.encode(prompt), new_chars=new_chars,
                                    intervention=intervention)
    return model.tokenizer.decode(ids), values[0]


@pytest.mark.parametrize("kind,unit,value", [("hidden", 0, 0.9), ("update", 7, 0.0), ("reset", 100, 1.0)])
@pytest.mark.parametrize("from_step", [3, len(PROMPT) + 10])  # inside the prompt, and after it
def test_an_intervened_greedy_run_equals_the_equations_stepped_by_hand(shipped, kind, unit, value, from_step):
    layer = {"hidden": 3, "update": 2, "reset": 1}[kind]
    intervention = Intervention(layer, kind, unit, value, from_step)
    trace = shipped.generate(PROMPT, GREEDY, intervention=intervention)
    text, states = by_hand(shipped, PROMPT, GREEDY.max_new_chars, intervention)
    assert trace.text == text
    assert (trace.hidden.double() - states).abs().max() < 1e-4
    if kind == "hidden":
        assert (trace.hidden[layer - 1, from_step:, unit] == value).all()
        assert (trace.hidden[layer - 1, :from_step, unit] != value).all()
    else:  # the recorded gate is the forced one from from_step on
        gate = trace.update_gate if kind == "update" else trace.reset_gate
        assert (gate[layer - 1, from_step:, unit] == value).all() and (gate[layer - 1, :from_step, unit] != value).all()


def test_intervene_returns_both_runs_and_where_they_part(shipped):
    settings = DecodeSettings(200, 0.8, 0, 0.95, 3)
    pair = intervene(shipped, "ROMEO:", settings, Intervention(3, "hidden", 0, 0.9, 6))
    assert pair.original.text == shipped.generate("ROMEO:", settings).text
    summary = pair.summary()
    first = summary["first_difference"]
    assert summary["with_prompt"] and first is not None and first["step"] == first["char_index"] - 1
    assert pair.original.text[: first["char_index"]] == pair.changed.text[: first["char_index"]]
    assert pair.original.text[first["char_index"]] != pair.changed.text[first["char_index"]]
    kl = pair.divergence()
    assert (kl[:6] == 0).all() and kl[6:].max() > 0  # nothing changes before the intervention starts


@pytest.mark.parametrize("args,message", [
    ((4, "hidden", 0, 0.5), "layer must be a whole number from 1 to 3"),
    ((0, "hidden", 0, 0.5), "layer must be"),
    ((1, "hidden", 512, 0.5), "unit must be a whole number from 0 to 511"),
    ((1, "update", 5, 1.5), "forced update gate z_t must be a number from 0 to 1"),
    ((1, "hidden", 5, -1.5), "forced hidden state h_t must be a number from -1 to 1"),
    ((1, "cell", 5, 0.5), "kind must be one of hidden, reset, update"),
    ((1, "reset", 5, float("nan")), "must be a number from 0 to 1"),
])
def test_bad_interventions_are_refused_with_what_is_allowed(shipped, args, message):
    with pytest.raises(InterventionError, match=message):
        shipped.generate("ROMEO:", DecodeSettings(10), intervention=Intervention(*args))


def test_branching_on_the_character_already_there_changes_nothing(shipped):
    settings = DecodeSettings(150, 0.9, 0, 0.95, 8)
    original = shipped.generate("KING:", settings)
    step = 40
    pair = branch(shipped, "KING:", settings, step, original.generated[step])
    assert pair.changed.text == original.text and torch.equal(pair.changed.hidden, original.hidden)


def test_a_branch_keeps_the_text_before_it_and_the_length(shipped):
    settings = DecodeSettings(150, 0.9, 0, 0.95, 8)
    pair = branch(shipped, "KING:", settings, 40, "Z")
    assert pair.changed.generated[:40] == pair.original.generated[:40]
    assert pair.changed.generated[40] == "Z" and len(pair.changed.text) == len(pair.original.text)
    assert pair.first_difference == len("KING:") + 40


def test_a_greedy_branch_is_the_greedy_continuation_of_the_new_text(shipped):
    pair = branch(shipped, "ROMEO:\n", GREEDY, 30, "q")
    prefix = "ROMEO:\n" + pair.original.generated[:30] + "q"
    continued = shipped.generate(prefix, DecodeSettings(GREEDY.max_new_chars - 31, 0, 0, 1.0, 0))
    assert pair.changed.text == continued.text


def test_after_a_branch_the_draws_are_the_same_ones():
    """With the bigram, the distribution depends on the last character alone: wherever the two runs read the
    same character after the branch, the same draw must pick the same next character."""
    from charrnn.models.bigram import BigramLanguageModel

    bigram = BigramLanguageModel.from_pretrained(ROOT / "weights" / "bigram", device="cpu")
    settings = DecodeSettings(400, 1.0, 0, 1.0, 21)
    pair = branch(bigram, "ROMEO:", settings, 10, "x")
    a, b, start = pair.original.text, pair.changed.text, len("ROMEO:") + 11
    same_reads = [t for t in range(start, len(a) - 1) if a[t] == b[t]]
    assert len(same_reads) > 20
    assert all(a[t + 1] == b[t + 1] for t in same_reads)


@pytest.mark.parametrize("step,char,message", [(150, "a", "step must be a whole number from 0 to 149"),
                                               (-1, "a", "step must be"), (3, "ab", "exactly one character"),
                                               (3, "ñ", "outside the model's vocabulary")])
def test_bad_branches_are_refused(shipped, step, char, message):
    with pytest.raises(ValueError, match=message):
        branch(shipped, "KING:", DecodeSettings(150, 0.9, 0, 0.95, 8), step, char)


def test_compare_settings_shares_the_draws_and_measures_entropy_and_rank(shipped):
    runs = compare_settings(shipped, "ROMEO:", [DecodeSettings(200, 1.0, 0, 1.0, 4), DecodeSettings(200, 0, 0, 1.0, 4),
                                                DecodeSettings(200, 1.0, 0, 0.5, 4)])
    free, greedy, nucleus = runs
    assert (greedy.chosen_rank() == 1).all() and (greedy.entropy()[5:-1] == 0).all()
    assert nucleus.entropy().mean() < free.entropy().mean()
    assert torch.allclose(free.entropy(), free.raw_entropy(), atol=1e-5)
    probs = free.trace.probs[5:-1]
    chosen = free.trace.tokens[6:]
    ranks = [(row > row[c]).sum().item() + 1 for row, c in zip(probs, chosen)]
    assert free.chosen_rank().tolist() == ranks
    with pytest.raises(ValueError, match="share their length and seed"):
        compare_settings(shipped, "ROMEO:", [DecodeSettings(200, seed=1), DecodeSettings(200, seed=2)])
