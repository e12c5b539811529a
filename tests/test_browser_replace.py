"""A new click replaces the run in progress, and every path to a run ends with that run's text and figures (headless
Chromium): clicks while a run is written, clicks on runs written before through the API, two visitors writing the
same run, a link opened while another visitor writes its run; and the same on the What-if tab."""

from urllib.parse import quote

from charrnn import DecodeSettings

from bench.browser import DRAWN, expected_page, fill_settings

RUNS = [("JULIET:\n", 101), ("HAMLET:\n", 102), ("KING RICHARD III:\n", 103)]  # the page's temperature 0.8, top-p 0.95
CHARS = 2000


def settings(seed: int, chars: int = CHARS) -> DecodeSettings:
    return DecodeSettings(chars, 0.8, 0, 0.95, seed)


def server():
    import app

    return app.demo.site.server


def wait_writing(page, prompt: str, below: int = CHARS // 2) -> None:
    """Until the run of `prompt` is being written, with fewer than `below` characters so far."""
    page.wait_for_function("([prompt, below]) => { const s = document.querySelector('#status').innerText;"
                           " const t = document.querySelector('#generated-text textarea').value;"
                           " const m = /Writing… ([\\d,]+)/.exec(s);"
                           " return t.startsWith(prompt) && t.length > prompt.length && m"
                           " && +m[1].replace(/,/g, '') < below; }",
                           arg=[prompt, below], timeout=180_000, polling=20)


def click_generate(page, prompt: str, seed: int, chars: int = CHARS) -> None:
    fill_settings(page, prompt, chars, seed)
    page.wait_for_timeout(100)  # the inputs settle
    page.get_by_role("button", name="Generate").click()


def assert_shows(page, trace, timeout_s: float = 120) -> None:
    page.wait_for_function(DRAWN, arg=expected_page(trace), timeout=timeout_s * 1000, polling=50)
    assert page.locator("#generated-text textarea").input_value() == trace.text
    assert f"Wrote {len(trace.text) - trace.prompt_len:,} characters" in page.locator("#status").inner_text()


def test_a_click_while_a_run_is_written_replaces_it(page, client, shipped):
    # other visitors' runs share the decode loop meanwhile, so that each click comes while the run before it is
    # still being written however fast this machine writes (alone, 2,000 characters took 1.9 s on a quiet one)
    others = [client.submit(prompt="ROMEO:\n", max_new_chars=CHARS, temperature=0.8, top_k=0, top_p=0.95,
                            seed=900 + i, api_name="/generate") for i in range(4)]
    cancelled = server().counts["cancelled"]
    for prompt, seed in RUNS[:-1]:
        click_generate(page, prompt, seed)
        wait_writing(page, prompt)  # the next click comes while this run is being written
    click_generate(page, *RUNS[-1])
    assert_shows(page, shipped.generate(RUNS[-1][0], settings(RUNS[-1][1])))
    assert server().counts["cancelled"] >= cancelled + 2  # the replaced runs left the decode loop
    page.wait_for_timeout(1500)  # nothing from a replaced run arrives later
    assert page.locator("#generated-text textarea").input_value().startswith(RUNS[-1][0])
    assert page.errors == []
    for other in others:
        other.result()


def test_clicks_on_runs_written_before_show_each_its_own(page, client, shipped):
    """The runs written first through the API (so each click's figures come at once from the run cache), then
    clicked one after the other as soon as the figures change."""
    chars = 600
    for prompt, seed in RUNS:
        client.predict(prompt=prompt, max_new_chars=chars, temperature=0.8, top_k=0, top_p=0.95, seed=seed,
                       api_name="/generate")
    shown = "() => document.querySelector('#probabilities .js-plotly-plot').layout.title.text"
    for prompt, seed in RUNS:
        before = page.evaluate(shown)
        click_generate(page, prompt, seed, chars)
        page.wait_for_function(f"before => ({shown})() !== before", arg=before, timeout=180_000, polling=20)
    assert_shows(page, shipped.generate(RUNS[-1][0], settings(RUNS[-1][1], chars)))
    assert page.errors == []


def test_two_visitors_writing_the_same_run_one_after_the_other(open_page, shipped):
    prompt, seed = "ROMEO:\nWhat", 104
    trace = shipped.generate(prompt, settings(seed, 500))
    first, second = open_page(), open_page()
    click_generate(first, prompt, seed, 500)
    assert_shows(first, trace)
    click_generate(second, prompt, seed, 500)
    assert_shows(second, trace)
    assert first.errors == [] and second.errors == []


def test_a_link_opened_while_another_visitor_writes_its_run(open_page, shipped):
    prompt, seed = "MENENIUS:\n", 105
    trace = shipped.generate(prompt, settings(seed))
    writer = open_page()
    written = server().counts["written"]
    click_generate(writer, prompt, seed)
    wait_writing(writer, prompt)
    query = f"?prompt={quote(prompt)}&chars={CHARS}&temperature=0.8&top_k=0&top_p=0.95&seed={seed}"
    reader = open_page(query)
    assert_shows(reader, trace)
    assert_shows(writer, trace)
    assert server().counts["written"] == written + 1  # written once, for both
    assert writer.errors == [] and reader.errors == []


def test_a_second_force_replaces_the_first_on_the_whatif_tab(page):
    page.get_by_role("tab", name="What-if").click()
    page.get_by_label("Prompt of the run").fill("ROMEO:\n")
    field = page.get_by_label("number input for Characters to write in each run", exact=True)
    field.fill(str(CHARS))
    field.press("Enter")
    cancelled = server().counts["cancelled"]
    for unit in ("99", "337"):
        box = page.locator("#force-unit input")
        box.fill(unit)
        box.press("Enter")
        page.locator("#force-button").click()
        page.wait_for_timeout(500)  # the first pair is being written when the second click comes
    page.wait_for_function("() => (document.querySelector('#force-status') || {innerText: ''}).innerText"
                           ".includes('unit 337 in layer 3')", timeout=120_000, polling=50)
    page.wait_for_timeout(1500)  # nothing of the replaced comparison arrives later
    assert "unit 99 " not in page.locator("#force-status").inner_text()
    assert server().counts["cancelled"] >= cancelled + 1
    assert page.errors == []
