"""python bench/page.py: seconds from clicking Generate to every figure drawn, in headless Chromium.

Runs the playground and a trivial Gradio app (one textbox echoed back) in the same process and times both
in the same browser: the trivial app's round trip is the floor this machine puts under any Gradio event.
Generations of 300 and 2,000 characters (temperature 0.8, top-p 0.95) on a warm page, median of the repeats;
also the size of the figures sent for 2,000 characters. Prints a table and one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from bench.browser import CHROMIUM, CHROMIUM_ARGS, generate_in_page  # noqa: E402
from charrnn import DecodeSettings  # noqa: E402
from charrnn import playground as pg  # noqa: E402
from charrnn.compute import on_compute_thread  # noqa: E402


def trivial_app() -> gr.Blocks:
    with gr.Blocks() as demo:
        text = gr.Textbox(label="In", elem_id="in")
        echo = gr.Button("Echo")
        out = gr.Textbox(label="Out", elem_id="out")
        echo.click(lambda s: s[::-1], text, out)
    return demo


def time_trivial(page, url: str, repeats: int) -> list[float]:
    page.goto(url)
    page.wait_for_selector("#in textarea")
    times = []
    for i in range(repeats + 1):
        word = f"round trip {i}"
        page.locator("#in textarea").fill(word)
        started = page.evaluate("performance.now()")
        page.get_by_role("button", name="Echo").click()
        page.wait_for_function("w => document.querySelector('#out textarea').value === w", arg=word[::-1],
                               polling=5)
        times.append((page.evaluate("performance.now()") - started) / 1000)
    return times[1:]  # the first one warms the connection


def payload_bytes(trace) -> int:
    shown = pg.all_figures(trace, pg.View())
    return sum(len(v) if isinstance(v, str) else len(v.to_json()) for v in shown.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/page.py", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed generations of 300 characters")
    parser.add_argument("--long-repeats", type=int, default=3, help="timed generations of 2,000 characters")
    parser.add_argument("--prompt", default="ROMEO:\n")
    args = parser.parse_args(argv)

    import app

    _, url, _ = app.demo.launch(prevent_thread_lock=True, quiet=True, **app.LAUNCH)
    trivial = trivial_app()
    _, trivial_url, _ = trivial.launch(prevent_thread_lock=True, quiet=True)
    model = app.demo.site.default_model
    result = {"device": pg.device_description(model), "chromium": CHROMIUM}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            result["trivial_round_trip_s"] = time_trivial(page, trivial_url, args.repeats)
            page.goto(url)
            page.wait_for_selector("#probabilities .js-plotly-plot", timeout=60_000)
            for chars, repeats in ((300, args.repeats), (2000, args.long_repeats)):
                times = []
                for seed in range(repeats + 1):  # the first run of each length warms up
                    # On pg's compute thread, as the app does: torch work here would slow the server measured.
                    trace = on_compute_thread(model.generate)(args.prompt, DecodeSettings(chars, 0.8, 0, 0.95, 100 + seed))
                    times.append(generate_in_page(page, args.prompt, chars, 100 + seed, trace))
                result[f"click_to_figures_{chars}_s"] = [round(t, 3) for t in times[1:]]
                if chars == 2000:
                    result["figure_payload_bytes_2000"] = payload_bytes(trace)
            browser.close()
    finally:
        app.demo.close()
        trivial.close()
    trivial_s = statistics.median(result["trivial_round_trip_s"])
    result["trivial_round_trip_s"] = [round(t, 3) for t in result["trivial_round_trip_s"]]
    summary = {"trivial_median_s": round(trivial_s, 3)}
    for chars in (300, 2000):
        median = statistics.median(result[f"click_to_figures_{chars}_s"])
        summary[f"median_{chars}_s"] = round(median, 3)
        summary[f"ratio_{chars}_to_trivial"] = round(median / trivial_s, 1)
    result.update(summary)
    print(f"device: {result['device']}")
    print(f"trivial Gradio round trip      {summary['trivial_median_s']:.3f} s")
    for chars in (300, 2000):
        print(f"{chars:>5} characters, click to figures drawn {summary[f'median_{chars}_s']:.3f} s "
              f"({summary[f'ratio_{chars}_to_trivial']}x the trivial round trip)")
    print(f"figures for 2,000 characters: {result['figure_payload_bytes_2000'] / 1e6:.2f} MB of JSON/HTML")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
