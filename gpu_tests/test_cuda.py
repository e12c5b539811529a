"""The CUDA decode path: no host synchronisation per step, CUDA graphs, same text as the CPU, exact traces."""

import torch
from torch.profiler import ProfilerActivity, profile

from charrnn import DecodeSettings
from charrnn.decoding.loop import graph_decoder, step_weights

from threads import in_threads
from nn_gru_reference import TOL, nn_gru_gates, nn_gru_states, single_layers

SETTINGS = DecodeSettings(max_new_chars=300, temperature=0.8, top_p=0.95, seed=1)


def test_auto_device_picks_cuda(cuda_model):
    assert cuda_model.device.type == "cuda"
    trace = cuda_model.generate("ROMEO:", SETTINGS)
    assert trace.device.startswith("cuda") and trace.probs.device.type == "cpu"


def test_no_host_synchronisation_while_decoding(cuda_model):
    cuda_model.generate("ROMEO:", SETTINGS)  # captures the graph for these settings (capture may synchronise)
    torch.cuda.set_sync_debug_mode("error")
    try:
        trace = cuda_model.generate("ROMEO:", SETTINGS)
        streamed = [u.text for u in cuda_model.stream("ROMEO:", SETTINGS)]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(trace.text) == 306 and streamed[-1] == trace.text


def test_characters_reach_the_host_once_per_chunk(cuda_model):
    cuda_model.generate("ROMEO:", SETTINGS)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        cuda_model.generate("ROMEO:", SETTINGS)
    to_host = [e for e in prof.events() if "DtoH" in e.name or "Device -> Pinned" in e.name]
    chunks = -(-(SETTINGS.max_new_chars + 1) // 32)
    trace_tensors = 6
    assert 0 < len(to_host) <= chunks + trace_tensors, [e.name for e in to_host]


def test_graphs_are_captured_once_per_setting_and_reused(cuda_model):
    weights = step_weights(cuda_model)
    first = graph_decoder(cuda_model, weights, SETTINGS, 32)
    same = graph_decoder(cuda_model, weights, DecodeSettings(50, 0.8, 0, 0.95, seed=77), 32)
    other = graph_decoder(cuda_model, weights, DecodeSettings(50, 0.5, 0, 0.95, seed=1), 32)
    assert first is same and other is not first


def test_cuda_and_cpu_write_the_same_text(cpu_model, cuda_model):
    seeds = range(20)
    same = sum(cpu_model.generate("ROMEO:", DecodeSettings(300, 0.8, 0, 0.95, s)).text
               == cuda_model.generate("ROMEO:", DecodeSettings(300, 0.8, 0, 0.95, s)).text for s in seeds)
    assert same >= 18
    greedy = DecodeSettings(300, 0, 0, 1.0, 0)
    assert cpu_model.generate("ROMEO:", greedy).text == cuda_model.generate("ROMEO:", greedy).text


def test_cuda_trace_matches_nn_gru_and_the_cpu_trace(cpu_model, cuda_model):
    trace = cuda_model.generate("KING:", DecodeSettings(max_new_chars=500, temperature=0.9, top_p=0.9, seed=5))
    states, inputs = nn_gru_states(cpu_model, trace.tokens)
    assert (trace.hidden - states).abs().max() <= TOL
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # cuDNN's GRU rounds to TF32 by default (about 1e-3 off)
    try:
        with torch.no_grad():  # and cuDNN's own GRU on the GPU
            top, _ = cuda_model.gru(cuda_model.embedding(trace.tokens[None].cuda()))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert (trace.hidden[-1] - top[0].cpu()).abs().max() <= TOL
    for k, layer in enumerate(single_layers(cpu_model)):
        h_prev = torch.cat([torch.zeros(1, cpu_model.hidden_size), states[k, :-1]])
        reset_gate, update_gate = nn_gru_gates(layer, inputs[k], h_prev)
        assert (trace.reset_gate[k] - reset_gate).abs().max() <= TOL
        assert (trace.update_gate[k] - update_gate).abs().max() <= TOL
    cpu_trace = cpu_model.trace(trace.text)
    assert (cpu_trace.probs - trace.probs).abs().max() < 1e-5


def test_chunk_size_does_not_change_the_text(cuda_model):
    texts = {c: list(cuda_model.stream("ROMEO:", SETTINGS, chunk_size=c))[-1].trace for c in (1, 7, 32)}
    assert len({t.text for t in texts.values()}) == 1


def test_concurrent_cuda_generations_are_independent(cuda_model):
    settings = [DecodeSettings(200, 1.0, 0, 0.9, s) for s in range(4)]
    alone = [cuda_model.generate("ROMEO:", s).text for s in settings]
    assert in_threads(lambda s: cuda_model.generate("ROMEO:", s).text, settings) == alone
