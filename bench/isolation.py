"""python bench/isolation.py: does a slow model download for one visitor hold up the others?

A loopback Hub (tests/hub_server.py, the real huggingface_hub client talks to it) serves the shipped model as
`someone/slow`, trickling model.safetensors so that its download takes about `--download-s` seconds. The page
runs in its own process pointed at that Hub. One visitor asks the page to load `someone/slow`; while that
download is in flight, another visitor writes 100 characters on the model already loaded, again and again.
Reports that visitor's /generate latency alone (before) and during the download, and whether the download
was still in flight when the last of those requests answered.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from hub_server import FakeHub, Trickle  # noqa: E402

from bench.load import generate, request  # noqa: E402
from bench.memory import free_port, start_page  # noqa: E402


def load_model(url: str, source: str) -> str:
    with httpx.Client(timeout=600) as client:
        posted = client.post(f"{url}/gradio_api/call/load_model", json={"data": [source, ""]})
        with client.stream("GET", f"{url}/gradio_api/call/load_model/{posted.json()['event_id']}") as stream:
            return "".join(line for line in stream.iter_lines() if line.startswith("event:"))


def timed_generations(url: str, count: int, chars: int) -> list[float]:
    times = []
    with httpx.Client(timeout=600) as client:
        for i in range(count):
            started = time.perf_counter()
            generate(client, url, request(1, i, chars))
            times.append(time.perf_counter() - started)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/isolation.py", description=__doc__.splitlines()[0])
    parser.add_argument("--download-s", type=float, default=20.0)
    parser.add_argument("--chars", type=int, default=100)
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args(argv)
    folder = ROOT / "weights" / "tiny-shakespeare"
    files = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}
    chunk = 64 * 1024
    pause = args.download_s / (len(files["model.safetensors"]) / chunk)
    with FakeHub() as hub, tempfile.TemporaryDirectory() as cache:
        hub.commit("someone/slow", files)
        hub.trickle[("someone/slow", "model.safetensors")] = Trickle(chunk=chunk, pause=pause)
        port = free_port()
        server = start_page(port, {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": cache, "HF_HUB_DISABLE_TELEMETRY": "1"})
        url = f"http://127.0.0.1:{port}"
        try:
            timed_generations(url, 1, args.chars)  # warm up
            alone = timed_generations(url, args.requests, args.chars)
            loading: dict = {}
            loader = threading.Thread(target=lambda: loading.update(started=time.perf_counter(), events=load_model(
                url, "someone/slow"), ended=time.perf_counter()))
            loader.start()
            while hub.sent_to("someone/slow", "model.safetensors") == 0:  # the download has begun
                time.sleep(0.05)
            during = timed_generations(url, args.requests, args.chars)
            in_flight = loader.is_alive()
            loader.join(600)
        finally:
            server.terminate()
            server.wait(timeout=30)
    result = {"alone_median_s": round(statistics.median(alone), 3),
              "during_download_median_s": round(statistics.median(during), 3),
              "during_download_max_s": round(max(during), 3), "download_s": round(loading["ended"] - loading["started"], 1),
              "still_downloading_after_the_last_request": in_flight, "load_events": loading["events"]}
    print(f"/generate of {args.chars} characters: {result['alone_median_s']} s alone (median of {args.requests}), "
          f"{result['during_download_median_s']} s (max {result['during_download_max_s']} s) while another visitor's "
          f"{result['download_s']} s model download was in flight (still in flight after the last: {in_flight})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
