"""The page in a real browser: headless Chromium (Debian's package) driven by Playwright."""


import pytest

from charrnn import DecodeSettings

from bench.browser import generate_in_page, set_number

from conftest import ARTIFACTS


def generate(page, shipped, prompt, chars, seed):
    trace = shipped.generate(prompt, DecodeSettings(chars, 0.8, 0, 0.95, seed))
    generate_in_page(page, prompt, chars, seed, trace)
    return trace


def probability_state(page):
    return page.evaluate("""() => { const g = document.querySelector('#probabilities .js-plotly-plot');
        return {x: Array.from(g.data[0].x), y: Array.from(g.data[0].y), title: g.layout.title.text,
                bars: g.querySelectorAll('.barlayer .point path').length}; }""")


def draw_counts(page):
    return page.evaluate("() => ({...window.Plotly.charrnnDrawOnce})")


def test_generate_in_the_browser_draws_every_figure_and_the_slider_moves_the_bars(page, shipped):
    before_draws = draw_counts(page)
    trace = generate(page, shipped, "JULIET:\n", 200, 5)
    page.wait_for_timeout(500)  # any later redraw would be counted too
    assert draw_counts(page)["drawn"] - before_draws["drawn"] == 4  # each of the four plots drawn once
    assert page.locator("#generated-text textarea").input_value() == trace.text
    assert "Wrote 200 characters" in page.locator("#status").inner_text()

    drawn = page.evaluate("""() => Object.fromEntries(['probabilities', 'heatmap-1', 'heatmap-2', 'saturation']
        .map(id => { const g = document.querySelector(`#${id} .js-plotly-plot`);
          return [id, {bars: g.querySelectorAll('.barlayer .point path').length,
                       heatmaps: g.querySelectorAll('.heatmaplayer image').length,
                       points: g.querySelectorAll('.scatterlayer .point').length,
                       z: g._fullData[0].z ? g._fullData[0].z.length : 0}]; }))""")
    assert drawn["probabilities"]["bars"] == 24  # 12 raw + 12 filtered bars
    for gate in ("heatmap-1", "heatmap-2"):
        assert drawn[gate]["heatmaps"] == 1 and drawn[gate]["z"] == 64
    assert drawn["saturation"]["points"] == 2 * 3 * 512

    before = probability_state(page)
    assert before["title"].startswith("step 7 (generated)")
    stepper = page.locator("#probabilities input.charrnn-step")
    assert stepper.get_attribute("max") == str(len(trace.text) - 1) and stepper.input_value() == "7"
    stepper.scroll_into_view_if_needed()
    rail = stepper.bounding_box()
    page.mouse.click(rail["x"] + rail["width"] * 0.5, rail["y"] + rail["height"] / 2)
    page.wait_for_function("t => document.querySelector('#probabilities .js-plotly-plot').layout.title.text !== t",
                           arg=before["title"], timeout=10_000)
    after = probability_state(page)
    assert after["title"] != before["title"] and (after["x"], after["y"]) != (before["x"], before["y"])
    step = int(after["title"].split()[1])
    assert 80 < step < 130 and after["bars"] == 24
    # one step at a time with the keyboard, through to the last step
    stepper.press("ArrowRight")
    page.wait_for_function("t => document.querySelector('#probabilities .js-plotly-plot').layout.title.text"
                           ".startsWith(`step ${t} `)", arg=step + 1, timeout=10_000)
    stepper.press("End")
    page.wait_for_function("t => document.querySelector('#probabilities .js-plotly-plot').layout.title.text"
                           ".startsWith(`step ${t} `)", arg=len(trace.text) - 1, timeout=10_000)
    last = probability_state(page)
    t = len(trace.text) - 1
    top = trace.probs[t].topk(12)
    assert last["x"] == [{" ": "␣", "\n": "↵"}.get(trace.vocab[i], trace.vocab[i]) for i in top.indices.tolist()]
    assert last["y"] == pytest.approx(top.values.tolist(), abs=1e-4)
    assert last["title"].endswith("→ <b>(end)</b>")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
    assert page.errors == []


def test_view_controls_redraw_from_the_stored_trace(page, shipped):
    generate(page, shipped, "ROMEO:\n", 60, 2)
    page.get_by_role("radio", name="layer 3").first.check()
    page.wait_for_function("() => document.querySelector('#heatmap-1 .js-plotly-plot').layout.title.text"
                           ".includes('layer 3')", timeout=30_000)
    set_number(page, "Unit", 17)
    page.wait_for_function("() => document.querySelector('#unit-text').innerText.includes('unit 17')", timeout=30_000)
    assert page.errors == []


def test_bad_input_shows_a_message_and_the_page_keeps_working(page, shipped):
    page.get_by_label("Prompt").fill("Señor")
    page.get_by_role("button", name="Generate").click()
    toast = page.locator(".toast-body").filter(has_text="outside the model's vocabulary")
    toast.wait_for(timeout=30_000)
    assert "'ñ'" in toast.inner_text()
    generate(page, shipped, "KING:\n", 50, 3)
    assert page.locator("#generated-text textarea").input_value().startswith("KING:\n")
