"""What the page's visitors share (charrnn.page.site): the figures' event of a click finds the run that the
click's text event is writing, as soon as it is written."""

import threading
import time

import pytest

from charrnn import DecodeSettings
from charrnn.page.site import Site
from charrnn.serving.runs import Recipe


@pytest.fixture(scope="module")
def site():
    return Site(device="cpu")


def test_the_figures_wait_for_the_run_being_written(site, shipped):
    model = site.default_model
    recipe = Recipe(site.default_key, "KING:\n", DecodeSettings(150, 0.8, 0, 0.95, 31))
    found = {}
    waiting = threading.Thread(target=lambda: found.setdefault("trace", site.written(recipe)))
    waiting.start()  # before the run starts, as the click's two events may arrive in either order
    time.sleep(0.2)
    job = site.server.submit(model, recipe.request(model))
    with site.writing(recipe, job):
        job.result()
        site.runs.keep(recipe, job)
    waiting.join(timeout=60)
    assert found["trace"].text == shipped.generate("KING:\n", recipe.settings).text
    assert recipe not in site.being_written


def test_no_figures_when_no_run_starts_or_it_is_cancelled(site):
    model = site.default_model
    never = Recipe(site.default_key, "KING:\n", DecodeSettings(50, 0.8, 0, 0.95, 32))
    started = time.monotonic()
    assert site.written(never, start_timeout=0.3) is None
    assert 0.3 <= time.monotonic() - started < 5
    cancelled = Recipe(site.default_key, "KING:\n", DecodeSettings(2000, 0.8, 0, 0.95, 33))
    job = site.server.submit(model, cancelled.request(model))
    found = {}
    with site.writing(cancelled, job):
        waiting = threading.Thread(target=lambda: found.setdefault("trace", site.written(cancelled)))
        waiting.start()
        job.cancel()
        waiting.join(timeout=60)
    assert found["trace"] is None and not site.runs.has(cancelled)
