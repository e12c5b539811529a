"""What the unit analyses find in a model, and how long they take: python bench/units.py [--model FOLDER].

Prints one JSON object: for each built-in signal the best units over the first --chars characters of the model's
reference text (find_units, one pass from the zero state), the gates-by-context claims with their verdicts, the
memory timescales per layer, and the times of the pass, the finder and the match index.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from charrnn import CharRNN  # noqa: E402
from charrnn.analysis.activations import one_thread, read  # noqa: E402
from charrnn.analysis.atlas import atlas_for  # noqa: E402
from charrnn.analysis.contexts import gates_by_context_of  # noqa: E402
from charrnn.analysis.matching import MATCH_CHARS, build_match_index  # noqa: E402
from charrnn.analysis.signals import BUILTIN, SignalError  # noqa: E402
from charrnn.analysis.units import find_units  # noqa: E402


def best_rows(model, text, pattern, values, rows):
    """The best `rows` units of any kind, and the best hidden unit (what the model card's figures speak of)."""
    ranking = find_units(model, text, pattern, top=3 * 3 * 512, max_chars=None, values=values)["units"]
    return {"best": ranking[:rows], "best_hidden": next(r for r in ranking if r["kind"] == "hidden")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "weights" / "tiny-shakespeare"))
    parser.add_argument("--chars", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=3)
    args = parser.parse_args()
    model = CharRNN.from_pretrained(args.model, device="cpu")
    began = time.perf_counter()
    atlas = atlas_for(model, args.model)
    out = {"atlas_seconds": round(time.perf_counter() - began, 2), "atlas_meta": atlas.meta}
    text = atlas.text[: args.chars]

    began = time.perf_counter()
    values = read(model, text)
    out["pass_seconds"] = round(time.perf_counter() - began, 2)
    out["pass_chars"] = len(text)
    began = time.perf_counter()
    find_units(model, text[:3000], "line position", max_chars=None)
    out["find_3000_chars_seconds"] = round(time.perf_counter() - began, 2)

    out["signals"] = {}
    for name in BUILTIN:
        try:
            out["signals"][name] = best_rows(model, text, name, values, args.rows)
        except SignalError as e:
            out["signals"][name] = str(e)
    out["signals"]["/^[A-Z][A-Za-z ]*:$/ (regex)"] = best_rows(model, text, r"^[A-Z][A-Za-z ]*:$", values, args.rows)

    result = gates_by_context_of(atlas)
    out["claims"] = [{k: claim[k] for k in ("gate", "seed", "context", "baseline", "expected", "counts", "summary")}
                     | {"layers": [{k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v]
                                        if isinstance(v, list) else v) for k, v in row.items()}
                                   for row in claim["layers"]]} for claim in result["claims"]]
    out["rule"] = result["rule"]
    tau = atlas.timescale
    out["timescales"] = [{"layer": k + 1, "median": round(float(np.median(t)), 2),
                          "p90": round(float(np.percentile(t, 90)), 1), "max": round(float(t.max()), 1),
                          "over_10": int((t > 10).sum()), "over_100": int((t > 100).sum())} for k, t in enumerate(tau)]

    began = time.perf_counter()
    with one_thread():
        index = build_match_index(model, atlas.text)
    out["match_index"] = {"chars": MATCH_CHARS, "bytes": index.nbytes, "seconds": round(time.perf_counter() - began, 2)}
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
