"""python bench/whatif.py: /intervene and /branch against /generate, the same settings and length, one launched app.

Each round calls /generate, /intervene and /branch once each (in a rotating order, so none always runs first), each
with a seed of its own for the round so no run comes from the run cache; the result is each endpoint's median
round-trip time over the rounds and its ratio to /generate's. /intervene and /branch write two runs each (the run as
it is and the changed one, in the same batch) and build both traces, so a ratio near 1 means the second run is
almost free (batched: one step reads the weights for both rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client  # noqa: E402


def calls(chars: int, seed: int) -> dict:
    run = dict(prompt="ROMEO:\n", max_new_chars=chars, temperature=0.8, top_k=0, top_p=0.95, seed=seed)
    return {"/generate": run,
            "/intervene": dict(run, layer=3, kind="hidden", unit=99, value=0.9, from_step=6),
            "/branch": dict(run, step=chars // 3, char="e")}


def measure(url: str, chars: int, rounds: int) -> dict:
    client = Client(url, verbose=False)
    times = {name: [] for name in calls(chars, 0)}
    try:
        for name, kwargs in calls(chars, 10_000).items():  # warm-up: every endpoint once
            client.predict(**kwargs, api_name=name)
        for r in range(rounds):
            names = list(times)
            names = names[r % 3 :] + names[: r % 3]
            for name in names:
                kwargs = calls(chars, 1 + r)[name]
                started = time.perf_counter()
                client.predict(**kwargs, api_name=name)
                times[name].append(time.perf_counter() - started)
    finally:
        client.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"chars": chars, "rounds": rounds, "median_s": {n: round(v, 3) for n, v in medians.items()},
            "ratio_to_generate": {n: round(v / medians["/generate"], 2) for n, v in medians.items()},
            "all_s": {n: [round(v, 3) for v in values] for n, values in times.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/whatif.py", description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    import app

    _, url, _ = app.demo.launch(prevent_thread_lock=True, quiet=True, **app.LAUNCH)
    try:
        result = measure(url, args.chars, args.rounds)
    finally:
        app.demo.close()
    print(", ".join(f"{name} {result['median_s'][name]} s ({result['ratio_to_generate'][name]}x)"
                    for name in result["median_s"]) + f"  [{args.chars} characters, median of {args.rounds}]")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
