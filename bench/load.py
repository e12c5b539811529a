"""python bench/load.py: a bounded load test of the playground on loopback.

8 concurrent gradio_client users x 10 generations each (200 characters, each request its own seed) against
one launched app. Reports errors, p50/p95 latency, and whether every output equals the same request made
alone (the library's text for it, which the HTTP tests show the app returns when unloaded).
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

from gradio_client import Client  # noqa: E402

from charrnn import DecodeSettings  # noqa: E402
from charrnn.compute import on_compute_thread  # noqa: E402


def request(user: int, i: int, chars: int) -> dict:
    return dict(prompt=["ROMEO:\n", "JULIET:\n", "KING:\n", "First Citizen:\n"][user % 4], max_new_chars=chars,
                temperature=[0.8, 1.0, 0.5, 1.2][i % 4], top_k=[0, 0, 10, 5][i % 4], top_p=[0.95, 1.0, 0.9, 1.0][i % 4],
                seed=1000 * user + i)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_load(url: str, model, users: int = 8, per_user: int = 10, chars: int = 200) -> dict:
    latencies, errors, mismatches = [], [], []
    # Every request made alone, before the load (on pg's compute thread, like the app's own work: torch work
    # on the user threads would slow the server it measures).
    alone = {}
    for u in range(users):
        for i in range(per_user):
            settings = request(u, i, chars)
            prompt = settings.pop("prompt")
            alone[u, i] = on_compute_thread(model.generate)(prompt, DecodeSettings(**settings)).text
    lock = threading.Lock()

    def user(u: int) -> None:
        client = Client(url, verbose=False)
        try:
            for i in range(per_user):
                kwargs = request(u, i, chars)
                started = time.perf_counter()
                try:
                    text = client.predict(**kwargs, api_name="/generate")[0]
                except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                    with lock:
                        errors.append(f"user {u} request {i}: {e}")
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if text != alone[u, i]:
                        mismatches.append((u, i))
        finally:
            client.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"users": users, "requests_per_user": per_user, "chars": chars, "requests": users * per_user,
            "completed": len(latencies), "errors": errors, "mismatches": mismatches,
            "p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "p95_s": round(percentile(latencies, 0.95), 3) if latencies else None,
            "max_s": round(max(latencies), 3) if latencies else None, "wall_s": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/load.py", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10, help="generations per user")
    parser.add_argument("--chars", type=int, default=200)
    args = parser.parse_args(argv)
    import app

    _, url, _ = app.demo.launch(prevent_thread_lock=True, quiet=True, **app.LAUNCH)
    try:
        result = run_load(url, app.demo.site.default_model, args.users, args.requests, args.chars)
    finally:
        app.demo.close()
    print(f"{result['completed']}/{result['requests']} requests, {len(result['errors'])} errors, "
          f"{len(result['mismatches'])} outputs differing from the request made alone; "
          f"p50 {result['p50_s']} s, p95 {result['p95_s']} s, {result['requests_per_s']} requests/s")
    print(json.dumps(result))
    return 0 if not result["errors"] and not result["mismatches"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
