"""The launched playground over HTTP with gradio_client: /generate, errors, model loading, independence."""

import pytest
from gradio_client import Client

from charrnn import DecodeSettings

from threads import in_threads


def generate(client, prompt="ROMEO:", max_new_chars=120, temperature=0.8, top_k=0, top_p=0.95, seed=1):
    return client.predict(prompt=prompt, max_new_chars=max_new_chars, temperature=temperature, top_k=top_k,
                          top_p=top_p, seed=seed, api_name="/generate")


def test_the_endpoint_has_the_documented_parameters(client):
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == ["prompt", "max_new_chars", "temperature", "top_k",
                                                         "top_p", "seed"]


def test_generate_returns_the_text_and_a_summary(client, shipped):
    text, status = generate(client)
    assert text == shipped.generate("ROMEO:", DecodeSettings(120, 0.8, 0, 0.95, 1)).text
    assert "Wrote 120 characters" in status


def test_same_seed_same_text_and_another_seed_another(client):
    first, again, other = (generate(client, seed=s)[0] for s in (5, 5, 6))
    assert first == again and first != other


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompt=""), "The prompt is empty"),
    (dict(prompt="Señor"), "outside the model's vocabulary: 'ñ'"),
    (dict(top_k=2.5), "Top-k must be a whole number"),
    (dict(seed=-4), "Seed must be a whole number from 0"),
    (dict(max_new_chars=5000), "greater than maximum value 2000"),
    (dict(top_p=0), "less than minimum value 0.01"),
])
def test_bad_input_is_an_error_and_the_next_request_still_works(client, kwargs, message):
    with pytest.raises(Exception, match=message):
        generate(client, **kwargs)
    assert generate(client, seed=9)[0].startswith("ROMEO:")


def test_loading_a_model_switches_this_session_and_a_failed_load_keeps_it(client, tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("CHARRNN_MODEL_DIRS", str(tmp_path))  # the page loads local folders only from these
    tiny.save_pretrained(tmp_path / "tiny")
    default_text = generate(client, seed=3)[0]
    loaded = client.predict(source=str(tmp_path / "tiny"), revision="", api_name="/load_model")
    assert "GRU 2 × 16" in loaded[0]
    tiny_text = generate(client, seed=3)[0]
    assert tiny_text == tiny.generate("ROMEO:", DecodeSettings(120, 0.8, 0, 0.95, 3)).text != default_text
    with pytest.raises(Exception, match="not a Hub repo id .* and not a model folder this page can load.*previous model stays"):
        client.predict(source=str(tmp_path / "nope" / "x"), revision="", api_name="/load_model")
    with pytest.raises(Exception, match="is not a charrnn model"):
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "config.json").write_text("{}")
        (tmp_path / "broken" / "model.safetensors").write_bytes((tmp_path / "tiny" / "model.safetensors").read_bytes())
        client.predict(source=str(tmp_path / "broken"), revision="", api_name="/load_model")
    assert generate(client, seed=3)[0] == tiny_text


def test_other_sessions_keep_the_default_model(app_url, shipped):
    fresh = Client(app_url, verbose=False)
    try:
        assert generate(fresh, seed=3)[0] == shipped.generate("ROMEO:", DecodeSettings(120, 0.8, 0, 0.95, 3)).text
    finally:
        fresh.close()


def test_concurrent_users_get_their_own_results(app_url):
    def user(seed):
        client = Client(app_url, verbose=False)
        try:
            return generate(client, seed=seed, max_new_chars=200)[0]
        finally:
            client.close()

    seeds = [11, 12, 13, 14]
    alone = [user(s) for s in seeds]
    assert in_threads(user, seeds) == alone


def test_a_session_keeps_a_few_kilobytes_after_the_longest_run(client):
    """What the server keeps for a visitor between events is the run's recipe, not its trace (tens of MB)."""
    import pickle

    import app

    text, _ = generate(client, max_new_chars=2000, seed=4)
    assert len(text) == len("ROMEO:") + 2000
    session = app.demo.state_holder.session_data[client.session_hash]
    kept = {component._id: len(pickle.dumps(value)) for component, value, _ in session.state_components}
    assert kept and sum(kept.values()) < 20_000, kept


def test_a_visitor_who_leaves_mid_run_frees_the_row(app_url):
    """Closing the connection while the text streams cancels the run at the next step."""
    import time

    import httpx

    import app

    server = app.demo.site.server
    cancelled = server.counts["cancelled"]
    with httpx.Client(timeout=60) as http:
        posted = http.post(f"{app_url}/gradio_api/call/generate", json={"data": ["ROMEO:\n", 2000, 0.8, 0, 0.95, 1]})
        with http.stream("GET", f"{app_url}/gradio_api/call/generate/{posted.json()['event_id']}") as stream:
            next(line for line in stream.iter_lines() if line.startswith("event: generating"))
    deadline = time.time() + 30
    while server.counts["cancelled"] == cancelled and time.time() < deadline:
        time.sleep(0.05)
    assert server.counts["cancelled"] == cancelled + 1 and server.load["running"] == 0


def load_event(app_url) -> int:
    """The page's load event that reads a link's query (the first load listener with a function of its own)."""
    import httpx

    config = httpx.get(f"{app_url}/config", timeout=30).json()
    return next(d["id"] for d in config["dependencies"] if any(event == "load" for _, event in d["targets"])
                and d.get("backend_fn") and d.get("trigger_after") is None)


def open_link(app_url, fn_index: int, query: str) -> list:
    """What the page's load event sends a browser opening the address with `query`: every message's outputs."""
    import json
    import uuid

    import httpx

    session = uuid.uuid4().hex
    with httpx.Client(timeout=120) as http:
        joined = http.post(f"{app_url}/gradio_api/queue/join?{query}", json={
            "data": [], "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None})
        joined.raise_for_status()
        outputs = []
        with http.stream("GET", f"{app_url}/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") in ("process_generating", "process_completed"):
                    assert message.get("success", True), message
                    outputs.append(message["output"].get("data", []))
                if message.get("msg") == "process_completed":
                    return outputs
    return outputs


def test_thirty_visitors_asking_for_the_same_run_at_once_get_it_written_once(app_url, shipped):
    import json
    import time

    import httpx

    import app

    server = app.demo.site.server
    data = ["ROMEO:\nNay, but", 1200, 0.8, 0, 0.95, 2024]
    expected = shipped.generate(data[0], DecodeSettings(*data[1:])).text
    written = server.counts["written"]

    def visitor(_):
        started = time.perf_counter()
        with httpx.Client(timeout=300) as http:
            event = http.post(f"{app_url}/gradio_api/call/generate", json={"data": data}).json()["event_id"]
            with http.stream("GET", f"{app_url}/gradio_api/call/generate/{event}") as stream:
                lines = list(stream.iter_lines())
        last = next(line for line in reversed(lines) if line.startswith("data:"))
        return json.loads(last[5:])[0], time.perf_counter() - started

    results = in_threads(visitor, range(30))
    assert [text for text, _ in results] == [expected] * 30
    assert server.counts["written"] == written + 1  # the decode loop wrote it once, for all thirty
    assert max(seconds for _, seconds in results) < 120


def test_thirty_visitors_opening_the_same_link_at_once_get_its_run_written_once(app_url, shipped):
    from urllib.parse import quote

    import app

    server = app.demo.site.server
    prompt, settings = "BRUTUS:\n", DecodeSettings(1000, 0.8, 0, 0.95, 2025)
    expected = shipped.generate(prompt, settings).text
    query = (f"prompt={quote(prompt)}&chars={settings.max_new_chars}&temperature=0.8&top_k=0&top_p=0.95"
             f"&seed={settings.seed}")
    fn_index, written = load_event(app_url), server.counts["written"]
    results = in_threads(lambda _: open_link(app_url, fn_index, query), range(30))
    for outputs in results:
        assert any(expected in (value for value in data if isinstance(value, str)) for data in outputs), outputs[-1:]
    assert server.counts["written"] == written + 1
