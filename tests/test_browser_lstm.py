"""The page with an LSTM (headless Chromium): a link to the shipped LSTM writes its run with the input, forget and
output gates as heatmaps (the hidden and cell states at a click), the Units tab finds its units and compares it
with the GRU of its size, and What-if forces a forget gate; no console errors."""

from urllib.parse import quote

from charrnn import DecodeSettings
from charrnn.models import CharLSTM

from conftest import ARTIFACTS, ROOT

LSTM = ROOT / "weights" / "lstm-2x256"
PROMPT, CHARS, SEED = "ROMEO:\n", 200, 5


def title(page, plot_id: str) -> str:
    return page.evaluate(f"() => document.querySelector('#{plot_id} .js-plotly-plot').layout.title.text")


def wait_title(page, plot_id: str, part: str, timeout: float = 60_000) -> None:
    page.wait_for_function(f"() => ((document.querySelector('#{plot_id} .js-plotly-plot') || {{}}).layout || "
                           f"{{title: {{text: ''}}}}).title.text.includes({part!r})", timeout=timeout, polling=50)


def test_an_lstm_on_the_write_units_and_whatif_tabs(open_page):
    lstm = CharLSTM.from_pretrained(LSTM, device="cpu")
    trace = lstm.generate(PROMPT, DecodeSettings(CHARS, 0.8, 0, 0.95, SEED))
    page = open_page(f"?model=weights/lstm-2x256&prompt={quote(PROMPT)}&chars={CHARS}&seed={SEED}")
    page.wait_for_function("t => document.querySelector('#generated-text textarea').value === t", arg=trace.text,
                           timeout=120_000, polling=50)

    # Write: the three gates as heatmaps, then the hidden and cell states.
    for plot_id, gate in (("heatmap-1", "input gate i_t"), ("heatmap-2", "forget gate f_t"),
                          ("heatmap-3", "output gate o_t")):
        wait_title(page, plot_id, gate)
    page.get_by_label("states").check()
    wait_title(page, "heatmap-1", "hidden state h_t")
    wait_title(page, "heatmap-2", "cell state c_t")
    assert page.locator("#heatmap-3").is_hidden()

    # Units: the finder ranks every kind of the LSTM's units.
    page.get_by_role("tab", name="Units").click()
    shown = "() => Array.from(document.querySelector('#found-units-plot .js-plotly-plot').data[0].y).join('|')"
    opening = page.evaluate(shown)  # the default GRU's, found when the page was built
    page.get_by_role("button", name="Find units").click()
    page.wait_for_function(f"before => ({shown})() !== before", arg=opening, timeout=120_000, polling=50)
    bars = page.evaluate(shown).split("|")
    kinds = {bar.split()[1] for bar in bars}
    assert kinds <= {"hidden", "cell", "input", "forget", "output"} and kinds & {"cell", "input", "forget", "output"}
    assert page.get_by_label("cell state c_t").count() >= 1  # the profile's kinds are the LSTM's

    # ... and compares the shipped GRU and LSTM of the same size on a text.
    page.locator("#compare-models").click()
    page.wait_for_selector("#model-comparison table.charrnn-unit-matches", timeout=180_000)
    assert "weights/gru-2x256" in page.locator("#model-comparison").inner_text()

    # What-if: force a forget gate shut from step 3 on.
    page.get_by_role("tab", name="What-if").click()
    for selector, value in (("#force-layer input", 1), ("#force-unit input", 83), ("#force-value input", 0)):
        field = page.locator(selector)
        field.fill(str(value))
        field.press("Enter")
    page.locator("#force-kind input").fill("forget gate f_t")
    page.locator("#force-kind input").press("Enter")
    page.locator("#force-button").click()
    page.wait_for_function("() => (document.querySelector('#force-status') || {innerText: ''}).innerText"
                           ".includes('unit 83 in layer 1')", timeout=120_000, polling=50)
    assert "forget gate f_t" in page.locator("#force-status").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "lstm-whatif.png"), full_page=True)
    assert page.errors == []
