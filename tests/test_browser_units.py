"""The Units tab in a real browser (headless Chromium driven by Playwright): find units with a regular expression,
open a found unit's profile, select a span and see its matches, open a unit from another tab's hook."""

import re

import pytest

from charrnn.serving.compute import on_compute_thread
from charrnn.page.units_service import FOUND_ROWS
from charrnn.analysis.units import find_units

from conftest import ARTIFACTS


SPEAKERS = r"^[A-Z]+:$"


@pytest.fixture
def page(open_page):
    page = open_page()
    page.get_by_role("tab", name="Units").click()
    page.wait_for_selector("#found-units-plot .js-plotly-plot", timeout=60_000)
    return page


def plot_title(page, elem_id):
    return page.evaluate(f"() => document.querySelector('#{elem_id} .js-plotly-plot').layout.title.text")


def cell(page, elem_id, row, col):
    """A cell of a gr.Dataframe as shown (its rows are drawn as a virtual list)."""
    return page.locator(f'#{elem_id} [data-testid="cell-{row}-{col}"]')


def wait_for_text(page, elem_id, text, timeout=60_000):
    page.wait_for_function("([id, text]) => document.querySelector(`#${id}`).innerText.includes(text)",
                           arg=[elem_id, text], timeout=timeout)


def test_find_units_then_open_a_found_unit_select_a_span_and_see_its_matches(page, shipped):
    text = page.locator("#units-text textarea").input_value()
    expected = on_compute_thread(find_units)(shipped, text, SPEAKERS, top=FOUND_ROWS)["units"]

    # Find: typing an expression chooses it, and the ranking drawn is the library's for this text.
    page.locator("#units-regex textarea, #units-regex input").first.fill(SPEAKERS)
    page.get_by_role("button", name="Find units").click()
    page.wait_for_function("() => document.querySelector('#found-units-plot .js-plotly-plot').layout.title.text"
                           ".includes('[A-Z]+')", timeout=60_000)
    bars = page.evaluate("() => Array.from(document.querySelector('#found-units-plot .js-plotly-plot').data[0].y)")
    assert bars == [f"L{r['layer']} {r['kind']} {r['unit']}" for r in expected]
    assert cell(page, "found-units", 0, 2).inner_text().strip() == str(expected[0]["unit"])

    # A click on a found unit opens its profile.
    second = expected[1]
    cell(page, "found-units", 1, 0).click()
    wait_for_text(page, "profile-summary", f"L{second['layer']} {second['kind']} {second['unit']}, ")
    assert plot_title(page, "profile-histogram").startswith(f"L{second['layer']} {second['kind']} {second['unit']}:")
    assert page.locator("#profile-contexts div").filter(has_text="Highest values").count() >= 1
    assert page.locator("#profile-unit input").input_value() == str(second["unit"])

    # Select a speaker's name in the text: the units on over it, then other places where they do the same.
    wait_for_text(page, "units-status", "matches are searched in the first", timeout=300_000)
    start = text.index("BAPTISTA:")
    page.evaluate("""([start, end]) => { const t = document.querySelector('#units-text textarea');
        t.focus(); t.setSelectionRange(start, end); t.dispatchEvent(new Event('select')); }""",
                  [start, start + len("BAPTISTA")])
    wait_for_text(page, "selection-summary", "'BAPTISTA'")
    page.wait_for_selector("#unit-matches div[style*='monospace']", timeout=60_000)
    assert page.locator("#select-start input").input_value() == str(start)
    assert page.locator("#select-end input").input_value() == str(start + len("BAPTISTA"))
    matched = page.locator("#unit-matches div[style*='monospace']")
    assert matched.count() == 10
    outlined = [re.sub(r"\s", "", m) for m in page.locator("#unit-matches span[style*='outline']").all_inner_texts()]
    assert len(outlined) == 10 and sum(m.isupper() for m in outlined) > 5  # mostly other speakers' names

    # A unit of the selection opens like a found one.
    layer, unit = (cell(page, "selected-units", 0, col).inner_text().strip() for col in (0, 1))
    cell(page, "selected-units", 0, 0).click()
    wait_for_text(page, "profile-summary", f"L{layer} hidden {unit}, hidden state")

    page.locator("#selection-summary").scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "units-tab.png"), full_page=True)
    assert page.errors == []


def test_another_tab_opens_a_unit_through_the_hidden_textbox(page):
    page.evaluate("""() => { const box = document.querySelector('#unit-to-profile textarea');
        box.value = 'L2 update 7'; box.dispatchEvent(new Event('input', {bubbles: true})); }""")
    wait_for_text(page, "profile-summary", "L2 update 7, update gate z_t")
    page.wait_for_function("() => (document.querySelector('#profile-pushes .js-plotly-plot').layout.annotations"
                           " || []).some(a => a.text.startsWith('Only a last-layer hidden unit'))", timeout=30_000)
    assert page.errors == []


def test_a_click_on_the_unit_map_opens_that_units_profile_and_the_search_lists_units(page):
    page.wait_for_selector("#unit-map .js-plotly-plot", timeout=60_000)
    page.locator("#unit-map").scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#unit-map").screenshot(path=str(ARTIFACTS / "units-map.png"))
    area = page.locator("#unit-map .nsewdrag").first.bounding_box()
    # layer 3's hidden row (the 7th of 9), around unit 99 of 512
    page.mouse.click(area["x"] + area["width"] * 99.5 / 512, area["y"] + area["height"] * 6.5 / 9)
    page.wait_for_function("() => /^L3 hidden \\d+$/.test(document.querySelector('#unit-to-profile textarea').value)",
                           timeout=30_000)
    chosen = page.evaluate("() => document.querySelector('#unit-to-profile textarea').value")
    # the hover labels, written in the browser from the figure's compact meta
    label = page.evaluate("() => document.querySelector('#unit-map .js-plotly-plot').data[0].text[6][99]")
    assert re.match(r"L3 hidden 99: .+, r [+-]\d\.\d\d held out \(fit [+-]\d\.\d\d, chance \d\.\d\d\)$", label), label
    wait_for_text(page, "profile-summary", f"{chosen}, hidden state h_t")
    summary = page.locator("#profile-summary").inner_text()
    assert re.search(r"^Explained by .+ held out over the second half", summary, re.MULTILINE), summary
    page.locator("#explained-query textarea").fill("vowel")
    page.locator("#search-explained").click()
    wait_for_text(page, "explained-said", "explained by 'vowel', best held-out |r| first")
    assert cell(page, "explained-units", 0, 3).inner_text() == "vowel"
    assert "held out ≥ 0.5" in page.locator("#explained-shares").inner_text()
    page.screenshot(path=str(ARTIFACTS / "units-explained.png"), full_page=False)
    assert page.errors == []
