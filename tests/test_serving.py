"""The decode server: many requests in one loop on the compute thread, each text as it would be alone."""

import pytest

from charrnn import DecodeSettings
from charrnn.decoding.loop import DecodeRequest, step_weights
from charrnn.serving.server import DecodeServer, JobCancelled, ServerBusy, ServerLimits

from threads import in_threads

SETTINGS = [DecodeSettings(150, 0.8, 0, 0.95, s) for s in range(6)] + [DecodeSettings(90, 0, 0, 1.0, 0),
                                                                        DecodeSettings(120, 1.1, 7, 1.0, 9)]


@pytest.fixture
def server():
    server = DecodeServer(ServerLimits(max_rows=8, max_waiting=8))
    yield server
    server.close()


def request(model, prompt, settings):
    return DecodeRequest(tuple(model.tokenizer.encode(prompt)), settings)


def test_requests_from_many_threads_each_get_the_text_they_get_alone(server, shipped):
    alone = [shipped.generate("ROMEO:\n", s).text for s in SETTINGS]

    def visitor(settings):
        job = server.submit(shipped, request(shipped, "ROMEO:\n", settings))
        job.result()
        return job.text

    assert in_threads(visitor, SETTINGS) == alone


def test_the_text_grows_while_the_job_runs_and_the_row_is_the_one_alone(server, shipped):
    settings = DecodeSettings(1500, 0.8, 0, 0.95, 4)
    job = server.submit(shipped, request(shipped, "KING:", settings))
    seen = set()
    while not job.wait(0.02):
        seen.add(job.written)
    assert len(seen) > 2
    row = job.result()
    alone = shipped.generate("KING:", settings)
    assert job.text == alone.text
    trace = row.trace(shipped, step_weights(shipped))
    assert (trace.hidden == alone.hidden).all() and (trace.filtered == alone.filtered).all()


def test_a_cancelled_job_frees_its_row_at_the_next_step(server, shipped):
    long = server.submit(shipped, request(shipped, "ROMEO:", DecodeSettings(2000, 0.8, 0, 0.95, 1)))
    while long.written < 5:
        long.wait(0.01)
    long.cancel()
    with pytest.raises(JobCancelled):
        long.result()
    assert long.written < 2000 and server.load == {"running": 0, "waiting": 0}
    short = server.submit(shipped, request(shipped, "ROMEO:", SETTINGS[0]))
    short.result()
    assert short.text == shipped.generate("ROMEO:", SETTINGS[0]).text


def test_beyond_the_cap_a_request_is_refused_at_once_with_a_message(shipped):
    server = DecodeServer(ServerLimits(max_rows=1, max_waiting=1))
    try:
        first = server.submit(shipped, request(shipped, "ROMEO:", DecodeSettings(2000, 0.8, 0, 0.95, 1)))
        while server.load["running"] == 0:
            first.wait(0.01)
        second = server.submit(shipped, request(shipped, "ROMEO:", SETTINGS[0]))  # waits for the one row
        with pytest.raises(ServerBusy, match="busy.*Try again"):
            server.submit(shipped, request(shipped, "ROMEO:", SETTINGS[1]))
        first.cancel()
        second.result()
        assert second.text == shipped.generate("ROMEO:", SETTINGS[0]).text
    finally:
        server.close()


def test_runs_longer_than_the_server_holds_and_bad_interventions_are_refused(server, shipped):
    small = DecodeServer(ServerLimits(max_steps=100))
    try:
        with pytest.raises(ValueError, match="longer than this server allows"):
            small.submit(shipped, request(shipped, "ROMEO:", DecodeSettings(200)))
    finally:
        small.close()
    from charrnn.decoding.interventions import Intervention

    with pytest.raises(ValueError, match="unit must be a whole number from 0 to 511"):
        server.submit(shipped, DecodeRequest((1, 2), DecodeSettings(10), Intervention(1, "hidden", 512, 0.5)))


def test_the_same_request_asked_at_once_is_written_once_and_served_to_all(server, shipped):
    """The same request is the same run: visitors asking for it while it waits or is written share its job; one
    visitor letting go does not cancel it for the others."""
    settings = DecodeSettings(600, 0.8, 0, 0.95, 77)
    written = server.counts["written"]
    jobs = in_threads(lambda _: server.submit(shipped, request(shipped, "KING:", settings)), range(30))
    assert all(job is jobs[0] for job in jobs) and jobs[0].holders == 30
    for job in jobs[:29]:
        job.cancel()  # 29 visitors close their tabs; the last one still waits
    row = jobs[29].result()
    assert server.counts["written"] == written + 1 and row.request.settings == settings
    assert jobs[29].text == shipped.generate("KING:", settings).text
    # a request for it after it is done is a new job (the page serves those from its run cache)
    assert server.submit(shipped, request(shipped, "KING:", settings)) is not jobs[0]


def test_a_job_everyone_let_go_is_cancelled_and_not_shared(server, shipped):
    settings = DecodeSettings(2000, 0.8, 0, 0.95, 78)
    first = server.submit(shipped, request(shipped, "KING:", settings))
    first.cancel()
    with pytest.raises(JobCancelled):
        first.result()
    again = server.submit(shipped, request(shipped, "KING:", settings))
    assert again is not first
    again.cancel()


def test_a_wait_for_a_run_has_a_bound(server, shipped):
    from charrnn.serving.server import JobTimeout

    job = server.submit(shipped, request(shipped, "KING:", DecodeSettings(2000, 0.8, 0, 0.95, 79)))
    try:
        with pytest.raises(JobTimeout, match="not written within 0.01 s"):
            job.result(timeout=0.01)
    finally:
        job.cancel()
