"""Long jobs in pieces on the compute thread (charrnn.compute.run_in_pieces) and the analyses written as steps: each
piece runs on the compute thread, the decode server writes between them, and an analysis read in pieces of any size
gives what it gives in one."""

import threading
import time

import numpy as np
import pytest

from charrnn import DecodeSettings
from charrnn.analysis.activations import Activations, read
from charrnn.models.bigram import BigramLanguageModel
from charrnn.serving.compute import run_in_pieces
from charrnn.analysis.activations import run_steps
from charrnn.decoding.loop import DecodeRequest
from charrnn.analysis.matching import build_match_index, match_index_steps, select_units
from charrnn.analysis.memory_gain import memory_gain, memory_gain_steps
from charrnn.serving.server import DecodeServer
from charrnn.analysis.units import find_units, find_units_steps

from conftest import ROOT, SHIPPED, make_tiny

TEXT = (SHIPPED / "reference.txt").read_text(encoding="utf-8")[:700]


def test_each_piece_runs_on_the_compute_thread_and_the_result_comes_back():
    seen = []

    def job(pieces):
        for i in range(pieces):
            seen.append(threading.current_thread().name)
            yield
        return pieces * 10

    assert run_in_pieces(job(5)) == 50
    assert seen == ["charrnn-compute"] * 5
    assert run_steps(job(2)) == 20 and seen[-2:] == [threading.current_thread().name] * 2

    def failing():
        yield
        raise ValueError("the third piece is bad")

    with pytest.raises(ValueError, match="the third piece is bad"):
        run_in_pieces(failing())


def test_the_decode_server_writes_between_the_pieces_of_a_long_job(shipped):
    """A text asked for after a long job started is written while the job goes on (ordering only, no times)."""
    server = DecodeServer()
    try:
        finished = {}

        def long_job(pieces=150):
            for _ in range(pieces):
                until = time.perf_counter() + 0.02  # 20 ms of work per piece: 3 s in all, at the very least
                while time.perf_counter() < until:
                    pass
                yield
            finished["job"] = time.perf_counter()

        worker = threading.Thread(target=run_in_pieces, args=(long_job(),))
        worker.start()
        time.sleep(0.2)  # the job is under way
        job = server.submit(shipped, DecodeRequest(tuple(shipped.tokenizer.encode("ROMEO:\n")),
                                                   DecodeSettings(100, 0.8, 0, 0.95, 1)))
        job.result()
        finished["text"] = time.perf_counter()
        worker.join()
        assert finished["text"] < finished["job"]
        assert job.text == shipped.generate("ROMEO:\n", DecodeSettings(100, 0.8, 0, 0.95, 1)).text
    finally:
        server.close()


@pytest.fixture(scope="module")
def model():
    return make_tiny(seed=3, hidden_size=16, num_layers=3)


def test_find_units_in_small_pieces_equals_one_piece(model):
    whole = find_units(model, TEXT, "word position", top=100, chunk_size=4096)
    pieces = run_in_pieces(find_units_steps(model, TEXT, "word position", top=100, chunk_size=37))
    assert [(r["layer"], r["kind"], r["unit"]) for r in pieces["units"][:20]] == \
        [(r["layer"], r["kind"], r["unit"]) for r in whole["units"][:20]]
    assert [r["r"] for r in pieces["units"]] == pytest.approx([r["r"] for r in whole["units"]], abs=1e-6)


def test_a_bad_input_is_refused_before_any_step(model):
    with pytest.raises(ValueError, match="not a valid regular expression"):
        find_units_steps(model, TEXT, "(")
    with pytest.raises(ValueError, match="at most 10 can be analysed"):
        find_units_steps(model, TEXT, "vowel", max_chars=10)


def test_select_units_reads_only_up_to_the_span_and_keeps_only_around_it(model):
    values = read(model, TEXT, gates=False)
    for start, end in ((0, 3), (200, 207), (690, 700)):
        whole = select_units(model, TEXT, start, end, threshold=0.0, pad=3, values=values, top=100)
        pieces = select_units(model, TEXT, start, end, threshold=0.0, pad=3, chunk_size=29, top=100)
        assert [(r["layer"], r["unit"]) for r in pieces["units"]] == [(r["layer"], r["unit"]) for r in whole["units"]]
        assert [r["score"] for r in pieces["units"]] == pytest.approx([r["score"] for r in whole["units"]], abs=1e-6)
        window = Activations(max(0, start - 3), None, values.values[:, :, max(0, start - 3) : end + 3], ("hidden",))
        assert select_units(model, TEXT, start, end, threshold=0.0, pad=3, values=window, top=100) == whole
    with pytest.raises(ValueError, match=r"cover \[199, 700\), not the selection and the characters around it"):
        select_units(model, TEXT, 200, 207, pad=3, values=Activations(199, None, values.values[:, :, 199:], ("hidden",)))


def test_the_match_index_and_memory_gain_in_pieces_equal_one_piece(model):
    whole = build_match_index(model, TEXT, chunk_size=4096)
    pieces = run_in_pieces(match_index_steps(model, TEXT, chunk_size=50))
    assert (whole.codes == pieces.codes).float().mean() > 0.999 and pieces.text == whole.text
    assert (whole.codes.int() - pieces.codes.int()).abs().max() <= 1
    bigram = BigramLanguageModel.from_pretrained(ROOT / "weights" / "bigram", device="cpu")
    one = memory_gain(model, bigram, TEXT, chunk_size=4096)
    many = run_in_pieces(memory_gain_steps(model, bigram, TEXT, chunk_size=13))
    assert [r["char"] for r in many] == [r["char"] for r in one] == list(TEXT[1:])
    assert np.abs(np.array([[r["gru"], r["bigram"]] for r in many]) -
                  np.array([[r["gru"], r["bigram"]] for r in one])).max() < 1e-5
