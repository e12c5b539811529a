"""Driving the playground in headless Chromium (Debian's package) with Playwright: shared by the browser
test and the page benchmark."""

from __future__ import annotations

import shutil

from charrnn.figures import run as figures
from charrnn.serving import compute
from charrnn.decoding.trace import Trace

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

# True once every figure on the page shows `expected` (the same request's trace, computed by the library),
# then two animation frames so it is on screen. Comparing content, not only sizes, makes sure plotly.js drew
# what plotly.py built for this very request.
DRAWN = """(expected) => {
  const plot = id => document.querySelector(`#${id} .js-plotly-plot`);
  const p = plot('probabilities'), r = plot('heatmap-1'), u = plot('heatmap-2'), s = plot('saturation');
  const spans = id => Array.from(document.querySelectorAll(`#${id} .charrnn-text span`));
  const ready = document.querySelector('#generated-text textarea').value === expected.text
    && p && p._fullLayout && p.charrnnBars && p.charrnnBars.steps === expected.steps
    && p.charrnnBars.at(expected.steps - 1).title === expected.last_title
    && p.nextElementSibling && +p.nextElementSibling.max === expected.steps - 1
    && r && r._fullData && Array.from(r.data[0].x).join('|') === expected.labels
    && u && u._fullData && Array.from(u.data[0].x).join('|') === expected.labels
    && s && s._fullData && s._fullData.length > 0
    && Math.abs(s._fullData[0].x[0] - expected.first_saturation) < 1e-6
    && spans('surprisal').length === expected.steps && spans('unit-text').length === expected.steps
    && !document.querySelector('.generating');
  // two frames: on screen (bounded: a page whose frames are held back must not hold the wait's poll for ever)
  return ready && new Promise(done => {
    requestAnimationFrame(() => requestAnimationFrame(() => done(true)));
    setTimeout(() => done(true), 1000);
  });
}"""


@compute.on_compute_thread  # like the app's own torch work: torch work on this thread would slow the server measured
def expected_page(trace: Trace) -> dict:
    saturation = figures.saturation_figure(trace).data[0].x[0]
    labels = figures.column_labels(trace.text, *figures.step_columns(len(trace.text)))  # the whole run's columns
    return {"text": trace.text, "steps": len(trace.text), "labels": "|".join(labels),
            "last_title": figures.context(trace, len(trace.text) - 1), "first_saturation": float(saturation)}


def set_number(page, label: str, value) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")


def fill_settings(page, prompt: str, chars: int, seed: int) -> None:
    page.get_by_label("Prompt").fill(prompt)
    set_number(page, "number input for Characters to write", chars)
    set_number(page, "Seed", seed)


def generate_in_page(page, prompt: str, chars: int, seed: int, trace: Trace, timeout_s: float = 180) -> float:
    """Fill the settings, click Generate and wait until every figure shows `trace`; returns the seconds from
    the click to all figures drawn, measured by the page's own clock."""
    fill_settings(page, prompt, chars, seed)
    page.wait_for_timeout(100)  # let the inputs settle before the clock starts
    started = page.evaluate("performance.now()")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function(DRAWN, arg=expected_page(trace), timeout=timeout_s * 1000, polling=20)
    return (page.evaluate("performance.now()") - started) / 1000
