"""python bench/memory.py: how much the page's server grows per visitor.

Starts the page in its own process (python app.py on a loopback port), lets it settle, then N visitors, each
with its own session (a gradio_client Client), write the page's longest run (2,000 characters) at the same
time. Reports the server's resident memory (VmRSS) before, after and per visitor, and what one session keeps
between events (the size of its gr.State values, measured inside the server by the same page code).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_page(port: int, env: dict | None = None) -> subprocess.Popen:
    """python app.py in its own process on a loopback port; returns once it answers."""
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "PYTHONPATH": str(ROOT),
           **(env or {})}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the page did not start within 300 s")


def visit(url: str, seed: int, chars: int) -> str:
    client = Client(url, verbose=False)
    try:
        return client.predict(prompt="ROMEO:\n", max_new_chars=chars, temperature=0.8, top_k=0, top_p=0.95,
                              seed=seed, api_name="/generate")[0]
    finally:
        client.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/memory.py", description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=24)
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=2, help="visitors before the baseline is read")
    args = parser.parse_args(argv)
    port = free_port()
    server = start_page(port)
    url = f"http://127.0.0.1:{port}/"
    try:
        for seed in range(args.warmup):  # the first runs allocate what every later run reuses
            visit(url, 10_000 + seed, args.chars)
        time.sleep(1)
        before = rss_mb(server.pid)
        texts = [None] * args.visitors

        def one(i):
            texts[i] = visit(url, i, args.chars)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(args.visitors)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
        time.sleep(1)
        after = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {"visitors": args.visitors, "chars": args.chars, "rss_before_mb": round(before, 1),
              "rss_after_mb": round(after, 1), "growth_mb": round(after - before, 1),
              "growth_per_visitor_mb": round((after - before) / args.visitors, 2),
              "all_written": all(t and len(t) == len("ROMEO:\n") + args.chars for t in texts),
              "seconds": round(seconds, 1)}
    print(f"{args.visitors} visitors x {args.chars:,} characters: server RSS {before:.0f} MB -> {after:.0f} MB, "
          f"{result['growth_mb']:+.0f} MB in all, {result['growth_per_visitor_mb']:+.2f} MB per visitor")
    print(json.dumps(result))
    return 0 if result["all_written"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
