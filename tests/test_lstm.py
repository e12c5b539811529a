"""LSTMs: the seed project's checkpoints convert, and a converted LSTM decodes through the one loop with its hidden
and cell states and its input, forget and output gates equal to the LSTM equations stepped in float64, its
probabilities equal to the original nn.LSTM's, its sampling equal to a plain nn.LSTM loop's, batch-invariant, and
intervened as the equations say."""

import pytest
import torch
import torch.nn as nn

from charrnn import DecodeSettings
from charrnn.decoding.interventions import Intervention, InterventionError
from charrnn.decoding.loop import DecodeLoop
from charrnn.decoding.sampling import filter_probs, race_noise
from charrnn.models import CharLSTM, load_model
from charrnn.models.convert import convert

from conftest import run_cli
from stepwise import lstm_step_equations
from test_convert import ITOS, TEXT, checkpoint_of, convert_cli, save, their_module
from test_decode_loop import MIXED, PROMPTS, request, run_alone

KINDS = ("hidden", "cell", "input", "forget", "output")


@pytest.fixture(scope="module")
def theirs():
    return their_module(seed=3, cell=nn.LSTM, hidden_dim=24, num_layers=2)


@pytest.fixture(scope="module")
def converted(theirs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lstm") / "converted"
    path = save(tmp_path_factory.mktemp("ckpt"), checkpoint_of(theirs))  # no rnn_type: told by the tensors
    convert(path, folder)
    return load_model(folder, device="cpu")


def test_the_seed_projects_lstm_converts_with_its_weights_kept(theirs, converted):
    assert isinstance(converted, CharLSTM) and converted.kinds == KINDS
    assert converted.config()["model_type"] == "lstm" and converted.vocab == "".join(ITOS)
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(converted.state_dict()[name.replace("rnn.", "lstm.")], tensor), name


def test_the_trace_equals_the_lstm_equations_in_float64_and_the_probabilities_nn_lstm(theirs, converted):
    trace = converted.generate(TEXT[:40], DecodeSettings(60, 0, 0, 1.0, 0))  # greedy
    ids, values, logits = lstm_step_equations(converted, [ITOS.index(c) for c in TEXT[:40]], new_chars=60)
    assert trace.text == "".join(ITOS[i] for i in ids)
    assert trace.values.shape == (5, 2, 100, 24) and trace.kinds == KINDS
    assert (trace.values.double() - values).abs().max() < 1e-5
    assert (trace.cell - values[1]).abs().max() < 1e-5 and (trace.forget_gate - values[3]).abs().max() < 1e-5
    with torch.no_grad():
        original = theirs(trace.tokens[None])[0].softmax(-1)
    assert (trace.probs - original).abs().max() < 1e-5
    assert (trace.probs.double() - logits.softmax(-1)).abs().max() < 1e-5


def plain_nn_lstm_loop(module, prompt_ids, settings: DecodeSettings) -> list[int]:
    """Sampling written out with the original module: one step of nn.LSTM at a time, the filter, the seed's noise."""
    noise = race_noise(settings, settings.max_new_chars, module.head.out_features)  # one row per character written
    ids, state = list(prompt_ids), None
    with torch.no_grad():
        out, state = module.rnn(module.embedding(torch.tensor([ids])), state)
        for t in range(settings.max_new_chars):
            filtered = filter_probs(module.head(out[0, -1])[None], settings)[0]
            ids.append(int(torch.argmax(filtered / noise[t])))
            out, state = module.rnn(module.embedding(torch.tensor([[ids[-1]]])), state)
    return ids


@pytest.mark.parametrize("settings", [DecodeSettings(150, 0, 0, 1.0, 0), DecodeSettings(150, 0.9, 0, 0.95, 7),
                                      DecodeSettings(150, 1.2, 5, 1.0, 8)])
def test_greedy_and_seeded_sampling_equal_a_plain_nn_lstm_loop(theirs, converted, settings):
    prompt = TEXT[:12]
    trace = converted.generate(prompt, settings)
    ids = plain_nn_lstm_loop(theirs, [ITOS.index(c) for c in prompt], settings)
    assert trace.text == "".join(ITOS[i] for i in ids)


def test_an_lstm_row_writes_the_same_alone_and_in_a_batch(shipped_lstm):
    model = shipped_lstm
    probe_settings = DecodeSettings(150, 0.8, 0, 0.95, 5)
    alone = run_alone(model, request(model, "ROMEO:\n", probe_settings))
    loop = DecodeLoop(model)
    rows = [loop.add(request(model, PROMPTS[i % 6], MIXED[i % 6])) for i in range(6)]
    with torch.inference_mode():
        for _ in range(5):
            loop.step()
        probe_row = loop.add(request(model, "ROMEO:\n", probe_settings))
        steps = 0
        while not probe_row.done:
            loop.step()
            steps += 1
            if steps == 30:
                loop.remove(rows[0])
    batched = probe_row.trace(model, loop.weights)
    assert batched.text == alone.text and batched.kinds == KINDS
    for name in ("tokens", "probs", "filtered", "values"):
        assert torch.equal(getattr(batched, name), getattr(alone, name)), name


@pytest.mark.parametrize("kind,unit,value", [("hidden", 5, 0.9), ("cell", 3, -4.0), ("input", 7, 0.0),
                                             ("forget", 11, 1.0), ("output", 2, 0.25)])
@pytest.mark.parametrize("from_step", [3, 20])
def test_an_intervened_lstm_run_equals_the_equations_stepped_by_hand(converted, kind, unit, value, from_step):
    layer = 1 if kind in ("input", "cell") else 2
    intervention = Intervention(layer, kind, unit, value, from_step)
    prompt = TEXT[:15]
    trace = converted.generate(prompt, DecodeSettings(40, 0, 0, 1.0, 0), intervention=intervention)
    ids, values, _ = lstm_step_equations(converted, [ITOS.index(c) for c in prompt], new_chars=40,
                                         intervention=intervention)
    assert trace.text == "".join(ITOS[i] for i in ids)
    assert (trace.values.double() - values).abs().max() < 1e-5
    forced = trace.of(kind)[layer - 1, :, unit]
    assert (forced[from_step:] == value).all() and (forced[:from_step] != value).all()


def check(intervention, model):
    return intervention.check(model.num_layers, model.hidden_size, model.kinds)


def test_lstm_kinds_are_checked_against_the_model(converted, shipped):
    with pytest.raises(InterventionError, match="one of hidden, cell, input, forget, output, not .reset."):
        check(Intervention(1, "reset", 0, 0.5, 0), converted)
    with pytest.raises(InterventionError, match="one of hidden, reset, update, not .forget."):
        check(Intervention(1, "forget", 0, 0.5, 0), shipped)
    with pytest.raises(InterventionError, match="from -20 to 20"):
        check(Intervention(1, "cell", 0, 25.0, 0), converted)
    assert check(Intervention(2, "forget", 3, 1.0, 0), converted).kind == "forget"


def test_a_config_rnn_type_must_agree_with_the_tensors(tmp_path, capsys):
    gru_said_lstm = save(tmp_path, checkpoint_of(their_module(), rnn_type="lstm"), "gru.pt")
    code, _, err = convert_cli(capsys, gru_said_lstm, tmp_path / "out")
    assert code == 2 and "config 'rnn_type' is 'lstm' but the tensors hold a GRU" in err and err.count("\n") == 1
    lstm_said_lstm = save(tmp_path, checkpoint_of(their_module(cell=nn.LSTM), rnn_type="LSTM"), "lstm.pt")
    code, out, err = convert_cli(capsys, lstm_said_lstm, tmp_path / "out")
    assert code == 0, err
    assert isinstance(load_model(tmp_path / "out", device="cpu"), CharLSTM)
    projected = save(tmp_path, checkpoint_of(their_module(cell=nn.LSTM, proj_size=8)), "proj.pt")
    code, _, err = convert_cli(capsys, projected, tmp_path / "out2")
    assert code == 2 and "LSTM with projections" in err


def test_train_cell_lstm_writes_an_lstm_folder(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 60)
    result = run_cli("train", "--text", str(corpus), "--out", str(tmp_path / "m"), "--cell", "lstm",
                             "--hidden-size", "16", "--num-layers", "1", "--embedding-dim", "8", "--seq-len", "32",
                             "--batch-size", "8", "--steps", "20", "--eval-every", "10", "--quiet",
                             "--checkpoint-dir", str(tmp_path / "ck"))
    assert result.returncode == 0, result.stderr
    model = load_model(tmp_path / "m", device="cpu")
    assert isinstance(model, CharLSTM) and model.config()["model_type"] == "lstm"
    assert "LSTM" in (tmp_path / "m" / "README.md").read_text()


def test_an_lstm_runs_export_holds_each_of_its_kinds(shipped_lstm, tmp_path):
    from charrnn.page import share
    from charrnn.serving.registry import ModelKey

    trace = shipped_lstm.generate("ROMEO:\n", DecodeSettings(60, 0.8, 0, 0.95, 3))
    run = share.read_run(share.export_run(trace, ModelKey("weights/lstm-2x256"), tmp_path / "run.npz"))
    assert run["meta"]["kinds"] == list(KINDS) and set(run) == {"meta", "probs", *KINDS}
    for kind in KINDS:
        assert run[kind].shape == (2, len(trace.text), 256) and run[kind].dtype.name == "float16"
        tolerance = 2e-2 if kind == "cell" else 5e-4  # float16 keeps 11 bits: a cell state near 20 within 1e-2
        assert abs(run[kind].astype("float32") - trace.of(kind).numpy()).max() < tolerance, kind
    assert "forget gate f_t" in run["meta"]["arrays"]["forget"]
