"""Decoding semantics: the filtering rule, seeded sampling, determinism and what the trace records."""

import math
import threading

import pytest
import torch

from charrnn import DecodeSettings, UnknownCharactersError, filter_probs
from charrnn.decoding.sampling import race, race_noise

from conftest import make_tiny
from threads import in_threads


def reference_filter(logits: list[float], temperature: float, top_k: int, top_p: float) -> list[float]:
    """The rule written out plainly, in float64: temperature -> top-k -> top-p, renormalised."""
    n = len(logits)
    if temperature == 0:
        best = max(range(n), key=lambda i: logits[i])
        return [1.0 if i == best else 0.0 for i in range(n)]
    top = max(logits)
    weights = [math.exp((x - top) / temperature) for x in logits]
    probs = [w / sum(weights) for w in weights]
    order = sorted(range(n), key=lambda i: -probs[i])
    kept = order[:top_k] if top_k else order
    if top_p < 1:
        mass = sum(probs[i] for i in kept)
        chosen, cumulative = [], 0.0
        for i in kept:
            chosen.append(i)
            cumulative += probs[i] / mass
            if cumulative >= top_p:
                break
        kept = chosen
    total = sum(probs[i] for i in kept)
    return [probs[i] / total if i in kept else 0.0 for i in range(n)]


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.9), (0.8, 10, 0.5), (2.0, 3, 0.99), (0.5, 1, 1.0),
    (0, 0, 1.0), (0, 4, 0.3), (1.0, 0, 0.05), (1.0, 200, 1.0),
])
def test_filter_matches_the_rule(temperature, top_k, top_p):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 40, generator=generator) * 3
    settings = DecodeSettings(temperature=temperature, top_k=top_k, top_p=top_p)
    filtered = filter_probs(logits, settings)
    for row, out in zip(logits.tolist(), filtered):
        expected = torch.tensor(reference_filter(row, temperature, top_k, top_p), dtype=torch.float32)
        assert torch.equal(out > 0, expected > 0), "the kept set differs"
        assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(filtered.sum(-1), torch.ones(20), atol=1e-6)


def test_top_k_comes_before_top_p():
    # probs (.5, .3, .1, .1): top-k 2 renormalises to (.625, .375), so top-p .6 keeps only the first;
    # top-p first would keep two (.5 < .6).
    logits = torch.tensor([0.5, 0.3, 0.1, 0.1]).log()
    filtered = filter_probs(logits, DecodeSettings(top_k=2, top_p=0.6))
    assert filtered.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_top_p_keeps_the_crossing_token_and_always_the_top_one():
    logits = torch.tensor([0.4, 0.35, 0.25]).log()
    assert (filter_probs(logits, DecodeSettings(top_p=0.5)) > 0).tolist() == [True, True, False]
    assert (filter_probs(logits, DecodeSettings(top_p=0.75)) > 0).tolist() == [True, True, False]
    assert (filter_probs(logits, DecodeSettings(top_p=0.76)) > 0).tolist() == [True, True, True]
    assert (filter_probs(logits, DecodeSettings(top_p=1e-9)) > 0).tolist() == [True, False, False]


def test_temperature_zero_is_argmax_and_temperature_sharpens():
    logits = torch.tensor([1.0, 3.0, 2.0])
    assert filter_probs(logits, DecodeSettings(temperature=0)).tolist() == [0.0, 1.0, 0.0]
    cold = filter_probs(logits, DecodeSettings(temperature=0.5))
    hot = filter_probs(logits, DecodeSettings(temperature=2.0))
    assert cold[1] > torch.softmax(logits, -1)[1] > hot[1]


def test_race_samples_from_the_distribution():
    p = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    draws = 200_000
    noise = torch.empty(draws, 5).exponential_(generator=torch.Generator().manual_seed(3))
    picks = race(p.expand(draws, 5), noise)
    freq = torch.bincount(picks, minlength=5).float() / draws
    assert freq[4] == 0, "a filtered-out character was picked"
    assert (freq - p).abs().max() < 0.005


def test_noise_depends_on_the_seed_alone():
    a = race_noise(DecodeSettings(seed=7), 10, 65)
    torch.manual_seed(123)
    b = race_noise(DecodeSettings(seed=7, temperature=0.3), 10, 65)
    assert torch.equal(a, b)
    assert not torch.equal(a, race_noise(DecodeSettings(seed=8), 10, 65))
    assert torch.equal(race_noise(DecodeSettings(seed=7), 20, 65)[:10], a)


@pytest.mark.parametrize("field,value,message", [
    ("max_new_chars", -1, "max_new_chars"), ("max_new_chars", 2.5, "max_new_chars"),
    ("temperature", -0.1, "temperature"), ("temperature", float("nan"), "temperature"),
    ("temperature", 1000, "temperature"), ("top_k", -1, "top_k"), ("top_k", 1.5, "top_k"),
    ("top_p", 0, "top_p"), ("top_p", 1.01, "top_p"), ("seed", -1, "seed"), ("seed", 2**64, "seed"),
    ("seed", True, "seed"),
])
def test_settings_out_of_range_are_refused_with_the_allowed_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        DecodeSettings(**{field: value})


def test_trace_has_the_documented_shapes(shipped):
    settings = DecodeSettings(max_new_chars=50, temperature=0.8, top_k=0, top_p=0.95, seed=1)
    trace = shipped.generate("ROMEO:", settings)
    n, v, h = len(trace.text), len(shipped.vocab), shipped.hidden_size
    assert trace.text.startswith("ROMEO:") and n == 56 and trace.prompt_len == 6
    assert trace.probs.shape == trace.filtered.shape == (n, v)
    assert trace.reset_gate.shape == trace.update_gate.shape == trace.hidden.shape == (shipped.num_layers, n, h)
    assert all(t.dtype == torch.float32 for t in (trace.probs, trace.filtered, trace.hidden))
    assert trace.generated == trace.text[6:]
    assert len(shipped.vocab) == 65


def test_probs_are_the_models_softmax_at_temperature_one(shipped):
    trace = shipped.generate("JULIET:", DecodeSettings(max_new_chars=120, temperature=1.3, top_k=7, seed=4))
    with torch.no_grad():
        logits, _ = shipped(trace.tokens[None])
    assert (trace.probs - torch.softmax(logits[0], -1)).abs().max() < 1e-5


def test_filtered_is_what_the_settings_make_of_probs(shipped):
    settings = DecodeSettings(max_new_chars=150, temperature=0.7, top_k=12, top_p=0.8, seed=2)
    trace = shipped.generate("ROMEO:", settings)
    assert (trace.filtered - filter_probs(trace.probs.log(), settings)).abs().max() < 1e-5


def test_every_generated_character_was_allowed_by_the_filter(shipped):
    trace = shipped.generate("ROMEO:", DecodeSettings(max_new_chars=300, temperature=1.5, top_k=3, seed=9))
    steps = torch.arange(trace.prompt_len - 1, len(trace.text) - 1)
    chosen = trace.tokens[steps + 1]
    assert (trace.filtered[steps, chosen] > 0).all()
    top3 = trace.probs[steps].topk(3).indices
    assert (top3 == chosen[:, None]).any(-1).all()


def test_greedy_takes_the_most_likely_character(shipped):
    trace = shipped.generate("ROMEO:", DecodeSettings(max_new_chars=100, temperature=0, seed=1))
    steps = torch.arange(trace.prompt_len - 1, len(trace.text) - 1)
    assert torch.equal(trace.tokens[steps + 1], trace.probs[steps].argmax(-1))
    other_seed = shipped.generate("ROMEO:", DecodeSettings(max_new_chars=100, temperature=0, seed=99))
    assert other_seed.text == trace.text


def test_first_character_follows_the_filtered_distribution_over_seeds():
    model = make_tiny(seed=3)
    settings = [DecodeSettings(max_new_chars=1, temperature=1.0, top_p=0.9, seed=s) for s in range(1500)]
    first = [model.generate("ab", s).tokens[-1].item() for s in settings]
    expected = model.generate("ab", settings[0]).filtered[1]
    freq = torch.bincount(torch.tensor(first), minlength=len(model.vocab)).float() / len(first)
    assert freq[expected == 0].sum() == 0
    assert (freq - expected).abs().max() < 0.05


def test_same_seed_same_text_and_the_global_rng_is_untouched(shipped):
    settings = DecodeSettings(max_new_chars=200, temperature=1.0, top_p=0.95, seed=11)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = shipped.generate("ROMEO:", settings).text
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(12345)
    torch.rand(100)
    assert shipped.generate("ROMEO:", settings).text == first
    different = {shipped.generate("ROMEO:", DecodeSettings(200, 1.0, 0, 0.95, seed)).text for seed in range(4)}
    assert len(different) == 4


def test_concurrent_generations_do_not_disturb_each_other(shipped):
    settings = [DecodeSettings(max_new_chars=150, temperature=1.0, seed=s) for s in range(4)]
    alone = [shipped.generate("ROMEO:", s).text for s in settings]
    assert in_threads(lambda s: shipped.generate("ROMEO:", s).text, settings) == alone


def test_stream_yields_growing_text_and_ends_with_the_trace(shipped):
    settings = DecodeSettings(max_new_chars=100, temperature=0.8, seed=3)
    updates = list(shipped.stream("ROMEO:", settings, chunk_size=16))
    texts = [u.text for u in updates]
    assert len(updates) >= 7
    assert all(b.startswith(a) and len(b) > len(a) for a, b in zip(texts[:-2], texts[1:-1]))
    assert all(u.trace is None for u in updates[:-1])
    assert updates[-1].trace.text == texts[-1] == shipped.generate("ROMEO:", settings).text


def test_zero_new_characters_traces_the_prompt(shipped):
    trace = shipped.generate("To be, or not", DecodeSettings(max_new_chars=0))
    assert trace.text == "To be, or not" and trace.hidden.shape[1] == 13


def test_bad_prompts_are_refused_with_a_message(shipped):
    with pytest.raises(ValueError, match="empty"):
        shipped.generate("", DecodeSettings())
    with pytest.raises(UnknownCharactersError, match="'é'"):
        shipped.generate("Roméo", DecodeSettings(max_new_chars=5))
    trace = shipped.generate("Roméo", DecodeSettings(max_new_chars=5), on_unknown="drop")
    assert trace.text.startswith("Romo") and trace.prompt_len == 4
    with pytest.raises(ValueError, match="empty once unknown"):
        shipped.generate("ééé", DecodeSettings(), on_unknown="drop")


def test_trace_tensors_are_ordinary_tensors_that_can_be_modified(shipped):
    trace = shipped.generate("ROMEO:", DecodeSettings(max_new_chars=20, seed=1))
    for tensor in (trace.tokens, trace.probs, trace.filtered, trace.reset_gate, trace.hidden):
        assert not tensor.is_inference()
    trace.probs[0, 0] = 0.5
    order = trace.probs.topk(3).indices
    order[0, 0] = 1


def test_a_stream_can_be_resumed_on_other_threads(shipped):
    """Gradio resumes generators on whichever worker thread is free; torch's thread-local modes must not leak."""
    settings = DecodeSettings(max_new_chars=150, temperature=0.9, seed=8)
    updates = shipped.stream("ROMEO:", settings, chunk_size=16)
    seen, grad_modes = [], []

    def step():
        seen.append(next(updates))
        grad_modes.append(torch.is_grad_enabled() and not torch.is_inference_mode_enabled())

    for _ in range(3):
        thread = threading.Thread(target=step)
        thread.start()
        thread.join()
    seen.extend(updates)
    assert seen[-1].trace.text == shipped.generate("ROMEO:", settings).text
    assert all(grad_modes) and torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
