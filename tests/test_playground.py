"""The page's logic without the page: input checks, the model cache, streaming and views."""

import threading

import pytest

from charrnn import DecodeSettings, ModelLoadError
from charrnn.page import views as pg
from charrnn.serving import compute
from charrnn.page import inputs
from charrnn.serving.registry import ModelRegistry

from threads import in_threads


@pytest.mark.parametrize("args,message", [
    (("", 100, 0.8, 0, 0.95, 1), "The prompt is empty"),
    ((None, 100, 0.8, 0, 0.95, 1), "The prompt is empty"),
    (("Señor", 100, 0.8, 0, 0.95, 1), "'ñ'"),
    (("a" * 2001, 100, 0.8, 0, 0.95, 1), "The prompt is 2,001 characters long; the page takes at most 2,000"),
    (("ROMEO", 0, 0.8, 0, 0.95, 1), "Number of characters must be a whole number from 1 to 2,000"),
    (("ROMEO", 2001, 0.8, 0, 0.95, 1), "from 1 to 2,000, not 2001"),
    (("ROMEO", 12.5, 0.8, 0, 0.95, 1), "Number of characters must be a whole number"),
    (("ROMEO", 10, -1, 0, 0.95, 1), "Temperature must be a number from 0 to 5"),
    (("ROMEO", 10, float("nan"), 0, 0.95, 1), "Temperature must be a number"),
    (("ROMEO", 10, 0.8, 66, 0.95, 1), "Top-k must be a whole number from 0 to 65"),
    (("ROMEO", 10, 0.8, 0, 0, 1), "Top-p must be a number above 0 up to 1"),
    (("ROMEO", 10, 0.8, 0, 1.5, 1), "Top-p must be a number above 0 up to 1"),
    (("ROMEO", 10, 0.8, 0, 0.95, -1), "Seed must be a whole number from 0"),
    (("ROMEO", 10, 0.8, 0, 0.95, None), "Seed must be a whole number"),
    (("ROMEO", 10, 0.8, 0, 0.95, "abc"), "Seed must be a whole number"),
])
def test_bad_inputs_name_the_problem_and_what_is_allowed(shipped, args, message):
    with pytest.raises(inputs.InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        inputs.check_inputs(shipped, *args)


def test_good_inputs_become_decode_settings(shipped):
    settings = inputs.check_inputs(shipped, "ROMEO", 300.0, 0.8, 5.0, 0.95, "42")
    assert settings == DecodeSettings(300, 0.8, 5, 0.95, 42)


def test_model_cache_loads_once_and_explains_failures(tmp_path, tiny):
    tiny.save_pretrained(tmp_path / "tiny")
    cache = ModelRegistry(size=2, device="cpu", allowed_dirs=[tmp_path])
    key = inputs.model_key(str(tmp_path / "tiny"), " ")
    assert key.revision is None
    first = cache.get(key)
    assert cache.get(key) is first
    with pytest.raises(ModelLoadError):
        cache.get(inputs.model_key(str(tmp_path / "missing" / "x"), None))
    with pytest.raises(inputs.InputError, match="Model: give"):
        inputs.model_key("  ", None)
    assert "GRU 2 × 16" in pg.describe_model(key, first) and "CPU" in pg.describe_model(key, first)


def test_views_fit_smaller_models(shipped, tiny):
    view = pg.View(layer=3, unit_layer=3, unit=300)
    trace = tiny.trace("ROMEO")
    fitted = view.fitted(trace)
    assert (fitted.layer, fitted.unit_layer, fitted.unit) == (2, 2, 15)  # the last of its two layers
    shown = pg.all_figures(trace, view)
    assert set(shown) == {"probabilities", "heatmap-1", "heatmap-2", "heatmap-3", "saturation", "surprisal", "unit"}
    assert shown["heatmap-3"] is None and "reset gate" in shown["heatmap-1"].layout.title.text  # a GRU: two gates


def test_the_page_runs_its_torch_work_on_one_thread_from_any_thread(shipped):
    @compute.on_compute_thread
    def where(_=None):
        return threading.current_thread().name, compute.on_compute_thread(threading.current_thread)().name

    names = in_threads(where, [None] * 4) + [where()]
    assert {outer for outer, _ in names} == {inner for _, inner in names} == {"charrnn-compute"}

    @compute.on_compute_thread
    def fails():
        raise ValueError("from the compute thread")

    with pytest.raises(ValueError, match="from the compute thread"):
        fails()
