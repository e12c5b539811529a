"""Why this character, in the browser (headless Chromium): a clicked character's attribution as bars whose click
opens the unit's profile; the What-if tab's Patch and Dose-response panels; no console errors."""

import re

from charrnn import DecodeSettings
from charrnn.analysis.attribution import attribute
from charrnn.page.site import EXAMPLES
from charrnn.serving.compute import on_compute_thread

from conftest import ARTIFACTS


def plot_title(page, plot_id: str) -> str:
    return page.evaluate(f"() => document.querySelector('#{plot_id} .js-plotly-plot').layout.title.text")


def test_why_this_character_then_patch_and_sweep(page, shipped):
    text = page.locator("#generated-text textarea")
    box = text.bounding_box()
    page.mouse.click(box["x"] + 70, box["y"] + 38)  # a generated character on the second line
    page.wait_for_selector("#branch-panel", state="visible", timeout=30_000)
    step = int(re.search(r"Generated character (\d+)", page.locator("#branch-where").inner_text()).group(1))
    runner_up = page.locator("#branch-choice input[type=radio]:checked").get_attribute("value")
    page.locator("#why-button").click()
    page.wait_for_selector("#why-plot .js-plotly-plot", timeout=60_000)

    prompt, chars, temperature, top_k, top_p, seed = EXAMPLES[0]
    trace = shipped.generate(prompt, DecodeSettings(chars, temperature, top_k, top_p, seed))
    index = len(prompt) + step
    expected = on_compute_thread(attribute)(shipped, trace.text, index - 1, trace.text[index], runner_up)
    assert f"= {expected['logit_diff']:+.3f} at step {index - 1}" in plot_title(page, "why-plot")
    bars = page.evaluate("() => Array.from(document.querySelector('#why-plot .js-plotly-plot').data[0].y)")
    assert bars[-1] == f"L3 hidden {expected['units'][0]['unit']}"  # the largest exact term, drawn on top
    assert "gradient × activation" in page.locator("#why-words").inner_text()

    # A bar is a unit: a click opens its profile on the Units tab.
    page.evaluate("name => document.querySelector('#why-plot .js-plotly-plot').emit('plotly_click', "
                  "{points: [{y: name}]})", bars[-1])  # as plotly reports a click on that bar
    page.wait_for_function("name => (document.querySelector('#profile-summary') || {innerText: ''}).innerText"
                           ".includes(name)", arg=bars[-1] + ",", timeout=60_000)

    # What-if: the example patch, then a small sweep.
    page.get_by_role("tab", name="What-if").click()
    page.get_by_role("tab", name="Patch").click()
    page.locator("#patch-button").click()
    page.wait_for_selector("#patch-plot .js-plotly-plot", timeout=120_000)
    assert "how much of logit" in plot_title(page, "patch-plot")
    assert page.evaluate("() => document.querySelector('#patch-plot .js-plotly-plot')._fullData[0].z.length") == 3
    page.get_by_role("tab", name="Dose-response").click()
    for selector, value in (("#dose-samples input", 2), ("#dose-chars input", 60)):
        page.locator(selector).fill(str(value))
        page.locator(selector).press("Enter")
    page.locator("#dose-button").click()
    page.wait_for_selector("#dose-plot .js-plotly-plot", timeout=180_000)
    names = page.evaluate("() => document.querySelector('#dose-plot .js-plotly-plot').data.map(d => d.name || '')")
    assert any(n.startswith("L3 hidden 99: Spearman") for n in names) and any("(control)" in n for n in names)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dose-response.png"), full_page=True)
    assert page.errors == []
