"""The one decode loop: batch invariance, the product layouts, rows joining and leaving."""

import pytest
import torch

from charrnn import DecodeSettings
from charrnn.decoding.loop import DecodeLoop, DecodeRequest, step_weights
from charrnn.decoding import layout as layouts
from charrnn.decoding.layout import (Layout, ThreadSwitch, base_candidates, batch_invariant, candidates, choose_layout,
                                     probe, same_bits)
from charrnn.decoding.sampling import RowSettings, filter_probs

from conftest import make_tiny
from nn_gru_reference import TOL, nn_gru_differences
from stepwise import reference_start

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


def eligible_layouts(model):
    weights = step_weights(model)
    return [layout for layout in candidates(CPU) if batch_invariant(weights, layout, CPU)]


def one_per_family(model) -> list[Layout]:
    """One eligible layout of each kernel family on this machine (the first found), whichever the tuner chose."""
    found = {}
    for layout in eligible_layouts(model):
        found.setdefault(layout.method if layout.method not in ("addmm", "bmm", "stacked") else "blas", layout)
    return list(found.values())


@pytest.fixture(scope="module")
def families(shipped):
    return one_per_family(shipped)


@pytest.mark.parametrize("batch_size", [1, 7, 30])
def test_a_request_writes_the_same_alone_and_in_a_batch_with_rows_joining_and_leaving(shipped, families, batch_size):
    """For every kernel family eligible here, bit for bit."""
    assert families, "no eligible layout on this machine"
    probe_settings = DecodeSettings(200, 0.8, 0, 0.95, 5)
    for layout in families:
        alone = run_alone(shipped, request(shipped, "ROMEO:\n", probe_settings), layout)
        loop = DecodeLoop(shipped, layout)
        others = [request(shipped, PROMPTS[i % 6], MIXED[i % 6]) for i in range(batch_size - 1)]
        first, later = others[: len(others) // 2], others[len(others) // 2 :]
        rows = [loop.add(r) for r in first]
        with torch.inference_mode():
            for _ in range(7):  # the probe joins a batch already under way
                loop.step()
            probe_row = loop.add(request(shipped, "ROMEO:\n", probe_settings))
            steps, most = 0, 0
            while not probe_row.done:
                loop.step()
                steps += 1
                most = max(most, len(loop.rows))
                if steps == 25:  # more join mid-run; rows with short runs leave before the probe is done
                    rows += [loop.add(r) for r in later]
                if steps == 40 and rows:
                    loop.remove(rows[0])  # one leaves early (a visitor who closed the tab)
        assert_same_trace(probe_row.trace(shipped, loop.weights), alone)
        assert most == batch_size and probe_row not in loop.rows, layout


def test_the_library_writes_with_the_layout_the_machine_chose(shipped):
    layout, _ = choose_layout(step_weights(shipped), CPU)
    settings = DecodeSettings(150, 0.8, 0, 0.95, 9)
    assert_same_trace(shipped.generate("KING:", settings), run_alone(shipped, request(shipped, "KING:", settings),
                                                                      layout))


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


def test_the_chosen_layout_is_eligible_and_fixed_for_the_process(shipped):
    layout, report = choose_layout(step_weights(shipped), CPU)
    assert layout in eligible_layouts(shipped)
    assert choose_layout(step_weights(shipped), CPU)[0] is layout
    assert str(layout) in report["candidates"] and report["library"] == layout.library


def test_layouts_of_the_same_bits_write_the_same_text(shipped):
    """Eligible layouts whose probe rows agree (a kernel family's layouts, and each layout's thread twin) write
    the same whole run, bit for bit; the tuner's choice among them changes the speed, never the result."""
    weights = step_weights(shipped)
    classes = {}
    for layout in eligible_layouts(shipped):
        (state, logits), = probe(weights, layout, CPU, (1,))
        key = (state.numpy().tobytes(), logits.numpy().tobytes())
        classes.setdefault(key, []).append(layout)
    settings = DecodeSettings(600, 0.9, 0, 0.95, 3)
    assert any(len(members) >= 2 for members in classes.values())
    for members in classes.values():
        traces = [run_alone(shipped, request(shipped, "KING:", settings), layout) for layout in members[:3]]
        for trace in traces[1:]:
            assert_same_trace(trace, traces[0])


@pytest.fixture(scope="module")
def read_by_equations(shipped):
    """The start of the reference text and every layer's h_t, r_t, z_t stepped in float64 from the equations."""
    return reference_start(shipped)


@pytest.mark.parametrize("layout", base_candidates() + [Layout("stacked", 8, 2, 1), Layout("gemv", 1, 1, 1)]
                         + ([Layout("onednn", 2, 1, 1)] if layouts.onednn_available() else []), ids=str)
def test_every_layout_tracks_nn_gru_and_the_equations_over_thousands_of_steps(shipped, read_by_equations, layout):
    """Any layout the tuner (or CHARRNN_LAYOUT) can pick, forced: 1,500 characters read keep every state and gate
    within TOL of the float64 equations, and a 2,000-character run within 2 TOL of nn.GRU on its own text (nn.GRU
    is float32 too, MKL's rounding: two computations each within TOL of the equations may be 2 TOL apart; oneDNN's
    states drift up to 1.06e-5 from it after 2,000 steps on an AMD EPYC)."""
    text, expected = read_by_equations
    read = run_alone(shipped, request(shipped, text, DecodeSettings(0)), layout)
    found = torch.stack([read.hidden, read.reset_gate, read.update_gate]).double()
    assert (found - expected).abs().max().item() <= TOL
    trace = run_alone(shipped, request(shipped, "ROMEO:\n", DecodeSettings(2000, 0.8, 0, 0.95, 1)), layout)
    differences = nn_gru_differences(shipped, trace, layers=[2])
    assert len(differences) == 3 and all(d <= 2 * TOL for d in differences.values()), differences


def test_a_forced_layout_whose_rows_depend_on_the_batch_is_refused(monkeypatch, shipped):
    def batch_dependent(layout, x, matrix, out):  # what a kernel that rounds differently per batch size does
        torch.addmm(matrix.bias, x, matrix.weight.t(), out=out)
        return out.add_(x.shape[0] * 1e-6)

    monkeypatch.setitem(layouts.PRODUCTS, "reduce", batch_dependent)
    monkeypatch.setenv("CHARRNN_LAYOUT", "reduce")
    monkeypatch.setattr(layouts, "_chosen", {})
    with pytest.raises(ValueError, match="CHARRNN_LAYOUT asks for reduce, whose rows.* depend on the batch"):
        choose_layout(step_weights(shipped), CPU)


@pytest.mark.parametrize("layout", [Layout("addmm", 8, 2), Layout("bmm", 4, 4), Layout("addmm", 1, 1),
                                    Layout("stacked", 4, 2), Layout("gemv", 1, 1), Layout("reduce", 1, 1)], ids=str)
def test_layouts_compute_the_products_of_padded_rows(layout):
    model = make_tiny(hidden_size=24, num_layers=3)
    weights = step_weights(model)
    rows = 11
    x = torch.randn(layout.padded_rows(rows), 24)
    out = torch.empty(x.shape[0], 72)
    matrix = weights.w_hh[1]
    layout.product(x, matrix, out)
    assert torch.allclose(out, x @ matrix.weight.T + matrix.bias, atol=1e-6)
    h = torch.randn(3, layout.padded_rows(rows), 24)
    every = torch.empty(3, h.shape[1], 72)
    layout.hidden_products(h, weights.w_hh, weights.stacked_hh, every)
    w_hh, b_hh = weights.stacked_hh
    assert torch.allclose(every, h @ w_hh.transpose(1, 2) + b_hh[:, None], atol=1e-6)
    assert layout.padded_rows(rows) >= rows and layout.padded_rows(1) >= layout.min_rows


def test_a_forced_layout_comes_from_the_environment(monkeypatch, shipped):
    monkeypatch.setenv("CHARRNN_LAYOUT", "gemv/1t")
    monkeypatch.setattr("charrnn.decoding.layout._chosen", {})
    assert choose_layout(step_weights(shipped), CPU)[0] == Layout("gemv", 1, 1, 1)
    assert Layout.parse("bmm/4/4") == Layout("bmm", 4, 4) and Layout.parse("onednn/8") == Layout("onednn", 8, 1)
    for layout in (Layout("addmm", 8, 2, 1), Layout("onednn", 2, 1, 1), Layout("reduce", 1, 1)):
        assert Layout.parse(str(layout)) == layout
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
    """The tuner pairs the chosen layout with its twin on the other thread count only where the two give the same
    bits here; a run that switches between them writes what the library writes. Where this machine offers no twin,
    none is used."""
    weights = step_weights(shipped)
    layout, report = choose_layout(weights, CPU)
    switch = layouts.thread_switch(weights, CPU)
    if report["twin"] is None:
        assert switch.options == [layout]
        return
    twin = Layout.parse(report["twin"])
    assert switch.options == [layout, twin] and same_bits(weights, twin, layout, CPU)
    settings = DecodeSettings(300, 0.8, 0, 0.95, 12)
    loop = DecodeLoop(shipped, layout)
    loop.threads = ThreadSwitch(layout, twin, every=6, trial=2)  # a trial every six steps
    row = loop.add(request(shipped, "ROMEO:", settings))
    with torch.inference_mode():
        while not row.done:
            loop.step()
    assert_same_trace(row.trace(shipped, loop.weights), shipped.generate("ROMEO:", settings))
