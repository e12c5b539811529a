"""python bench/units_page.py: how long the Units tab's endpoints take, and how long /generate takes while a long one
runs.

Launches the playground in this process and, over HTTP with gradio_client (as a visitor's browser would): /find_units
over 3,000 and 10,000 characters of the reference text alone; /generate of 300 characters alone; then /generate again,
one request after another, while /find_units over 10,000 characters runs. --share sets the fraction of the compute
thread that long jobs may take while someone's text is being written (charrnn.serving.compute.PIECES_SHARE; 1 turns the
rests off). Prints one JSON object. """

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client  # noqa: E402

from charrnn import compute  # noqa: E402
from charrnn.page import LAUNCH, build_demo  # noqa: E402

GENERATE = dict(prompt="ROMEO:\n", max_new_chars=300, temperature=0.8, top_k=0, top_p=0.95)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    began = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - began, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=compute.PIECES_SHARE)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    compute.PIECES_SHARE = args.share
    demo = build_demo()
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **LAUNCH)
    prepared = demo.units["service"].preparation(demo.site.default_key)
    while not prepared.settled:  # the match index is built in the background at startup: not measured here
        time.sleep(0.5)
    text = prepared.text
    client = Client(url, verbose=False)
    out = {"share": args.share, "torch_threads": __import__("torch").get_num_threads()}
    try:
        def find(chars, who=client):
            return who.predict(text=text[:chars], pattern="line position", api_name="/find_units")

        def generate(seed):
            """(seconds the request took, seconds the server spent writing, from its summary)"""
            seconds, (_, summary) = timed(client.predict, **GENERATE, seed=seed, api_name="/generate")
            return seconds, float(re.search(r" in ([0-9.]+) s ", summary)[1])

        find(300), generate(0)  # warm up
        out["find_3000_s"] = [round(timed(find, 3000)[0], 2) for _ in range(3)]
        out["find_10000_s"] = round(timed(find, 10_000)[0], 2)
        alone = [generate(seed) for seed in range(1, args.repeats + 1)]
        out["generate_300_alone_s"] = [round(t, 2) for t, _ in alone]
        out["generate_300_alone_writing_s"] = [round(w, 2) for _, w in alone]

        done = {}

        def long_find():
            other = Client(url, verbose=False)
            try:
                done["seconds"] = timed(find, 10_000, other)[0]
            finally:
                done["at"] = time.perf_counter()
                other.close()

        worker = threading.Thread(target=long_find)
        worker.start()
        time.sleep(0.5)
        during = []
        while "at" not in done and len(during) < 3 * args.repeats:
            took = generate(100 + len(during))
            if "at" not in done:  # only those that ended while the finder still ran
                during.append(took)
        worker.join()
        out["generate_300_during_find_10000_s"] = [round(t, 2) for t, _ in during]
        out["generate_300_during_find_10000_writing_s"] = [round(w, 2) for _, w in during]
        out["find_10000_while_generating_s"] = round(done["seconds"], 2)
        out["median_generate_alone_s"] = round(statistics.median(t for t, _ in alone), 2)
        out["median_generate_during_s"] = round(statistics.median(t for t, _ in during), 2) if during else None
    finally:
        client.close()
        demo.close()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
