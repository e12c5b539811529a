"""python -m charrnn.bench: charrnn's decoding against the naive char-rnn loop, on the CPU and on CUDA.

Both decoders run the same model and settings (batch 1, 2,000 characters, temperature 0.8, top-p 0.95) and
both record the full trace; the naive loop is also timed keeping no trace at all. Runs alternate, after a
warm-up, and the median of the repeats is reported (this machine's timings vary from run to run). Also
reported: the CPU (model name, the vector flags that matter, threads), the product layout the tuner chose on
this machine and what each candidate measured, the time of a step's products alone (the floor a step with its
trace cannot go below), training throughput of the model's configuration, and on CUDA the step time against
its floor (weight bytes per step over memory bandwidth, and the launch latency of one kernel), and how often
CPU and CUDA write the same text for the same seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from .decoding.kernel import StepWeights
from .decoding.layout import choose_layout
from .decoding.loop import graph_decoder, step_weights
from .decoding.sampling import DecodeSettings
from .decoding.layout import Layout, onednn_available
from .decoding.trace import build_trace, recompute_gates
from .models.gru import CharRNN
from .models.shipped import shipped_model


def naive_generate(model: CharRNN, prompt: str, settings: DecodeSettings, keep_trace: bool = True) -> str:
    """What most char-rnn code does: per step the model on one character, softmax, a sort for top-p,
    torch.multinomial and .item(); with keep_trace it keeps the same trace (probabilities, filtered, every
    layer's state, gates)."""
    device = model.device
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    ids = model.tokenizer.encode(prompt)
    probs_rows, filtered_rows, states, logits_rows = [], [], [], []
    with torch.no_grad():
        h = None
        for i in ids:  # the prompt, one character at a time, to keep every layer's state
            logits, h = model(torch.tensor([[i]], device=device), h)
            states.append(h[:, 0])
            logits_rows.append(logits[0, -1])
        for _ in range(settings.max_new_chars):
            logits = logits_rows[-1]
            probs = F.softmax(logits / settings.temperature, dim=-1)
            sorted_probs, order = torch.sort(probs, descending=True)
            cumulative = torch.cumsum(sorted_probs, dim=-1)
            sorted_probs[cumulative - sorted_probs >= settings.top_p] = 0
            sorted_probs /= sorted_probs.sum()
            filtered = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
            next_id = torch.multinomial(filtered, 1, generator=generator).item()
            filtered_rows.append(filtered)
            ids.append(next_id)
            logits, h = model(torch.tensor([[next_id]], device=device), h)
            states.append(h[:, 0])
            logits_rows.append(logits[0, -1])
        logits = torch.stack(logits_rows)
        probs_rows = F.softmax(logits, -1)
        tokens = torch.tensor(ids, device=device)
        if keep_trace:  # the gates recomputed from the states, in one batched pass per layer
            hidden = torch.stack(states).transpose(0, 1)
            values = torch.stack([hidden, *recompute_gates(StepWeights.of(model), tokens, hidden)], 2)
            build_trace(vocab=model.vocab, prompt_len=len(prompt), settings=settings, tokens=tokens,
                        values=values.transpose(0, 1), kinds=model.kinds, logits=logits,
                        filtered=torch.cat([probs_rows[: len(prompt) - 1], torch.stack(filtered_rows), probs_rows[-1:]]))
    return model.tokenizer.decode(ids)


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def compare(model: CharRNN, prompt: str, settings: DecodeSettings, repeats: int) -> dict:
    device = model.device
    warm = DecodeSettings(200, settings.temperature, settings.top_k, settings.top_p, settings.seed)
    naive_generate(model, prompt, warm)
    model.generate(prompt, settings)  # chooses the layout (CPU) or captures the CUDA graph for these settings
    naive, bare, ours = [], [], []
    for _ in range(repeats):  # alternate, so all see the same drift in machine load
        naive.append(timed(lambda: naive_generate(model, prompt, settings), device))
        bare.append(timed(lambda: naive_generate(model, prompt, settings, keep_trace=False), device))
        ours.append(timed(lambda: model.generate(prompt, settings), device))
    n = settings.max_new_chars
    naive_s, bare_s, ours_s = statistics.median(naive), statistics.median(bare), statistics.median(ours)
    layout, tuning = choose_layout(step_weights(model), device)
    return {
        "device": device_name(device),
        "naive_chars_per_s": round(n / naive_s), "charrnn_chars_per_s": round(n / ours_s),
        "naive_us_per_step": round(naive_s / n * 1e6, 1), "charrnn_us_per_step": round(ours_s / n * 1e6, 1),
        "naive_no_trace_us_per_step": round(bare_s / n * 1e6, 1),
        "speedup": round(naive_s / ours_s, 2), "speedup_over_naive_without_trace": round(bare_s / ours_s, 2),
        "layout": str(layout), "library": layout.library, "tuning": tuning,
        **products_table(model, layout),
        "naive_seconds": [round(t, 4) for t in naive], "charrnn_seconds": [round(t, 4) for t in ours],
    }


def kernels(layout) -> list[Layout]:
    """One request's kernels to time for the table: each family's one-row layout, with both thread counts."""
    found = [Layout("addmm", 1, 1), Layout("addmm", 2, 2), Layout("bmm", 2, 2)]
    found += [Layout("onednn", 2, 1)] if onednn_available() else []
    found += [Layout("gemv", 1, 1), Layout("reduce", 1, 1)]
    found += [layout] if layout not in found else []
    return found + [Layout(k.method, k.group, k.min_rows, 1) for k in found if not k.threads]


@torch.inference_mode()
def products_table(model: CharRNN, layout, steps: int = 200) -> dict:
    """Microseconds of one step's matrix products alone (the five 3H x H matrices and the head for one request)
    under each kernel, alternated in the same run, and the sum over the same weights (a read at the machine's
    pace); the floor is the fastest kernel's, what a step that also keeps its trace cannot go below."""
    weights = step_weights(model)
    layers = weights.shape[0]
    options = kernels(layout)
    scratches = {k: weights.scratch(k, 1, model.device) for k in options}
    states = {k: torch.rand(layers, k.padded_rows(1), weights.shape[1], device=model.device) * 2 - 1 for k in options}

    def products(kernel):
        scratch, h = scratches[kernel], states[kernel]
        with kernel.threads_set():
            for layer in range(layers):
                kernel.product(h[layer], weights.w_hh[layer], out=scratch.gh[layer])
            for layer in range(1, layers):
                kernel.product(h[layer - 1], weights.w_ih[layer], out=scratch.gi)
            kernel.product(h[-1], weights.head, out=scratch.logits)

    matrices = [m.weight for m in [*weights.w_hh, *weights.w_ih[1:], weights.head]]
    runs = {str(k): [] for k in options} | {"read (sum of the weights)": []}
    for _ in range(5):
        for kernel in options:
            products(kernel)
            runs[str(kernel)].append(timed(lambda: [products(kernel) for _ in range(steps // 5)], model.device)
                                     / (steps // 5))
        runs["read (sum of the weights)"].append(
            timed(lambda: [[m.sum() for m in matrices] for _ in range(steps // 5)], model.device) / (steps // 5))
    table = {name: round(statistics.median(times) * 1e6, 1) for name, times in runs.items()}
    floor = min(value for name, value in table.items() if not name.startswith("read"))
    return {"products_us": table, "product_floor_us_per_step": floor,
            "products_alone_us_per_step": table[str(layout)]}


def training_throughput(model: CharRNN, steps: int) -> dict:
    """Chars/s of forward + backward + AdamW steps in the shipped training configuration."""
    info = model.training_info or {}
    batch, seq = info.get("batch_size", 128), info.get("seq_len", 128)
    device = model.device
    trainee = CharRNN(model.vocab, model.embedding_dim, model.hidden_size, model.num_layers, model.dropout).to(device)
    trainee.train()
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=1e-3)
    data = torch.randint(0, len(model.vocab), (batch, seq + 1), device=device)

    def step():
        logits, _ = trainee(data[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), data[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainee.parameters(), 1.0)
        optimizer.step()

    step()
    seconds = timed(lambda: [step() for _ in range(steps)], device)
    return {"train_batch": batch, "train_seq_len": seq, "train_chars_per_s": round(steps * batch * seq / seconds)}


def cuda_floor(model: CharRNN, us_per_step: float) -> dict:
    """What one decode step cannot go below on this GPU: reading the weights once, and launching kernels."""
    device = model.device
    weights = StepWeights.of(model)
    read_per_step = [t for m in [*weights.w_hh, *weights.w_ih[1:], weights.head] for t in (m.weight, m.bias)]
    weight_bytes = sum(t.numel() * t.element_size() for t in read_per_step) \
        + weights.input_proj.shape[1] * weights.input_proj.element_size()
    big = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    copy = torch.empty_like(big)
    copy.copy_(big)
    seconds = timed(lambda: [copy.copy_(big) for _ in range(20)], device) / 20
    bandwidth = 2 * big.numel() / seconds  # bytes read + written per second
    tiny = torch.zeros(1, device=device)
    launches = 2000
    for _ in range(100):
        tiny.add_(1)
    launch_us = timed(lambda: [tiny.add_(1) for _ in range(launches)], device) / launches * 1e6
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(200):
            tiny.add_(1)
    graph.replay()
    in_graph_us = timed(lambda: [graph.replay() for _ in range(20)], device) / (20 * 200) * 1e6
    kernels = kernels_per_step(model)
    floor_us = weight_bytes / bandwidth * 1e6
    return {"weight_bytes_per_step": weight_bytes, "memory_bandwidth_GBps": round(bandwidth / 1e9),
            "bandwidth_floor_us_per_step": round(floor_us, 2), "kernel_launch_us": round(launch_us, 2),
            "kernel_in_graph_us": round(in_graph_us, 2), "kernels_per_step": kernels,
            "launch_floor_us_per_step": round(kernels * in_graph_us, 1),
            "charrnn_us_per_step": us_per_step, "charrnn_over_bandwidth_floor": round(us_per_step / floor_us, 1)}


def kernels_per_step(model: CharRNN) -> int:
    """GPU kernels one decode step launches (what each step of the CUDA graph replays)."""
    from torch.profiler import ProfilerActivity, profile

    settings = DecodeSettings(temperature=0.8, top_p=0.95)
    decoder = graph_decoder(model, step_weights(model), settings, 1)
    noise = torch.ones(1, len(model.vocab), device=model.device)
    with torch.inference_mode():
        decoder.read(decoder.out.tokens[:1], decoder.out, 0, noise, decoder.token)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            decoder.read(decoder.out.tokens[:1], decoder.out, 0, noise, decoder.token)
            torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type.name == "CUDA")


def agreement(cpu_model: CharRNN, cuda_model: CharRNN, prompt: str, seeds: int, chars: int) -> dict:
    same = 0
    first_difference = []
    for seed in range(seeds):
        settings = DecodeSettings(chars, 0.8, 0, 0.95, seed)
        a, b = cpu_model.generate(prompt, settings).text, cuda_model.generate(prompt, settings).text
        same += a == b
        if a != b:
            first_difference.append(next(i for i, (x, y) in enumerate(zip(a + "\0", b + "\1")) if x != y))
    return {"seeds": seeds, "chars": chars, "identical": same,
            "first_difference_at": first_difference}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name and the vector extensions that decide which kernels run (from /proc/cpuinfo)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{name}, {'/'.join(shown) or 'no AVX2'}"


def table(runs: list[dict]) -> str:
    lines = []
    for r in runs:
        lines += [f"{r['device']}",
                  f"  naive loop with trace     {r['naive_us_per_step']:>8} us/step  {r['naive_chars_per_s']:>7,} chars/s",
                  f"  naive loop, no trace      {r['naive_no_trace_us_per_step']:>8} us/step",
                  f"  charrnn with full trace   {r['charrnn_us_per_step']:>8} us/step  {r['charrnn_chars_per_s']:>7,} chars/s"
                  f"  ({r['speedup']}x the naive loop, {r['speedup_over_naive_without_trace']}x the naive loop "
                  "without trace)",
                  f"  products, chosen kernel   {r['products_alone_us_per_step']:>8} us/step   layout {r['layout']} "
                  f"({r['library']})",
                  f"  product floor             {r['product_floor_us_per_step']:>8} us/step   (the fastest kernel here; "
                  f"charrnn's step is {r['charrnn_us_per_step'] / r['product_floor_us_per_step']:.2f}x it)",
                  "  the step's products alone, per kernel (one request, us/step):",
                  *[f"    {name:28s} {value:>8}" for name, value in r["products_us"].items()]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m charrnn.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=shipped_model(), help="local folder or Hub repo id (default: shipped)")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", default="auto", help="auto (cpu, and cuda when present), cpu or cuda")
    parser.add_argument("--train-steps", type=int, default=5, help="steps timed for training throughput")
    parser.add_argument("--agreement-seeds", type=int, default=100, help="CPU/CUDA same-text check (CUDA only)")
    args = parser.parse_args(argv)
    settings = DecodeSettings(max_new_chars=args.chars, temperature=0.8, top_k=0, top_p=0.95, seed=1)
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
               "cpu": ["cpu"], "cuda": ["cuda"]}[args.devices]
    runs, models = [], {}
    with torch.inference_mode(False):
        for name in devices:
            model = models[name] = CharRNN.from_pretrained(args.model, device=name)
            run = compare(model, args.prompt, settings, args.repeats)
            run.update(training_throughput(model, args.train_steps * (10 if name == "cuda" else 1)))
            if name == "cuda":
                run["floor"] = cuda_floor(model, run["charrnn_us_per_step"])
            runs.append(run)
    result = {**{k: v for k, v in runs[-1].items() if k != "floor"}, "model": args.model, "chars": args.chars,
              "repeats": args.repeats, "settings": settings.__dict__, "torch": torch.__version__, "runs": runs}
    if "cuda" in models and args.agreement_seeds:
        cpu_model = models.get("cpu") or CharRNN.from_pretrained(args.model, device="cpu")
        result["cpu_cuda_agreement"] = agreement(cpu_model, models["cuda"], args.prompt, args.agreement_seeds, 300)
    print(table(runs))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
