"""The decode loop: read the prompt, write characters, record what the trace needs.

One loop serves any number of requests at once. Each request is a row; every step reads one character for
every row (its prompt first, then what it wrote) and gives each row its new states, the logits for its next
character, the filtered distribution and, past the prompt, the sampled character. Rows join at the next step
and leave when they are done (continuous batching). A row's results depend on its own request only: the
product layout is batch-invariant (charrnn.decoding.layout), the filter decides per row (RowSettings), and the random
draw that picks generated character s comes from the request's seed and s alone. So a request writes the same
text alone (`CharRNN.generate`, the CLI) and beside others in the page, and two runs that differ in one place
(an intervention, a branch) share every other draw.

On CUDA, a request without an intervention or a forced character decodes alone, its steps past the prompt
replayed as a CUDA graph of `chunk_size` steps with no host synchronisation inside a chunk.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import torch

from ..cache import BoundedCache
from .interventions import Intervention, step_forces
from .kernel import StepWeights
from .layout import Layout, ThreadSwitch, choose_layout, thread_switch
from .sampling import DecodeSettings, RowSettings, filter_probs, filter_rows, race, race_noise
from .trace import Trace, build_trace

GRAPH_CACHE_SIZE = 8


@dataclass
class DecodeUpdate:
    """The text so far; the last update of a run also carries its Trace."""

    text: str
    trace: Trace | None = None


@dataclass(frozen=True)
class DecodeRequest:
    """One run: the prompt's token ids and the settings; optionally an intervention, and characters forced at
    some generated positions (`forced`: (generated index, token id) pairs; index 0 is the first written)."""

    ids: tuple[int, ...]
    settings: DecodeSettings
    intervention: Intervention | None = None
    forced: tuple[tuple[int, int], ...] = ()


class Row:
    """A request being decoded: its tokens so far and what every position recorded (position t holds what
    the model had after reading tokens[t])."""

    def __init__(self, request: DecodeRequest, weights: StepWeights, device):
        layers, hidden, vocab = weights.shape
        self.request = request
        self.prompt_len = len(request.ids)
        self.length = self.prompt_len + request.settings.max_new_chars
        self.tokens = list(request.ids)
        self.t = 0  # the position the next step reads
        self.values = torch.empty(self.length, layers, weights.kinds, hidden, device=device)  # what each step recorded
        self.logits = torch.empty(self.length, vocab, device=device)
        self.filtered = torch.empty(self.length, vocab, device=device)
        self.noise = race_noise(request.settings, request.settings.max_new_chars, vocab).to(device)
        self.forced = dict(request.forced)

    @property
    def done(self) -> bool:
        return self.t >= self.length

    @property
    def samples(self) -> bool:
        """Whether the step at the current position picks the next character (the last one picks none)."""
        return self.prompt_len - 1 <= self.t < self.length - 1

    @property
    def written(self) -> int:
        return len(self.tokens) - self.prompt_len

    def trace(self, model, weights: StepWeights) -> Trace:
        with torch.no_grad():  # outside inference mode, so the trace holds ordinary tensors its users may modify
            return build_trace(vocab=model.vocab, prompt_len=self.prompt_len, settings=self.request.settings,
                               tokens=torch.tensor(self.tokens, device=self.values.device), values=self.values,
                               kinds=weights.kind_names,
                               logits=self.logits, filtered=self.filtered, intervention=self.request.intervention)


class Batch:
    """The rows of a loop between two changes of membership, and what their steps write.

    Each step writes every row's record (states and gates), logits and filtered distribution into one slot of a
    window of WINDOW steps (no per-row copies while stepping); the window is copied into the rows' own records when
    it is full and before the batch changes (flush). The state a step reads is the slot the step before wrote.
    """

    WINDOW = 32

    def __init__(self, rows: list[Row], weights: StepWeights, layout: Layout, device):
        layers, hidden, vocab = weights.shape
        self.rows = rows
        padded = layout.padded_rows(len(rows))
        self.scratch = weights.scratch(layout, len(rows), device)
        self.state_kinds = weights.state_kinds
        # the state before the batch's first step: each row's is what it recorded last
        self.start = torch.zeros(layers, self.state_kinds, padded, hidden, device=device)
        for i, row in enumerate(rows):
            if row.t:
                self.start[:, :, i] = row.values[row.t - 1, :, : self.state_kinds]
        self.history = torch.empty(self.WINDOW, layers, weights.kinds, padded, hidden, device=device)
        self.logits = torch.empty(self.WINDOW, padded, vocab, device=device)
        self.filtered = torch.empty(self.WINDOW, len(rows), vocab, device=device)
        self.first_t = [row.t for row in rows]
        self.steps = self.flushed = 0
        self.settings = RowSettings([row.request.settings for row in rows], vocab, device)
        self.tokens_cpu = torch.zeros(padded, dtype=torch.long)
        self.tokens_host = self.tokens_cpu.numpy()  # written from Python lists without a tensor per step
        self.tokens = self.tokens_cpu if torch.device(device).type == "cpu" else self.tokens_cpu.to(device)
        self.no_draw = torch.ones(vocab, device=device)
        self.interventions = [(i, row.request.intervention) for i, row in enumerate(rows) if row.request.intervention]

    def tokens_now(self, tokens: list[int]) -> torch.Tensor:
        """The rows' tokens of this step (the padding rows read token 0), written into one tensor kept for it."""
        self.tokens_host[: len(tokens)] = tokens
        return self.tokens if self.tokens is self.tokens_cpu else self.tokens.copy_(self.tokens_cpu)

    def noise_now(self, draws: list[bool]) -> torch.Tensor:
        """Each row's noise for the character it draws now (rows that draw none get ones: their pick is unused)."""
        if len(self.rows) == 1:
            row = self.rows[0]
            index = row.t + 1 - row.prompt_len
            return row.noise[index : index + 1]
        return torch.stack([row.noise[row.t + 1 - row.prompt_len] if draw else self.no_draw
                            for row, draw in zip(self.rows, draws)])

    def state(self) -> torch.Tensor:
        return self.history[(self.steps - 1) % self.WINDOW, :, : self.state_kinds] if self.steps else self.start

    def flush(self) -> None:
        """Copy the steps not yet copied into each row's records (the window starts over after a full one)."""
        count, first = self.steps - self.flushed, self.flushed % self.WINDOW
        for i, row in enumerate(self.rows):
            t = self.first_t[i] + self.flushed
            row.values[t : t + count] = self.history[first : first + count, :, :, i]
            row.logits[t : t + count] = self.logits[first : first + count, i]
            row.filtered[t : t + count] = self.filtered[first : first + count, i]
        self.flushed = self.steps


class DecodeLoop:
    """Rows that join, step together and leave when done. Not thread-safe: one thread steps a loop."""

    def __init__(self, model, layout: Layout | None = None):
        self.model = model
        self.device = model.device
        self.weights = step_weights(model)
        self.threads = ThreadSwitch(layout, None) if layout else thread_switch(self.weights, self.device)
        self.layout = self.threads.layout  # the grouping of rows; only the thread count may change between steps
        self.rows: list[Row] = []
        self.batch: Batch | None = None

    def add(self, request: DecodeRequest) -> Row:
        row = Row(request, self.weights, self.device)
        self.rows.append(row)
        self.end_batch()
        return row

    def remove(self, row: Row) -> None:
        if row in self.rows:
            self.end_batch()
            self.rows.remove(row)

    def end_batch(self) -> None:
        if self.batch is not None:
            self.batch.flush()
            self.batch = None

    def step(self) -> list[Row]:
        """Every row reads its next character; returns the rows that finished (and left) at this step."""
        if not self.rows:
            return []
        if self.batch is None:
            self.batch = Batch(list(self.rows), self.weights, self.layout, self.device)
        batch, rows = self.batch, self.batch.rows
        slot = batch.steps % batch.WINDOW
        tokens = batch.tokens_now([row.tokens[row.t] for row in rows])
        forces = step_forces(batch.interventions, [row.t for row in rows], self.device) \
            if batch.interventions else None
        draws = [row.samples for row in rows]
        layout = self.threads.layout
        started = time.perf_counter()
        with layout.threads_set():
            _, logits = self.weights.step(layout, tokens, batch.state(), batch.scratch, forces,
                                          record=batch.history[slot], logits_out=batch.logits[slot])
            filtered = filter_rows(logits[: len(rows)], batch.settings, batch.filtered[slot])
            if any(draws):
                chosen = race(filtered, batch.noise_now(draws)).tolist()
        self.threads.record(time.perf_counter() - started)
        batch.steps += 1
        if batch.steps % batch.WINDOW == 0:
            batch.flush()
        finished = []
        for i, (row, draw) in enumerate(zip(rows, draws)):
            if draw:
                row.tokens.append(row.forced.get(row.written, chosen[i]))
            row.t += 1
            if row.done:
                finished.append(row)
        for row in finished:
            self.remove(row)
        return finished


def check_request(model, request: DecodeRequest) -> None:
    """ValueError naming what is wrong with an intervention or a forced character for this model."""
    if request.intervention is not None:
        request.intervention.check(model.num_layers, model.hidden_size, model.kinds)
    for index, token in request.forced:
        if not 0 <= index < request.settings.max_new_chars:
            raise ValueError(f"a forced character's position must be from 0 to {request.settings.max_new_chars - 1} "
                             f"(0 = the first character written), not {index}")
        if not 0 <= token < len(model.vocab):
            raise ValueError(f"a forced character must be in the model's vocabulary, not token id {token}")


def decode_rows(loop: DecodeLoop, row: Row, chunk_size: int) -> Iterator[list[int]]:
    """Step `loop` until `row` is done, yielding its newly written token ids every `chunk_size` characters.
    Each step runs in inference mode on whichever thread asks (never held across a yield)."""
    shown = 0
    while not row.done:
        with torch.inference_mode():
            while not row.done and row.written - shown < chunk_size:
                loop.step()
        yield row.tokens[row.prompt_len + shown :]
        shown = row.written


# ---- CUDA: one request, its generated steps as CUDA graph replays ----

@dataclass
class Record:
    """What the graph's steps write per position (the chunk's tokens, records, logits and filtered rows)."""

    tokens: torch.Tensor  # [T]
    values: torch.Tensor  # [T, layers, kinds, H]
    logits: torch.Tensor  # [T, vocab]
    filtered: torch.Tensor  # [T, vocab]

    @classmethod
    def empty(cls, length: int, weights: StepWeights, device) -> "Record":
        layers, hidden, vocab = weights.shape
        return cls(torch.zeros(length, dtype=torch.long, device=device),
                   torch.empty(length, layers, weights.kinds, hidden, device=device),
                   torch.empty(length, vocab, device=device), torch.empty(length, vocab, device=device))


class GraphDecoder:
    """`chunk_size` decode steps captured in one CUDA graph, for one model and one set of filter settings.

    Step i reads the character step i - 1 wrote (the first reads `token`) in the state kept in scratch.state; the
    graph ends by carrying its last character over into `token`, so the next replay continues where this one
    stopped.
    """

    def __init__(self, weights: StepWeights, layout: Layout, settings: DecodeSettings, chunk_size: int):
        device = weights.head.bias.device
        vocab = weights.shape[2]
        self.weights, self.layout, self.chunk_size = weights, layout, chunk_size
        self.settings = RowSettings([settings], vocab, device)
        self.token = torch.zeros(1, dtype=torch.long, device=device)
        self.scratch = weights.scratch(layout, 1, device)
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

    def read(self, token: torch.Tensor, record: Record, t: int, noise: torch.Tensor | None = None,
             sample_out: torch.Tensor | None = None):
        """One step reading `token` into position t of `record`; given a noise row, also sample into sample_out."""
        _, logits = self.weights.step(self.layout, token, self.scratch.state, self.scratch)
        record.values[t] = self.scratch.record[:, :, 0]
        record.logits[t] = logits[0]
        filtered = filter_probs(logits, self.settings, out=record.filtered[t : t + 1])
        if noise is not None:
            race(filtered, noise, out=sample_out)

    def _steps(self):
        token, out = self.token, self.out
        for i in range(self.chunk_size):
            self.read(token, out, i, self.noise[i : i + 1], out.tokens[i : i + 1])
            token = out.tokens[i : i + 1]
        self.token.copy_(token)


def decode_cuda_graph(decoder: GraphDecoder, record: Record, prompt_len: int, noise: torch.Tensor, chunk_size: int):
    """The prompt eagerly, then the generated part as graph replays; yields each chunk's token ids."""
    decoder.scratch.state.zero_()
    for t in range(prompt_len - 1):
        decoder.read(record.tokens[t : t + 1], record, t)
    decoder.token.copy_(record.tokens[prompt_len - 1 : prompt_len])
    chunks = noise.shape[0] // chunk_size
    host = torch.empty(chunks, chunk_size, dtype=torch.long, pin_memory=True)
    ready = [torch.cuda.Event() for _ in range(chunks)]
    for c in range(chunks):
        decoder.noise.copy_(noise[c * chunk_size : (c + 1) * chunk_size])
        decoder.graph.replay()
        start = prompt_len - 1 + c * chunk_size  # the position the chunk's first step reads
        record.values[start : start + chunk_size] = decoder.out.values
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
    cache = model.__dict__.setdefault("_graph_decoders", BoundedCache(GRAPH_CACHE_SIZE))
    key = (weights_version(model), settings.temperature, settings.top_k, settings.top_p, chunk_size)
    decoder = cache.get(key)
    if decoder is None:  # under _graph_lock: one capture at a time
        decoder = cache.put(key, GraphDecoder(weights, choose_layout(weights, model.device)[0], settings, chunk_size))
    return decoder


def decode_on_cuda(model, ids: list[int], settings: DecodeSettings, chunk_size: int):
    """A request alone on CUDA: returns the Record it fills and the chunks of new token ids (all computed)."""
    weights = step_weights(model)
    device, prompt_len, new_chars = model.device, len(ids), settings.max_new_chars
    # Noise rows for every step past the prompt, padded with ones to whole chunks for the graph.
    steps = -(-(new_chars + 1) // chunk_size) * chunk_size
    noise = torch.ones(steps, len(model.vocab))
    noise[:new_chars] = race_noise(settings, new_chars, len(model.vocab))
    record = Record.empty(prompt_len + steps, weights, device)
    record.tokens[:prompt_len].copy_(torch.tensor(ids, dtype=torch.long).pin_memory(), non_blocking=True)
    noise = noise.pin_memory().to(device, non_blocking=True)
    with _graph_lock:
        decoder = graph_decoder(model, weights, settings, chunk_size)
        chunks = list(decode_cuda_graph(decoder, record, prompt_len, noise, chunk_size))
    return weights, record, chunks


# ---- the model's weights for stepping ----

def weights_version(model) -> tuple:
    return (model.device, tuple(p._version for p in model.parameters()))


def step_weights(model) -> StepWeights:
    """StepWeights for the model's current weights, computed once and reused until the weights change."""
    version = weights_version(model)
    cached = model.__dict__.get("_step_weights")
    if cached is None or cached[0] != version:
        model.__dict__["_step_weights"] = cached = (version, model.step_weights())
    return cached[1]


# ---- one request, as the library runs it ----

def stream(model, prompt: str, settings: DecodeSettings | None = None, *, on_unknown: str = "error",
           chunk_size: int = 32, intervention: Intervention | None = None,
           forced: tuple[tuple[int, int], ...] = ()) -> Iterator[DecodeUpdate]:
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
    request = DecodeRequest(tuple(ids), settings, intervention, tuple(forced))
    check_request(model, request)
    text = model.tokenizer.decode(ids)
    if model.device.type == "cuda" and intervention is None and not forced and settings.max_new_chars > 0:
        # Torch's inference mode and the graph lock belong to a thread, and whoever consumes this generator may
        # resume it on another thread (Gradio does), so neither is held across a yield.
        with torch.inference_mode():
            weights, record, chunks = decode_on_cuda(model, ids, settings, chunk_size)
        written = 0
        for new_ids in chunks:
            new_ids = new_ids[: settings.max_new_chars - written]
            written += len(new_ids)
            text += model.tokenizer.decode(new_ids)
            if new_ids:
                yield DecodeUpdate(text)
        length = len(ids) + settings.max_new_chars
        with torch.no_grad():
            trace = build_trace(vocab=model.vocab, prompt_len=len(ids), settings=settings,
                                tokens=record.tokens[:length], values=record.values[:length],
                                kinds=weights.kind_names,
                                logits=record.logits[:length], filtered=record.filtered[:length])
        yield DecodeUpdate(trace.text, trace)
        return
    loop = DecodeLoop(model)
    row = loop.add(request)
    for new_ids in decode_rows(loop, row, chunk_size):
        text += model.tokenizer.decode(new_ids)
        if new_ids:
            yield DecodeUpdate(text)
    trace = row.trace(model, loop.weights)
    yield DecodeUpdate(trace.text, trace)


def generate(model, prompt: str, settings: DecodeSettings | None = None, *, on_unknown: str = "error",
             intervention: Intervention | None = None, forced: tuple[tuple[int, int], ...] = ()) -> Trace:
    """Run the whole generation and return its Trace."""
    for update in stream(model, prompt, settings, on_unknown=on_unknown, intervention=intervention, forced=forced):
        pass
    return update.trace
