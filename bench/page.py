"""python bench/page.py: the page's cost of drawing a run, against /generate alone, in one run.

Launches the playground and, for runs of 300 and 2,000 characters (temperature 0.8, top-p 0.95, one seed per
repeat), measures in turn:

- /generate alone: the same request through gradio_client (seconds from the call to the text);
- in headless Chromium: seconds from clicking Generate to the whole text shown, and to every figure drawn
  (the page's own clock; after the text, the time until the last of the figures has arrived and until all
  are drawn), and the bytes the browser received for each of the click's two events (the text's,
  /generate, and the figures'): the messages of Gradio's event stream (server-sent events, not compressed)
  for that event, counted in the page as they arrive.

Prints a table (medians of the repeats after one warm-up of each length; the ratio is taken per run) and one
JSON object with every run.
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
from playwright.sync_api import sync_playwright  # noqa: E402

from bench.browser import CHROMIUM, CHROMIUM_ARGS, DRAWN, expected_page, fill_settings  # noqa: E402
from charrnn import DecodeSettings  # noqa: E402
from charrnn.page import views as pg  # noqa: E402
from charrnn.serving.compute import on_compute_thread  # noqa: E402

TEXT_DONE = "t => document.querySelector('#generated-text textarea').value === t"

# Counts the bytes of every message of Gradio's event stream (server-sent events over fetch), by event.
COUNT_EVENT_BYTES = """(() => {
  window.benchMessages = [];  // [event_id, msg, bytes, arrival (performance.now()), from the text's event]
  const fetch = window.fetch, encoder = new TextEncoder();
  window.fetch = async (...args) => {
    const response = await fetch(...args);
    const url = String((args[0] && args[0].url) || args[0]);
    if (!url.includes("/queue/data") || !response.body) return response;
    const [counted, passed] = response.body.tee();
    (async () => {
      const reader = counted.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {done, value} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        for (let end; (end = buffer.indexOf("\\n\\n")) >= 0; buffer = buffer.slice(end + 2)) {
          const message = buffer.slice(0, end + 2);
          let data = {};
          try { data = JSON.parse(message.replace(/^data: /, "")); } catch (e) {}
          window.benchMessages.push([data.event_id || null, data.msg || null, encoder.encode(message).length,
                                     performance.now(), message.includes("Writing")]);
        }
      }
    })();
    return new Response(passed, {headers: response.headers, status: response.status, statusText: response.statusText});
  };
})();"""


def time_generate(client: Client, prompt: str, chars: int, seed: int, expected: str) -> float:
    started = time.perf_counter()
    text, _ = client.predict(prompt=prompt, max_new_chars=chars, temperature=0.8, top_k=0, top_p=0.95, seed=seed,
                             api_name="/generate")
    seconds = time.perf_counter() - started
    assert text == expected, "the endpoint wrote another text than the library"
    return seconds


def time_page(page, prompt: str, chars: int, seed: int, trace) -> dict:
    """Click Generate; seconds to the whole text and to every figure drawn, with the figures' part after the
    text split in two (the text shown -> the figures' event's result arrived -> all drawn), and the bytes of
    each of the click's events."""
    fill_settings(page, prompt, chars, seed)
    expected = expected_page(trace)
    page.wait_for_timeout(300)  # let the inputs settle and anything pending arrive before the clock starts
    first_message = page.evaluate("window.benchMessages.length")
    started = page.evaluate("performance.now()")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(TEXT_DONE, arg=trace.text, timeout=180_000, polling=10)
    text_at = page.evaluate("performance.now()")
    page.wait_for_function(DRAWN, arg=expected, timeout=180_000, polling=20)
    drawn_at = page.evaluate("performance.now()")
    page.wait_for_timeout(500)  # the tail of the event stream (completion messages) belongs to this click
    events: dict[str, dict] = {}
    for event_id, msg, size, at, writing in page.evaluate(f"window.benchMessages.slice({first_message})"):
        if event_id is not None:
            event = events.setdefault(event_id, {"bytes": 0, "text": False})
            event["bytes"] += size
            event[msg] = at
            event["text"] |= writing
    # one click, two events: the text's (/generate: "Writing… n characters") and the figures'
    assert len(events) == 2, f"one click made {len(events)} events"
    text_event, figures_event = sorted(events.values(), key=lambda e: not e["text"])
    figures_at = figures_event["process_completed"]
    return {"text_s": (text_at - started) / 1000, "figures_s": (drawn_at - started) / 1000,
            "figures_arrive_s": (figures_at - text_at) / 1000, "figures_browser_s": (drawn_at - max(figures_at, text_at)) / 1000,
            "text_event_bytes": text_event["bytes"], "figures_event_bytes": figures_event["bytes"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/page.py", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of 300 characters")
    parser.add_argument("--long-repeats", type=int, default=3, help="timed runs of 2,000 characters")
    parser.add_argument("--prompt", default="ROMEO:\n")
    parser.add_argument("--lengths", type=int, nargs="+", default=[300, 2000], choices=[300, 2000])
    args = parser.parse_args(argv)

    import app

    _, url, _ = app.demo.launch(prevent_thread_lock=True, quiet=True, **app.LAUNCH)
    model = app.demo.site.default_model
    result = {"device": pg.device_description(model), "chromium": CHROMIUM}
    client = Client(url, verbose=False)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.add_init_script(COUNT_EVENT_BYTES)
            page.goto(url)
            page.wait_for_selector("#probabilities .js-plotly-plot", timeout=60_000)
            for chars in args.lengths:
                repeats = args.repeats if chars == 300 else args.long_repeats
                runs = []
                for seed in range(100, 100 + repeats + 1):  # the first run of each length warms up
                    # On the compute thread, as the app does: torch work here would slow the server measured.
                    trace = on_compute_thread(model.generate)(args.prompt, DecodeSettings(chars, 0.8, 0, 0.95, seed))
                    alone = time_generate(client, args.prompt, chars, seed, trace.text)
                    app.demo.site.runs.clear()  # the page writes the run again: its figures find nothing kept
                    runs.append({"generate_s": alone, **time_page(page, args.prompt, chars, seed, trace)})
                runs = runs[1:]
                for run in runs:
                    run["ratio"] = run["figures_s"] / run["generate_s"]
                summary = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
                summary["runs"] = [{k: round(v, 3) for k, v in run.items()} for run in runs]
                result[str(chars)] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in summary.items()}
            browser.close()
    finally:
        client.close()
        app.demo.close()
    print(f"device: {result['device']}; medians of {args.repeats} (300) and {args.long_repeats} (2,000) runs")
    print(f"{'chars':>6} {'/generate alone':>16} {'click->text':>12} {'click->figures':>15} {'ratio':>6}   "
          f"{'after the text: figures in':>26} {'drawn':>7}   {'text event':>11} {'figures event':>14}")
    for chars in map(str, args.lengths):
        r = result[chars]
        print(f"{chars:>6} {r['generate_s']:>14.2f} s {r['text_s']:>10.2f} s {r['figures_s']:>13.2f} s "
              f"{r['ratio']:>5.2f}x   {r['figures_arrive_s']:>24.2f} s {r['figures_browser_s']:>5.2f} s   "
              f"{r['text_event_bytes'] / 1e3:>8.1f} kB {r['figures_event_bytes'] / 1e3:>11.1f} kB")
    print("ratio: click -> every figure drawn / /generate alone, per run (each run's /generate call just before "
          "its click)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
