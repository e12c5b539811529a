"""Bring your own char-RNN: a checkpoint of the usual PyTorch recipe converts with its weights kept exactly and
writes what the original did; a pickle that would run code, a plain RNN, a bidirectional network and malformed
checkpoints are refused (LSTMs convert: tests/test_lstm.py)."""

import json
import os
import pickle

import pytest
import safetensors
import torch
import torch.nn as nn

from charrnn import CharRNN, DecodeSettings
from charrnn.cli import main
from charrnn.models.convert import ConversionError, convert

from conftest import run_cli

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
ITOS = sorted(set(TEXT + "xzQ!"))  # their own vocabulary, not charrnn's


class TheirCharRNN(nn.Module):
    """What the usual recipe trains and torch.saves: embedding -> nn.GRU (or nn.LSTM) -> linear head."""

    def __init__(self, vocab_size, embedding_dim=12, hidden_dim=24, num_layers=2, dropout=0.1, cell=nn.GRU,
                 **cell_kwargs):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = cell(embedding_dim, hidden_dim, num_layers, batch_first=True, dropout=dropout, **cell_kwargs)
        self.head = nn.Linear(hidden_dim, vocab_size)

    def forward(self, ids):
        out, _ = self.rnn(self.embedding(ids))
        return self.head(out)


def their_module(seed=0, **kwargs) -> TheirCharRNN:
    torch.manual_seed(seed)
    return TheirCharRNN(len(ITOS), **kwargs).eval()


def checkpoint_of(module: TheirCharRNN, itos=ITOS, **config) -> dict:
    """The seed project's layout, with an optimizer state and a step beside it as real checkpoints have."""
    rnn = module.rnn
    return {
        "model_state": module.state_dict(),
        "config": {"embedding_dim": module.embedding.embedding_dim, "hidden_dim": rnn.hidden_size,
                   "num_layers": rnn.num_layers, "dropout": rnn.dropout, "seq_len": 128, **config},
        "itos": list(itos),
        "stoi": {c: i for i, c in enumerate(itos)},
        "optimizer_state": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 2e-3}]},
        "step": 1200,
    }


def save(tmp_path, checkpoint, name="theirs.pt"):
    path = tmp_path / name
    torch.save(checkpoint, path)
    return path


def ids_of(text: str, itos=ITOS) -> torch.Tensor:
    return torch.tensor([[itos.index(c) for c in text]])


def convert_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_converted_checkpoint_keeps_the_weights_and_predicts_what_the_original_did(tmp_path):
    theirs = their_module()
    path = save(tmp_path, checkpoint_of(theirs))
    out = tmp_path / "converted"
    result = run_cli("convert", str(path), str(out))
    assert result.returncode == 0, result.stderr
    assert "GRU 2 x 24" in result.stdout and "stored as float32" in result.stdout

    with safetensors.safe_open(out / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    assert json.loads((out / "config.json").read_text())["save_dtype"] == "float32"
    assert "charrnn convert" in (out / "README.md").read_text()

    model = CharRNN.from_pretrained(out, device="cpu")
    assert model.vocab == "".join(ITOS) and (model.num_layers, model.hidden_size, model.embedding_dim) == (2, 24, 12)
    mine = model.state_dict()
    for key, tensor in theirs.state_dict().items():
        assert torch.equal(mine[key.replace("rnn.", "gru.", 1)], tensor), key

    # The same text, read by their module (nn.GRU over the whole sequence) and by charrnn's decode loop (one
    # step at a time through gru_update): the same next-character probabilities after every character.
    with torch.no_grad():
        expected = torch.softmax(theirs(ids_of(TEXT))[0], dim=-1)
    assert (model.trace(TEXT).probs - expected).abs().max() < 1e-6

    # And it writes what theirs writes: greedy decoding, their module run on the growing text each step.
    ids = ids_of("ROMEO:\n")
    with torch.no_grad():
        for _ in range(60):
            ids = torch.cat([ids, theirs(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    written = "".join(ITOS[i] for i in ids[0].tolist())
    assert model.generate("ROMEO:\n", DecodeSettings(60, temperature=0)).text == written


def test_dtype_is_kept_unless_asked_and_float16_rounds_only_the_storage(tmp_path, capsys):
    theirs = their_module(seed=1, num_layers=1, dropout=0.0)
    path = save(tmp_path, checkpoint_of(theirs))
    code, out, err = convert_cli(capsys, path, tmp_path / "half", "--dtype", "float16")
    assert code == 0, err
    with safetensors.safe_open(tmp_path / "half" / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    half = CharRNN.from_pretrained(tmp_path / "half", device="cpu").state_dict()
    for key, tensor in theirs.state_dict().items():
        assert torch.equal(half[key.replace("rnn.", "gru.", 1)], tensor.half().float()), key

    # A bfloat16 checkpoint stays bfloat16; the "_orig_mod." prefix of a torch.compile'd module is dropped.
    state = {"_orig_mod." + k: v.bfloat16() for k, v in theirs.state_dict().items()}
    model = convert(save(tmp_path, {**checkpoint_of(theirs), "model_state": state}, "bf16.pt"), tmp_path / "bf16")
    assert model.save_dtype == "bfloat16"
    loaded = CharRNN.from_pretrained(tmp_path / "bf16", device="cpu").state_dict()
    assert torch.equal(loaded["gru.weight_hh_l0"], theirs.rnn.weight_hh_l0.bfloat16().float())


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_file_whose_loading_would_run_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "ran"
    inside = save(tmp_path, {**checkpoint_of(their_module()), "config": RunsCode(marker)}, "inside.pt")
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    for path, found in ((inside, f"refers to {os.system.__module__}.system"), (plain, "")):
        code, out, err = convert_cli(capsys, path, tmp_path / "out")
        assert code == 2 and out == ""
        assert found in err and "torch.load(weights_only=True)" in err and "nothing in it was run" in err
        assert err.count("\n") == 1
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    # The marker would be made if the file were loaded the unsafe way: the test's pickle does run code.
    pickle.loads(plain.read_bytes())
    assert marker.exists()


def without(d: dict, key) -> dict:
    return {k: v for k, v in d.items() if k != key}


MALFORMED = {
    "missing head bias": (lambda c: {**c, "model_state": without(c["model_state"], "head.bias")},
                          "head.bias is missing"),
    "unexpected key": (lambda c: {**c, "model_state": {**c["model_state"], "norm.weight": torch.ones(24)}},
                       "unexpected norm.weight"),
    "vocabulary smaller than the embedding": (
        lambda c: {**c, "itos": ITOS[:-1], "stoi": {ch: i for i, ch in enumerate(ITOS[:-1])}},
        f"embedding.weight is [{len(ITOS)}, 12], expected [{len(ITOS) - 1}, 12]"),
    "config hidden size disagrees": (lambda c: {**c, "config": {**c["config"], "hidden_dim": 32}},
                                     "config 'hidden_dim' is 32 but the model_state has 24 (rnn.weight_hh_l0)"),
    "stoi disagrees with itos": (lambda c: {**c, "stoi": {**c["stoi"], "a": c["stoi"]["b"]}},
                                 "'stoi' disagrees with 'itos': stoi['a'] is"),
    "itos repeats a character": (lambda c: {**c, "itos": ITOS[:-1] + [ITOS[0]], "stoi": None},
                                 "'itos' is not a vocabulary: the vocabulary repeats characters"),
    "itos holds words": (lambda c: {**c, "itos": ["the", *ITOS[1:]]}, "'itos' holds 'the'"),
    "no vocabulary": (lambda c: without(c, "itos"), "has no 'itos' entry"),
    "a bare state dict": (lambda c: c["model_state"], "bare state dict"),
    "integer weights": (lambda c: {**c, "model_state": {**c["model_state"], "head.bias": torch.arange(len(ITOS))}},
                        "head.bias is torch.int64; weights must be floating point"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_checkpoints_get_one_clear_line(tmp_path, capsys, name):
    damage, message = MALFORMED[name]
    checkpoint = damage(checkpoint_of(their_module()))
    code, out, err = convert_cli(capsys, save(tmp_path, checkpoint), tmp_path / "out")
    assert code == 2 and out == ""
    assert err.startswith("charrnn convert: error: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "out").exists()


def test_other_networks_files_and_folders_are_refused(tmp_path, capsys):
    cases = {
        "plain RNN": (checkpoint_of(their_module(cell=nn.RNN)), "holds a plain RNN (nn.RNN)"),
        "bidirectional GRU": (checkpoint_of(their_module(bidirectional=True)), "holds a bidirectional network"),
    }
    for name, (checkpoint, message) in cases.items():
        code, _, err = convert_cli(capsys, save(tmp_path, checkpoint, f"{name}.pt"), tmp_path / "out")
        assert code == 2 and message in err, name
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    code, _, err = convert_cli(capsys, text, tmp_path / "out")
    assert code == 2 and "is not a checkpoint written by torch.save" in err
    code, _, err = convert_cli(capsys, tmp_path / "absent.pt", tmp_path / "out")
    assert code == 2 and "absent.pt is not a file (no such file)" in err

    good = save(tmp_path, checkpoint_of(their_module()))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    code, _, err = convert_cli(capsys, good, tmp_path / "taken")
    assert code == 2 and "already exists and is not an empty folder" in err
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]
    code, _, err = convert_cli(capsys, good, tmp_path / "taken", "--overwrite")
    assert code == 0, err
    assert CharRNN.from_pretrained(tmp_path / "taken", device="cpu").vocab == "".join(ITOS)
    with pytest.raises(ConversionError, match="dtype must be one of"):
        convert(good, tmp_path / "new", dtype="int8")
