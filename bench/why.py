"""Why this character, on the shipped model: the attribution of a speaker name's first letter after a blank line,
a patching grid for a clean/corrupted pair, and the dose-response of the line-position unit (L3 hidden 99) on the
mean line length against a control unit; each timed.

    python bench/why.py [--model weights/tiny-shakespeare] [--samples 8] [--chars 300]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from charrnn.analysis.attribution import attribute, patch
from charrnn.analysis.dose import dose_response
from charrnn.models import load_model

# A blank line after a speech: the model must choose the next speaker's first letter.
SPEECH = "ROMEO:\nIs the day so young?\n\nBENVOLIO:\nBut new struck nine.\n\nR"
# A long line or a short one: the clean line runs 66 characters, the corrupted one broke after "yonder" (a space
# made a newline), and the model is asked for a newline rather than a space.
CLEAN = "ROMEO:\nBut soft, what light through yonder window breaks? It is the east,"
CORRUPTED = CLEAN.replace("yonder window", "yonder\nwindow")
TARGET, FOIL = "\n", " "


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - started, 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="weights/tiny-shakespeare")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--chars", type=int, default=300)
    args = parser.parse_args(argv)
    model = load_model(args.model, device="cpu")

    why, seconds = timed(attribute, model, SPEECH, len(SPEECH) - 2)
    print(json.dumps({"attribution": {k: why[k] for k in ("step", "char_a", "char_b", "logit_diff", "bias")},
                      "top_units": why["units"][:8], "coverage": why["coverage"], "seconds": seconds}))

    grid, seconds = timed(patch, model, CLEAN, CORRUPTED, TARGET, FOIL)
    values = np.array(grid["grid"])
    changed = CLEAN.index("yonder") + 6
    units, unit_seconds = timed(patch, model, CLEAN, CORRUPTED, TARGET, FOIL, layer=3, step=len(CLEAN) - 2)
    top = np.argsort(-np.array(units["units"]))[:5]
    print(json.dumps({"patch": {"ld_clean": grid["clean"], "ld_corrupted": grid["corrupted"],
                                "restored_at_the_changed_step": values[:, changed].round(3).tolist(),
                                "restored_after_it_mean": values[:, changed + 1:].mean(1).round(3).tolist(),
                                "units_of_layer_3_one_step_before_the_end": [(int(u), round(units["units"][u], 3))
                                                                             for u in top]},
                      "seconds": seconds, "units_seconds": unit_seconds}))

    sweep, seconds = timed(dose_response, model, "ROMEO:\n", args.chars, 3, "hidden", 99, [-1, -0.5, 0, 0.5, 1],
                           args.samples, "mean line length")
    print(json.dumps({"dose_response": {k: sweep[k] for k in ("values", "means", "rho", "control", "samples")},
                      "runs": 2 * 5 * args.samples, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
