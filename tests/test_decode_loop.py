"""The one decode loop: batch invariance, the product layouts, rows joining and leaving."""

import pytest
import torch

from charrnn import DecodeSettings
from charrnn.decoding.loop import DecodeLoop, DecodeRequest, step_weights
from charrnn.decoding.layout import REFERENCE, Layout, ThreadSwitch, base_candidates, candidates, choose_layout, same_bits
from charrnn.decoding.sampling import RowSettings, filter_probs

from conftest import make_tiny
from nn_gru_reference import TOL, nn_gru_differences

CPU = torch.device("cpu")
MIXED = [DecodeSettings(120, 0.8, 0, 0.95, 1), DecodeSettings(90, 0, 0, 1.0, 2), DecodeSettings(60, 1.2, 5, 1.0, 3),
         DecodeSettings(150, 1.0, 0, 1.0, 4), DecodeSettings(40, 0.7, 10, 0.8, 5), DecodeSettings(80, 1.5, 3, 0.9, 6)]
PROMPTS = ["ROMEO:\n", "JULIET:\nO ", "KING:", "First Citizen:\nWe are ", "A", "To be, or not to be"]


def request(model, prompt: str, settings: DecodeSettings) -> DecodeRequest:
    return DecodeRequest(tuple(model.tokenizer.encode(prompt)), settings)


def run_alone(model, req: DecodeRequest, layout: Layout | None = None):
    loop = DecodeLoop(model, layout)
    row = loop.add(req)
    with torch.inference_mode():
        while not row.done:
            loop.step()
    return row.trace(model, loop.weights)


def assert_same_trace(a, b):
    assert a.text == b.text
    for name in ("tokens", "probs", "filtered", "hidden", "reset_gate", "update_gate"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_the_library_decodes_through_the_loop_and_gets_the_same_trace(shipped):
    settings = DecodeSettings(150, 0.8, 0, 0.95, 11)
    assert_same_trace(shipped.generate("ROMEO:", settings), run_alone(shipped, request(shipped, "ROMEO:", settings)))


@pytest.mark.parametrize("batch_size", [1, 7, 30])
def test_a_request_writes_the_same_alone_and_in_a_batch_with_rows_joining_and_leaving(shipped, batch_size):
    probe_settings = DecodeSettings(200, 0.8, 0, 0.95, 5)
    alone = shipped.generate("ROMEO:\n", probe_settings)
    loop = DecodeLoop(shipped)
    others = [request(shipped, PROMPTS[i % 6], MIXED[i % 6]) for i in range(batch_size - 1)]
    first, later = others[: len(others) // 2], others[len(others) // 2 :]
    rows = [loop.add(r) for r in first]
    with torch.inference_mode():
        for _ in range(7):  # the probe joins a batch already under way
            loop.step()
        probe = loop.add(request(shipped, "ROMEO:\n", probe_settings))
        steps, most = 0, 0
        while not probe.done:
            loop.step()
            steps += 1
            most = max(most, len(loop.rows))
            if steps == 25:  # more join mid-run; rows with short runs leave before the probe is done
                rows += [loop.add(r) for r in later]
            if steps == 40 and rows:
                loop.remove(rows[0])  # one leaves early (a visitor who closed the tab)
    assert_same_trace(probe.trace(shipped, loop.weights), alone)
    assert most == batch_size and probe not in loop.rows


def test_rows_with_different_settings_filter_as_they_would_alone():
    logits = torch.randn(len(MIXED) * 3, 65, generator=torch.Generator().manual_seed(0)) * 3
    settings = MIXED * 3
    together = filter_probs(logits, RowSettings(settings, 65))
    for i, s in enumerate(settings):
        assert torch.equal(together[i], filter_probs(logits[i : i + 1], s)[0]), s


def test_a_removed_row_leaves_at_the_next_step_and_the_others_go_on(shipped):
    loop = DecodeLoop(shipped)
    a, b = (loop.add(request(shipped, "ROMEO:", s)) for s in MIXED[:2])
    with torch.inference_mode():
        for _ in range(10):
            loop.step()
        loop.remove(a)
        assert loop.rows == [b]
        while not b.done:
            loop.step()
    assert a.t == 10 and loop.rows == []
    assert b.trace(shipped, loop.weights).text == shipped.generate("ROMEO:", MIXED[1]).text


def eligible_layouts(model):
    weights = step_weights(model)
    return [layout for layout in candidates(CPU) if same_bits(weights, layout, REFERENCE, CPU)]


def test_the_chosen_layout_is_eligible_and_fixed_for_the_process(shipped):
    layout, report = choose_layout(step_weights(shipped), CPU)
    assert layout in eligible_layouts(shipped)
    assert choose_layout(step_weights(shipped), CPU)[0] is layout
    assert str(REFERENCE) in report["candidates"]


def test_every_eligible_layout_writes_the_same_text_with_the_same_bits(shipped):
    settings = DecodeSettings(600, 0.9, 0, 0.95, 3)
    layouts = eligible_layouts(shipped)
    assert REFERENCE in layouts and len(layouts) >= 2
    traces = [run_alone(shipped, request(shipped, "KING:", settings), layout) for layout in layouts]
    for trace in traces[1:]:
        assert_same_trace(trace, traces[0])


@pytest.mark.parametrize("layout", base_candidates() + [Layout("stacked", 8, 2, 1)], ids=str)
def test_every_layout_tracks_nn_gru_over_thousands_of_steps(shipped, layout):
    """Any layout the tuner (or CHARRNN_LAYOUT) can pick keeps states and gates within TOL of nn.GRU (the
    one-thread variants of eligible layouts have the same bits as their two-thread twins: same_bits)."""
    trace = run_alone(shipped, request(shipped, "ROMEO:\n", DecodeSettings(2000, 0.8, 0, 0.95, 1)), layout)
    differences = nn_gru_differences(shipped, trace, layers=[2])
    assert len(differences) == 3 and all(d <= TOL for d in differences.values()), differences


@pytest.mark.parametrize("layout", [Layout("addmm", 8, 2), Layout("bmm", 4, 4), Layout("addmm", 1, 1),
                                    Layout("stacked", 4, 2)], ids=str)
def test_layouts_compute_the_products_of_padded_rows(layout):
    model = make_tiny(hidden_size=24, num_layers=3)
    weights = step_weights(model)
    rows = 11
    x = torch.randn(layout.padded_rows(rows), 24)
    out = torch.empty(x.shape[0], 72)
    layout.product(x, weights.w_hh[1], weights.b_hh[1], out)
    assert torch.allclose(out, x @ weights.w_hh[1].T + weights.b_hh[1], atol=1e-6)
    h = torch.randn(3, layout.padded_rows(rows), 24)
    every = torch.empty(3, h.shape[1], 72)
    layout.hidden_products(h, weights.w_hh, weights.b_hh, every)
    assert torch.allclose(every, h @ weights.w_hh.transpose(1, 2) + weights.b_hh[:, None], atol=1e-6)
    assert layout.padded_rows(rows) >= rows and layout.padded_rows(1) >= layout.min_rows


def test_a_forced_layout_comes_from_the_environment(monkeypatch, shipped):
    monkeypatch.setenv("CHARRNN_LAYOUT", "bmm/4/4/1t")
    monkeypatch.setattr("charrnn.decoding.layout._chosen", {})
    assert choose_layout(step_weights(shipped), CPU)[0] == Layout("bmm", 4, 4, 1)
    assert Layout.parse("bmm/4/4") == Layout("bmm", 4, 4)
    assert Layout.parse(str(Layout("addmm", 8, 2, 1))) == Layout("addmm", 8, 2, 1)
    with pytest.raises(ValueError, match="method/group/min_rows"):
        Layout.parse("fast")
    with pytest.raises(ValueError, match="min_rows must equal group"):
        Layout("bmm", 4, 2)


def test_the_bigram_writes_through_the_same_loop_with_no_gates():
    from charrnn.models.bigram import BigramLanguageModel

    from conftest import ROOT

    bigram = BigramLanguageModel.from_pretrained(ROOT / "weights" / "bigram", device="cpu")
    greedy = bigram.generate("ROMEO:", DecodeSettings(40, 0, 0, 1.0, 0))
    table = bigram.token_embedding_table.weight.detach()
    for t in range(5, len(greedy.text) - 1):  # greedy: each character is the argmax of the last one's row
        assert greedy.tokens[t + 1] == table[greedy.tokens[t]].argmax()
    sampled = bigram.generate("ROMEO:", DecodeSettings(300, 1.0, 5, 1.0, 2))
    steps = torch.arange(5, len(sampled.text) - 1)
    assert (sampled.filtered[steps, sampled.tokens[steps + 1]] > 0).all()
    assert torch.allclose(sampled.probs, torch.softmax(table[sampled.tokens], -1))
    assert sampled.hidden.shape == sampled.reset_gate.shape == (0, len(sampled.text), 0)
    loop = DecodeLoop(bigram)  # beside other rows, the same text
    rows = [loop.add(request(bigram, p, s)) for p, s in zip(PROMPTS, MIXED)]
    probe = loop.add(request(bigram, "ROMEO:", DecodeSettings(300, 1.0, 5, 1.0, 2)))
    with torch.inference_mode():
        while not probe.done:
            loop.step()
    assert probe.trace(bigram, loop.weights).text == sampled.text and rows


def test_the_thread_switch_tries_the_twin_now_and_then_and_keeps_the_faster():
    two, one = Layout("addmm", 8, 2), Layout("addmm", 8, 2, 1)
    for twin_seconds, kept in ((0.5, one), (2.0, two)):
        switch = ThreadSwitch(two, one, every=8, trial=2)
        used = []
        for _ in range(16):
            layout = switch.layout
            used.append(layout)
            switch.record(twin_seconds if layout == one else 1.0)
        assert used[6:8] == [one, one] and switch.layout == kept  # the trial steps, then the choice
    assert ThreadSwitch(two, None).layout == two


def test_switching_threads_mid_run_writes_the_same_text(shipped):
    two, one = Layout("addmm", 8, 2), Layout("addmm", 8, 2, 1)
    assert same_bits(step_weights(shipped), one, two, CPU)
    settings = DecodeSettings(300, 0.8, 0, 0.95, 12)
    loop = DecodeLoop(shipped, two)
    loop.threads = ThreadSwitch(two, one, every=6, trial=2)  # a trial every six steps
    row = loop.add(request(shipped, "ROMEO:", settings))
    with torch.inference_mode():
        while not row.done:
            loop.step()
    assert_same_trace(row.trace(shipped, loop.weights), shipped.generate("ROMEO:", settings))
