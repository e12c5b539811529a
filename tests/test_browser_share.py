"""Sharing in a real browser (headless Chromium, as tests/test_browser.py): a link opens the page on its run,
a bad link opens it with a warning, Copy link gives a link to the visitor's run, Export gives its files, and a
click on a heatmap row names the unit for the Units tab."""

import re
from urllib.parse import quote

import numpy as np
import torch

from charrnn import CharRNN, DecodeSettings
from charrnn.page import share
from charrnn.page import views as pg
from charrnn.page import inputs
from charrnn.serving.runs import Recipe

from bench.browser import DRAWN, expected_page, generate_in_page

from conftest import ARTIFACTS, make_tiny


def control(page, label):
    return page.get_by_label(label, exact=True).input_value()


def test_a_link_writes_its_run_at_once(open_page, client, shipped):
    prompt = "JULIET:\nO Romeo, Romeo! wherefore"
    query = (f"?prompt={quote(prompt)}&chars=180&temperature=1.1&top_k=30&top_p=0.9&seed=77")
    page = open_page(query)
    expected, _ = client.predict(prompt=prompt, max_new_chars=180, temperature=1.1, top_k=30, top_p=0.9, seed=77,
                                 api_name="/generate")
    trace = shipped.generate(prompt, DecodeSettings(180, 1.1, 30, 0.9, 77))
    assert trace.text == expected
    page.wait_for_function(DRAWN, arg=expected_page(trace), timeout=120_000, polling=50)  # the figures follow
    assert page.locator("#generated-text textarea").input_value() == expected
    assert "Wrote 180 characters" in page.locator("#status").inner_text()
    assert page.get_by_label("Prompt").input_value() == prompt
    assert control(page, "number input for Characters to write") == "180"
    assert control(page, "number input for Temperature") == "1.1"
    assert control(page, "number input for Top-k") == "30" and control(page, "Seed") == "77"
    assert page.errors == []


def test_a_bad_link_opens_the_page_with_a_warning(open_page, shipped):
    page = open_page("?temperature=hot&chars=99999&seed=4")
    toast = page.locator(".toast-body").filter(has_text="cannot be used")
    toast.wait_for(timeout=60_000)
    assert "temperature must be a number from 0 to 2, not 'hot'" in toast.inner_text()
    assert "chars (characters to write) must be a whole number from 1 to 2,000" in toast.inner_text()
    # the rest of the link is used: the default prompt and settings, its seed
    trace = shipped.generate("ROMEO:\n", DecodeSettings(300, 0.8, 0, 0.95, 4))
    page.wait_for_function(DRAWN, arg=expected_page(trace), timeout=120_000, polling=50)
    assert control(page, "number input for Temperature") == "0.8"
    assert page.errors == []


def test_a_link_to_a_model_the_page_may_not_load_falls_back_to_its_own(open_page, shipped):
    page = open_page("?model=/etc&seed=3&chars=40")
    page.locator(".toast-body").filter(has_text="The link's model cannot be used").wait_for(timeout=60_000)
    trace = shipped.generate("ROMEO:\n", DecodeSettings(40, 0.8, 0, 0.95, 3))
    page.wait_for_function(DRAWN, arg=expected_page(trace), timeout=120_000, polling=50)


def test_a_link_to_a_model_the_page_may_load_writes_with_it(open_page, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_MODEL_DIRS", str(tmp_path))  # the page loads local folders only from these
    tiny = make_tiny()
    tiny.save_pretrained(tmp_path / "tiny")
    page = open_page(f"?model={quote(str(tmp_path / 'tiny'))}&prompt=ROMEO&chars=50&seed=9")
    trace = tiny.generate("ROMEO", DecodeSettings(50, 0.8, 0, 0.95, 9))
    page.wait_for_function(DRAWN, arg=expected_page(trace), timeout=120_000, polling=50)
    page.locator("button.label-wrap", has_text="Model").click()  # open the Model accordion
    assert "GRU 2 × 16" in page.locator("#model-info").inner_text()
    assert page.get_by_label("Hub repo id or local folder").input_value() == str(tmp_path / "tiny")


def test_a_models_vocabulary_bounds_top_k(open_page, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_MODEL_DIRS", str(tmp_path))
    torch.manual_seed(0)
    small = CharRNN("\n :EMOR", embedding_dim=4, hidden_size=8, num_layers=1, save_dtype="float32").eval()
    small.save_pretrained(tmp_path / "small")
    page = open_page(f"?model={quote(str(tmp_path / 'small'))}&prompt=ROMEO&chars=30&top_k=3&seed=2")
    trace = small.generate("ROMEO", DecodeSettings(30, 0.8, 3, 0.95, 2))
    page.wait_for_function(DRAWN, arg=expected_page(trace), timeout=120_000, polling=50)
    slider = page.locator("#top-k input[type=range]")
    assert (slider.get_attribute("max"), slider.input_value()) == ("7", "3")
    page.get_by_role("tab", name="What-if").click()
    page.wait_for_function("() => [...document.querySelectorAll('input[type=range]')].filter(e => e.offsetParent)"
                           ".some(e => e.getAttribute('aria-label').endsWith('Top-k of the run') && e.max === '7')",
                           timeout=30_000)
    assert page.errors == []


def test_copy_link_gives_the_visitors_run_and_the_link_opens_it(open_page, shipped, app_url):
    page = open_page()
    trace = shipped.generate("KING:\nWhat", DecodeSettings(60, 0.8, 0, 0.95, 12))
    generate_in_page(page, "KING:\nWhat", 60, 12, trace)
    page.get_by_role("button", name=re.compile("Copy link")).click()
    box = page.locator("#share-link textarea, #share-link input").first
    page.wait_for_function("() => document.querySelector('#share-link textarea, #share-link input').value"
                           ".includes('?prompt=')", timeout=30_000)
    link = box.input_value()
    default = inputs.model_key(pg.default_model(), None)
    assert link == app_url + "/" + share.link_query(Recipe(default, "KING:\nWhat", trace.settings), default)
    again = open_page(link[len(app_url) + 1:])
    again.wait_for_function(DRAWN, arg=expected_page(trace), timeout=120_000, polling=50)


def test_export_offers_the_runs_files(open_page, shipped):
    page = open_page()
    trace = shipped.generate("ROMEO:\n", DecodeSettings(80, 0.8, 0, 0.95, 21))
    generate_in_page(page, "ROMEO:\n", 80, 21, trace)
    page.get_by_role("button", name=re.compile("Export this run")).click()
    links = page.locator("#export-files a")
    links.first.wait_for(timeout=60_000)
    names = sorted(link.get_attribute("download") for link in links.all())
    assert names == ["charrnn-run-80chars-seed21-steps.csv", "charrnn-run-80chars-seed21.npz"]
    with page.expect_download() as download:
        page.locator("#export-files a[download$='.npz']").click()
    run = share.read_run(download.value.path())
    assert run["meta"]["text"] == trace.text
    assert np.abs(run["hidden"].astype(np.float64) - trace.hidden.double().numpy()).max() <= 1e-3


def test_clicking_a_heatmap_row_names_the_unit(open_page):
    page = open_page()
    plot = page.locator("#heatmap-2 .js-plotly-plot")
    plot.scroll_into_view_if_needed()
    first_row = page.evaluate("() => document.querySelector('#heatmap-2 .js-plotly-plot').data[0].y[0]")
    unit = re.search(r"L1 update (\d+)", first_row).group(1)
    area = page.locator("#heatmap-2 .nsewdrag").first.bounding_box()  # the heatmap's plot area
    rows = len(page.evaluate("() => document.querySelector('#heatmap-2 .js-plotly-plot').data[0].y"))
    x, y = area["x"] + area["width"] / 2, area["y"] + area["height"] / rows / 2
    page.mouse.move(x - 20, y + 20)
    page.mouse.move(x, y, steps=10)  # plotly clicks the point it hovers
    page.wait_for_function("y => (document.querySelector('#heatmap-2 .js-plotly-plot')._hoverdata || [])"
                           ".some(p => p.y === y)", arg=first_row, timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    plot.screenshot(path=str(ARTIFACTS / "heatmap.png"))
    page.mouse.click(x, y)
    page.wait_for_function("() => document.querySelector('#heatmap-unit textarea, #heatmap-unit input').value",
                           timeout=10_000)
    value = page.locator("#heatmap-unit textarea, #heatmap-unit input").first.input_value()
    assert value == f"L1 update {unit}"
    # The click opens the unit's profile on the Units tab; from there the unit can be forced in What-if.
    page.wait_for_function("u => (document.querySelector('#profile-summary') || {innerText: ''}).innerText"
                           ".includes(`L1 update ${u}, update gate`)",
                           arg=unit, timeout=180_000)
    assert page.locator("#profile-summary").is_visible()
    page.locator("#force-in-whatif").click()
    page.wait_for_function("u => (document.querySelector('#force-unit input') || {}).value === u", arg=unit,
                           timeout=30_000)
    assert page.locator("#force-layer input").input_value() == "1"
    assert page.locator("#force-kind input").input_value() == "update gate z_t"
    assert page.locator("#force-button").is_visible()
    assert page.errors == []
