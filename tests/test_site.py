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


def test_the_figures_of_a_run_evicted_while_waited_on_are_its_own(shipped):
    """A run cache that holds one run, and another run kept between the write and the figures: the figures' event
    writes the run again and draws that very run."""
    from charrnn.serving.runs import RunCache

    site = Site(device="cpu")
    site.runs = RunCache(site.server, max_bytes=1)  # the newest run only
    model = site.default_model
    recipe = Recipe(site.default_key, "KING:\n", DecodeSettings(120, 0.8, 0, 0.95, 41))
    other = Recipe(site.default_key, "QUEEN:\n", DecodeSettings(60, 0.8, 0, 0.95, 42))
    keep = site.runs.keep

    def keep_then_evict(kept, job):  # another visitor's run is kept right after this one, evicting it
        keep(kept, job)
        if kept == recipe:
            keep(other, site.server.submit(model, other.request(model)))

    site.runs.keep = keep_then_evict
    written = site.server.counts["written"]
    job = site.server.submit(model, recipe.request(model))
    found = {}
    with site.writing(recipe, job):
        waiting = threading.Thread(target=lambda: found.setdefault("trace", site.written(recipe)))
        waiting.start()
        job.result()
        waiting.join(timeout=120)
    assert found["trace"].text == shipped.generate("KING:\n", recipe.settings).text
    assert site.server.counts["written"] == written + 3  # the run, the other, and the run again
    site.server.close()


def test_the_figures_wait_for_another_event_at_most_a_bound(site, monkeypatch):
    class Stuck:  # a run that never ends
        error, row = None, None

        def wait(self, timeout=None):
            time.sleep(min(timeout, 0.2))
            return False

    monkeypatch.setattr("charrnn.page.site.WAIT_S", 0.2)
    recipe = Recipe(site.default_key, "KING:\n", DecodeSettings(50, 0.8, 0, 0.95, 43))
    started = time.monotonic()
    with site.writing(recipe, Stuck()):
        assert site.written(recipe) is None
    assert time.monotonic() - started < 5


def test_the_figures_of_a_run_written_before_wait_for_its_click_to_begin_it(site):
    """A run kept from before is found at once, and the click's figures' event may reach the server before its
    text's event has made the run the visitor's latest: it waits for that (Site.became_latest), within a bound."""
    place, old, new = ("session", "write"), Recipe(site.default_key, "A", DecodeSettings(5)), \
        Recipe(site.default_key, "B", DecodeSettings(5))
    site.begin(place, old)
    began = threading.Timer(0.3, site.begin, (place, new))
    began.start()
    started = time.monotonic()
    assert site.became_latest(place, new, timeout=30)
    assert 0.25 <= time.monotonic() - started < 10
    started = time.monotonic()
    assert not site.became_latest(place, old, timeout=0.3)  # replaced: no figures, after at most the bound
    assert 0.3 <= time.monotonic() - started < 5
