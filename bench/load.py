"""python bench/load.py: a classroom at once, on loopback, against one request alone on the same server.

First one visitor alone makes the same kind of request several times (the baseline: its latency and chars/s).
Then N visitors (own gradio_client sessions, default 30) each make R requests (default 2) of C characters
(default 300), all starting at once, each request its own seed and settings. Reports errors, p50/p95
latency, p95 as a multiple of the request alone, characters per second in all as a multiple of one visitor
alone, and whether every text equals the same request made alone (the library's text for it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import httpx  # noqa: E402

from charrnn import DecodeSettings  # noqa: E402

ARGUMENTS = ("prompt", "max_new_chars", "temperature", "top_k", "top_p", "seed")


class GenerateError(RuntimeError):
    pass


def generate(client: httpx.Client, url: str, kwargs: dict) -> str:
    """One /generate through Gradio's own HTTP API (POST the inputs, then read the event's stream), as a browser
    would; light enough that thirty of them do not eat the cores the server being measured runs on (a
    gradio_client Client first downloads the page's whole config, 0.7 MB here)."""
    posted = client.post(f"{url}/gradio_api/call/generate", json={"data": [kwargs[k] for k in ARGUMENTS]})
    posted.raise_for_status()
    event, data = None, None
    with client.stream("GET", f"{url}/gradio_api/call/generate/{posted.json()['event_id']}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                data = line[5:].strip()
                break
    if event != "complete":
        raise GenerateError(f"{event}: {data}")
    return json.loads(data)[0]


def request(user: int, i: int, chars: int) -> dict:
    return dict(prompt=["ROMEO:\n", "JULIET:\n", "KING:\n", "First Citizen:\n"][user % 4], max_new_chars=chars,
                temperature=[0.8, 1.0, 0.5, 1.2][i % 4], top_k=[0, 0, 10, 5][i % 4], top_p=[0.95, 1.0, 0.9, 1.0][i % 4],
                seed=1000 * user + i)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_alone(url: str, chars: int = 300, repeats: int = 7) -> dict:
    """One visitor alone, one request after another: the latency and chars/s every figure is compared with."""
    url = url.rstrip("/")
    with httpx.Client(timeout=600) as client:
        times = []
        for i in range(repeats + 1):  # the first one warms the connection
            started = time.perf_counter()
            generate(client, url, request(0, i, chars))
            times.append(time.perf_counter() - started)
    latency = statistics.median(times[1:])
    return {"alone_latency_s": round(latency, 3), "alone_chars_per_s": round(chars / latency)}


def run_load(url: str, model, users: int = 8, per_user: int = 10, chars: int = 200, same: bool = False) -> dict:
    """`same`: every visitor asks for the same request (a class opening one link); the server writes it once."""
    latencies, errors, mismatches = [], [], []
    ask = (lambda u, i, c: request(0, 99 + i, c)) if same else request  # 99: runs that run_alone did not write

    # Every request made alone, by the library, before the load.
    alone = {}
    for u in range(users):
        for i in range(per_user):
            settings = ask(u, i, chars)
            prompt = settings.pop("prompt")
            alone[u, i] = model.generate(prompt, DecodeSettings(**settings)).text
    lock = threading.Lock()

    url = url.rstrip("/")
    ready = threading.Barrier(users + 1)

    def user(u: int) -> None:
        with httpx.Client(timeout=600) as client:  # a visitor: its own connection, its own sessions
            ready.wait()
            for i in range(per_user):
                started = time.perf_counter()
                try:
                    text = generate(client, url, ask(u, i, chars))
                except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                    with lock:
                        errors.append(f"user {u} request {i}: {e}")
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if text != alone[u, i]:
                        mismatches.append((u, i))

    threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    ready.wait()  # all at once
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"users": users, "requests_per_user": per_user, "chars": chars, "requests": users * per_user,
            "completed": len(latencies), "errors": errors, "mismatches": mismatches,
            "p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "p95_s": round(percentile(latencies, 0.95), 3) if latencies else None,
            "max_s": round(max(latencies), 3) if latencies else None, "wall_s": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 2), "chars_per_s": round(len(latencies) * chars / wall)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/load.py", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--requests", type=int, default=2, help="generations per user")
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument("--same", action="store_true", help="every visitor asks for the same runs (one link)")
    args = parser.parse_args(argv)
    from bench.memory import free_port, start_page
    from charrnn.bench import cpu_model
    from charrnn.models.loading import load_model
    from charrnn.models.shipped import shipped_model

    # The page runs in its own process, as on a Space: the visitors' clients must not share its interpreter.
    port = free_port()
    server = start_page(port)
    url = f"http://127.0.0.1:{port}/"
    try:
        alone = run_alone(url, args.chars)
        result = run_load(url, load_model(shipped_model(), device="cpu"), args.users, args.requests, args.chars,
                          args.same)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result.update(alone, cpu=cpu_model())
    result["p95_over_alone"] = round(result["p95_s"] / alone["alone_latency_s"], 2) if result["p95_s"] else None
    result["throughput_over_alone"] = round(result["chars_per_s"] / alone["alone_chars_per_s"], 2)
    print(f"alone: {alone['alone_latency_s']} s per request, {alone['alone_chars_per_s']:,} chars/s")
    print(f"{args.users} visitors x {args.requests} x {args.chars} chars: {result['completed']}/{result['requests']} "
          f"requests, {len(result['errors'])} errors, {len(result['mismatches'])} texts differing from the same "
          f"request alone; p50 {result['p50_s']} s, p95 {result['p95_s']} s ({result['p95_over_alone']}x alone); "
          f"{result['chars_per_s']:,} chars/s in all ({result['throughput_over_alone']}x one visitor alone)")
    print(json.dumps(result))
    return 0 if not result["errors"] and not result["mismatches"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
