"""The decode loop: read the prompt, write characters, record what the trace needs.

One step reads a character and gives every layer's new state, the logits for the next character, the filtered
distribution and (past the prompt) the sampled character. On the CPU the steps run eagerly; on CUDA the steps
past the prompt run as replays of a CUDA graph of `chunk_size` steps, with no host synchronisation inside a
chunk, and the characters come to the host once per chunk (which is also what streaming shows).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator

import torch

from .gates import StepWeights, Trace, build_trace
from .model import gru_update
from .sampling import DecodeSettings, filter_probs, race, race_noise

GRAPH_CACHE_SIZE = 8


@dataclass
class DecodeUpdate:
    """The text so far; the last update of a run also carries its Trace."""

    text: str
    trace: Trace | None = None


def decode_step(weights: StepWeights, token: torch.Tensor, h: torch.Tensor, h_out: torch.Tensor,
                logits_out: torch.Tensor) -> None:
    """Read one character (token [1]) in state h [layers, 1, H]: write every layer's new state into h_out
    [layers, 1, H] and the next-character logits into logits_out [1, vocab]."""
    gh = weights.every_layer_hidden_gates(h)
    below = None
    for layer in range(h.shape[0]):
        below = gru_update(weights.input_gates(layer, token, below), gh[layer], h[layer], out=h_out[layer])[2]
    weights.logits(below, out=logits_out)


@dataclass
class Record:
    """What the loop keeps per position t, "after reading tokens[t]" (padded on CUDA to whole chunks)."""

    tokens: torch.Tensor  # [T]
    hidden: torch.Tensor  # [T, layers, H]
    logits: torch.Tensor  # [T, vocab]
    filtered: torch.Tensor  # [T, vocab]

    @classmethod
    def empty(cls, length: int, weights: StepWeights, device) -> "Record":
        layers, hidden, vocab = weights.shape
        return cls(torch.zeros(length, dtype=torch.long, device=device),
                   torch.empty(length, layers, hidden, device=device),
                   torch.empty(length, vocab, device=device), torch.empty(length, vocab, device=device))

    def step(self, t: int, weights: StepWeights, settings: DecodeSettings, token: torch.Tensor, h: torch.Tensor,
             noise: torch.Tensor | None = None, sample_out: torch.Tensor | None = None) -> torch.Tensor:
        """Read `token` in state h and fill row t: states, logits, filtered distribution; given a noise row,
        also sample the next character into sample_out. Everything is written in place (no copies, and on
        CUDA fewer kernels per step). Returns the new state, a view of row t."""
        h_out = self.hidden[t].unsqueeze(1)
        logits = self.logits[t : t + 1]
        decode_step(weights, token, h, h_out, logits)
        filtered = filter_probs(logits, settings, out=self.filtered[t : t + 1])
        if noise is not None:
            race(filtered, noise, out=sample_out)
        return h_out

    def trimmed(self, length: int) -> "Record":
        return Record(self.tokens[:length], self.hidden[:length], self.logits[:length], self.filtered[:length])


def read_prompt(weights, record, settings, h, end):
    """Eager steps over positions [0, end) of the prompt; returns the state after them."""
    for t in range(end):
        h = record.step(t, weights, settings, record.tokens[t : t + 1], h)
    return h


def decode_eager(weights, record, prompt_len, settings, noise, chunk_size):
    """All steps eagerly (the CPU path). Yields each chunk of new token ids as soon as it is written."""
    layers, hidden, _ = weights.shape
    h = torch.zeros(layers, 1, hidden, device=record.tokens.device)
    h = read_prompt(weights, record, settings, h, prompt_len - 1)
    total = record.tokens.shape[0]
    first = prompt_len
    for t in range(prompt_len - 1, total):
        if t + 1 < total:
            row = t + 1 - prompt_len
            h = record.step(t, weights, settings, record.tokens[t : t + 1], h, noise[row : row + 1],
                            record.tokens[t + 1 : t + 2])
        else:  # the last character is read for its trace; nothing follows it
            h = record.step(t, weights, settings, record.tokens[t : t + 1], h)
        if t + 2 - first == chunk_size or t + 2 == total:
            yield record.tokens[first : t + 2].tolist()
            first = t + 2


class GraphDecoder:
    """`chunk_size` decode steps captured in one CUDA graph, for one model and one set of filter settings.

    Step i reads the character step i - 1 wrote (the first reads `token`) and the state it wrote (the first
    reads `h`); the graph ends by carrying its last character and state over into `token` and `h`, so the
    next replay continues where this one stopped.
    """

    def __init__(self, weights: StepWeights, settings: DecodeSettings, chunk_size: int):
        device = weights.head_b.device
        layers, hidden, vocab = weights.shape
        self.weights, self.settings, self.chunk_size = weights, settings, chunk_size
        self.token = torch.zeros(1, dtype=torch.long, device=device)
        self.h = torch.zeros(layers, 1, hidden, device=device)
        self.noise = torch.ones(chunk_size, vocab, device=device)
        self.out = Record.empty(chunk_size, weights, device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm up (cuBLAS handles, allocator) before capture
            self._steps()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._steps()

    def _steps(self):
        token, h, out = self.token, self.h, self.out
        for i in range(self.chunk_size):
            h = out.step(i, self.weights, self.settings, token, h, self.noise[i : i + 1], out.tokens[i : i + 1])
            token = out.tokens[i : i + 1]
        self.token.copy_(token)
        self.h.copy_(h)


def decode_cuda_graph(model, weights, record, prompt_len, settings, noise, chunk_size):
    """The prompt eagerly, then the generated part as graph replays; yields each chunk's token ids."""
    decoder = graph_decoder(model, weights, settings, chunk_size)
    h = read_prompt(weights, record, settings, torch.zeros_like(decoder.h), prompt_len - 1)
    decoder.token.copy_(record.tokens[prompt_len - 1 : prompt_len])
    decoder.h.copy_(h)
    chunks = noise.shape[0] // chunk_size
    host = torch.empty(chunks, chunk_size, dtype=torch.long, pin_memory=True)
    ready = [torch.cuda.Event() for _ in range(chunks)]
    for c in range(chunks):
        decoder.noise.copy_(noise[c * chunk_size : (c + 1) * chunk_size])
        decoder.graph.replay()
        start = prompt_len - 1 + c * chunk_size  # the position the chunk's first step reads
        record.hidden[start : start + chunk_size] = decoder.out.hidden
        record.logits[start : start + chunk_size] = decoder.out.logits
        record.filtered[start : start + chunk_size] = decoder.out.filtered
        record.tokens[start + 1 : start + 1 + chunk_size] = decoder.out.tokens
        host[c].copy_(decoder.out.tokens, non_blocking=True)
        ready[c].record()
        if c:  # the GPU already runs chunk c while the host turns chunk c - 1 into text
            ready[c - 1].synchronize()
            yield host[c - 1].tolist()
    ready[-1].synchronize()
    yield host[-1].tolist()  # the caller drops what lies past max_new_chars


_graph_lock = threading.Lock()


def graph_decoder(model, weights: StepWeights, settings: DecodeSettings, chunk_size: int) -> GraphDecoder:
    cache = model.__dict__.setdefault("_graph_decoders", OrderedDict())
    key = (weights_version(model), settings.temperature, settings.top_k, settings.top_p, chunk_size)
    if key not in cache:
        cache[key] = GraphDecoder(weights, settings, chunk_size)
        while len(cache) > GRAPH_CACHE_SIZE:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def weights_version(model) -> tuple:
    return (model.device, tuple(p._version for p in model.parameters()))


def step_weights(model) -> StepWeights:
    """StepWeights for the model's current weights, computed once and reused until the weights change."""
    version = weights_version(model)
    cached = model.__dict__.get("_step_weights")
    if cached is None or cached[0] != version:
        model.__dict__["_step_weights"] = cached = (version, StepWeights.of(model))
    return cached[1]


def start_decode(model, ids: list[int], settings: DecodeSettings, chunk_size: int, use_graph: bool):
    """The step weights, an empty Record holding the prompt, and the decode loop (not started yet)."""
    weights = step_weights(model)
    device, prompt_len, new_chars = model.device, len(ids), settings.max_new_chars
    # Noise rows for every step past the prompt, padded with ones to whole chunks for the CUDA graph.
    steps = -(-(new_chars + 1) // chunk_size) * chunk_size if use_graph else new_chars
    noise = torch.ones(steps, len(model.vocab))
    noise[:new_chars] = race_noise(settings, new_chars, len(model.vocab))
    record = Record.empty(prompt_len + steps, weights, device)
    prompt_ids = torch.tensor(ids, dtype=torch.long)
    if use_graph:
        record.tokens[:prompt_len].copy_(prompt_ids.pin_memory(), non_blocking=True)
        noise = noise.pin_memory().to(device, non_blocking=True)
        return weights, record, decode_cuda_graph(model, weights, record, prompt_len, settings, noise, chunk_size)
    record.tokens[:prompt_len] = prompt_ids
    return weights, record, decode_eager(weights, record, prompt_len, settings, noise, chunk_size)


def each_in_inference_mode(loop):
    """Run a decode loop one chunk at a time, each chunk in inference mode on whichever thread asks."""
    while True:
        with torch.inference_mode():
            chunk = next(loop, None)
        if chunk is None:
            return
        yield chunk


def stream(model, prompt: str, settings: DecodeSettings | None = None, *, on_unknown: str = "error",
           chunk_size: int = 32) -> Iterator[DecodeUpdate]:
    """Yield the text as it is written (one update per chunk); the last update carries the Trace."""
    settings = settings or DecodeSettings()
    if not isinstance(settings, DecodeSettings):
        raise TypeError(f"settings must be a DecodeSettings, not {type(settings).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, not {chunk_size}")
    ids = model.tokenizer.encode(prompt, on_unknown)
    if not ids:
        raise ValueError("the prompt is empty" + (" once unknown characters are dropped" if prompt else "")
                         + ": give at least one character for the model to start from")
    if model.training:
        raise RuntimeError("the model is in training mode (dropout on): call model.eval() before generating")
    device = model.device
    use_graph = device.type == "cuda" and settings.max_new_chars > 0
    prompt_len, new_chars = len(ids), settings.max_new_chars
    # Torch's inference mode and the graph lock belong to a thread, and whoever consumes this generator may
    # resume it on another thread (Gradio does), so neither is ever held across a yield.
    if use_graph:
        with _graph_lock, torch.inference_mode():
            weights, record, loop = start_decode(model, ids, settings, chunk_size, use_graph)
            chunks = list(loop)  # the GPU writes every chunk; the host still receives them one by one
    else:
        with torch.inference_mode():
            weights, record, loop = start_decode(model, ids, settings, chunk_size, use_graph)
        chunks = each_in_inference_mode(loop)
    text = model.tokenizer.decode(ids) if on_unknown == "drop" else prompt
    written = 0
    for new_ids in chunks:
        new_ids = new_ids[: new_chars - written]
        written += len(new_ids)
        text += model.tokenizer.decode(new_ids)
        if new_ids:
            yield DecodeUpdate(text)
    record = record.trimmed(prompt_len + new_chars)
    # Outside inference mode, so the trace holds ordinary tensors its users may modify.
    with torch.no_grad():
        trace = build_trace(weights, vocab=model.vocab, prompt_len=prompt_len, settings=settings,
                            tokens=record.tokens, hidden=record.hidden, logits=record.logits,
                            filtered=record.filtered)
    yield DecodeUpdate(trace.text, trace)


def generate(model, prompt: str, settings: DecodeSettings | None = None, *, on_unknown: str = "error") -> Trace:
    """Run the whole generation and return its Trace."""
    for update in stream(model, prompt, settings, on_unknown=on_unknown):
        pass
    return update.trace
