"""How interpretable a model is: python bench/explain.py [--model FOLDER] [--top 10] [--build].

Prints one JSON object from the model folder's unit atlas (charrnn.analysis.explain, built with the atlas): per layer
and kind the share of units whose explanation's held-out |r| is at least 0.5 and 0.3 beside the share whose chance
level is, over all units the same, the best-explained units with their labels, the candidates' count, and the atlas's
recorded build time. With --build the atlas is built again in memory first (the time it takes is printed too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charrnn import load_model  # noqa: E402
from charrnn.analysis.atlas import atlas_for, build_atlas, read_patterns, read_reference_text  # noqa: E402
from charrnn.analysis.explain import hover_label  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "weights" / "tiny-shakespeare"))
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--build", action="store_true", help="build the atlas again, in memory, and time it")
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    report = {"model": args.model}
    if args.build:
        began = time.perf_counter()
        atlas = build_atlas(model, read_reference_text(args.model), patterns=read_patterns(args.model))
        report["build_seconds"] = round(time.perf_counter() - began, 1)
    else:
        atlas = atlas_for(model, args.model, build=False)
        report["recorded_build_seconds"] = float(atlas.meta["build_seconds"])
    explained = atlas.explanations
    rows = explained.rows()
    report |= {
        "candidates": len(explained.labels), "candidate_families": dict(Counter(explained.families)),
        "overall": explained.overall(),
        "shares": [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                   for row in explained.shares()],
        "explanations_by_family": dict(Counter(row["family"] for row in rows)),
        "best": [hover_label(row) for row in explained.best(args.top)],
    }
    print(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
