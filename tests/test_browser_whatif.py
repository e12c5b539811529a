"""The What-if tab and the Write tab's branch panel in a real browser: headless Chromium (Debian's package) driven by
Playwright."""

import re


from charrnn import DecodeSettings
from charrnn.decoding.interventions import Intervention
from charrnn.page.site import EXAMPLES
from charrnn.vocab import visible_char
from charrnn.analysis.whatif import branch

from bench.browser import set_number

from conftest import ARTIFACTS


def visible(text: str) -> str:
    return "".join(visible_char(c) for c in text)


def aligned_rows(page, selector: str) -> tuple[str, str]:
    """The two texts as the aligned view shows them (rows alternate: original, changed)."""
    lines = page.eval_on_selector_all(f"{selector} .wi-line", "lines => lines.map(l => l.textContent)")
    return "".join(lines[0::2]), "".join(lines[1::2])


def fill_in(page, selector: str, value) -> None:
    field = page.locator(selector)
    field.fill(str(value))
    field.press("Enter")


def test_forcing_the_line_position_unit_shows_two_aligned_texts_that_part_in_the_first_line(page, shipped):
    # Settings changed on the Write tab are copied to the What-if tab.
    set_number(page, "number input for Temperature", 0)
    set_number(page, "number input for Characters to write", 200)
    page.get_by_role("tab", name="What-if").click()
    page.wait_for_function("() => document.querySelector('#whatif-prompt textarea') !== null")
    assert page.get_by_label("number input for Temperature of the run").input_value() == "0"
    fill_in(page, "#force-layer input", 3)
    fill_in(page, "#force-unit input", 99)
    fill_in(page, "#force-value input", 0.9)
    page.get_by_role("button", name="From the first generated character").click()
    page.wait_for_function("() => document.querySelector('#force-from input').value === '6'")
    page.locator("#force-button").click()
    page.wait_for_selector("#force-divergence .js-plotly-plot", timeout=60_000)

    greedy = DecodeSettings(200, 0, 0, 0.95, 1)  # top-p is moot when greedy; seed 1 as on the Write tab
    original = shipped.generate("ROMEO:\n", greedy).text
    forced = shipped.generate("ROMEO:\n", greedy, intervention=Intervention(3, "hidden", 99, 0.9, 6)).text
    first = next(i for i, (a, b) in enumerate(zip(original, forced)) if a != b)
    assert "\n" not in original[7:first]  # within the first line written
    assert aligned_rows(page, "#force-aligned") == (visible(original), visible(forced))
    assert page.locator("#force-aligned .wi-line .wi-b").count() > 0
    assert page.locator("#force-aligned .wi-line .wi-first").count() == 2  # the first difference, in both rows
    status = page.locator("#force-status").inner_text()
    assert f"The texts part at character {first}" in status and "from step 6 on" in status
    plot = page.evaluate("""() => { const g = document.querySelector('#force-divergence .js-plotly-plot');
        return {traces: g.data.length, shapes: g.layout.shapes.length}; }""")
    assert plot["traces"] == 4 and plot["shapes"] >= 3
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "whatif.png"), full_page=True)

    # A unit sent from elsewhere (the Units tab) by name fills the unit to force.
    page.evaluate("""() => { const box = document.querySelector('#unit-to-force textarea');
        box.value = 'L1 reset 226'; box.dispatchEvent(new Event('input', {bubbles: true})); }""")
    page.wait_for_function("() => document.querySelector('#force-unit input').value === '226'", timeout=30_000)
    assert page.locator("#force-layer input").input_value() == "1"
    assert page.locator("#force-kind input").input_value() == "reset gate r_t"
    assert page.errors == []


def test_clicking_a_character_of_the_text_opens_a_branch_beside_the_original(page, shipped):
    text = page.locator("#generated-text textarea")
    box = text.bounding_box()
    page.mouse.click(box["x"] + 70, box["y"] + 38)  # a character on the second line: generated, not the prompt
    page.wait_for_selector("#branch-panel", state="visible", timeout=30_000)
    assert page.evaluate("() => { const t = document.querySelector('#generated-text textarea');"
                         " return t.selectionEnd - t.selectionStart; }") == 1
    where = page.locator("#branch-where").inner_text()
    step = int(re.search(r"Generated character (\d+)", where).group(1))
    assert page.locator("#branch-choice input[type=radio]").count() >= 5  # the alternatives at that step
    page.locator("#branch-typed textarea, #branch-typed input").first.fill("Q")
    page.locator("#branch-here").click()
    page.wait_for_selector("#branch-panel-aligned .wi-line", timeout=60_000)

    prompt, chars, temperature, top_k, top_p, seed = EXAMPLES[0]  # the run the page opens with
    pair = branch(shipped, prompt, DecodeSettings(chars, temperature, top_k, top_p, seed), step, "Q")
    assert aligned_rows(page, "#branch-panel-aligned") == (visible(pair.original.text), visible(pair.changed.text))
    assert pair.changed.text[len(prompt) + step] == "Q"
    assert page.locator("#branch-panel-aligned .wi-line .wi-forced").count() == 1
    assert f"as generated character {step}" in page.locator("#branch-panel-status").inner_text()
    page.locator("#branch-panel").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "branch.png"), full_page=False)
    assert page.errors == []
