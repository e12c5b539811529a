"""The bigram model: shapes, Hub layout (safetensors only), the shipped weights against the count statistics of
the split, brief training, and the command line's refusals."""

import json
import math
from collections import Counter

import pytest
import safetensors.torch
import torch

from charrnn import load_model, CharRNN, ModelLoadError
from charrnn.models.bigram import ALPHA_GRID, BigramLanguageModel
from charrnn.training.data import read_text, split

from conftest import CORPUS, ROOT, SHAKESPEARE_VOCAB, SHIPPED, evaluate_on_validation, run_cli

BIGRAM = ROOT / "weights" / "bigram"


def make_bigram(seed: int = 0) -> BigramLanguageModel:
    torch.manual_seed(seed)
    return BigramLanguageModel(SHAKESPEARE_VOCAB).eval()


@pytest.fixture
def saved(tmp_path):
    make_bigram().save_pretrained(tmp_path / "bigram")
    return tmp_path / "bigram"


def test_forward_gives_the_table_rows_and_the_mean_cross_entropy():
    model = make_bigram()
    idx = torch.randint(len(SHAKESPEARE_VOCAB), (4, 7), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(len(SHAKESPEARE_VOCAB), (4, 7), generator=torch.Generator().manual_seed(2))
    logits, loss = model(idx)
    assert logits.shape == (4, 7, 65) and loss is None
    table = model.token_embedding_table.weight.detach()
    assert torch.equal(logits, table[idx])
    assert torch.equal(model.next_logits(idx[0]), table[idx[0]])
    _, loss = model(idx, targets)
    expected = sum(-(table[a] - table[a].logsumexp(0))[b] for a, b in zip(idx.flatten(), targets.flatten())) / 28
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert model.vocab == SHAKESPEARE_VOCAB and model.device == torch.device("cpu")


def test_save_and_load_round_trip_in_hub_layout(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((saved / "config.json").read_text())
    assert config == {"model_type": "bigram", "vocab": SHAKESPEARE_VOCAB, "training": None}
    tensors = safetensors.torch.load_file(saved / "model.safetensors")
    assert {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()} == {
        "token_embedding_table.weight": ((65, 65), torch.float32)}
    assert {k: tuple(v.shape) for k, v in tensors.items()} == BigramLanguageModel.expected_tensors(config)
    loaded = BigramLanguageModel.from_pretrained(saved, device="cpu")
    assert not loaded.training and loaded.vocab == SHAKESPEARE_VOCAB
    assert torch.equal(loaded.token_embedding_table.weight, make_bigram().token_embedding_table.weight)
    assert "bigram" in (saved / "README.md").read_text()


def test_each_class_refuses_the_other_model_type_by_name(saved):
    with pytest.raises(ModelLoadError, match="is a 'bigram' model .* which CharRNN cannot load"):
        CharRNN.from_pretrained(saved)
    with pytest.raises(ModelLoadError, match="is a 'gru' model .* which BigramLanguageModel cannot load"):
        BigramLanguageModel.from_pretrained(SHIPPED)
    assert isinstance(load_model(saved, device="cpu"), BigramLanguageModel)
    assert isinstance(load_model(SHIPPED, device="cpu"), CharRNN)


def test_weights_that_do_not_match_the_vocabulary_name_the_tensor(saved):
    config = json.loads((saved / "config.json").read_text())
    config["vocab"] = "abc"
    (saved / "config.json").write_text(json.dumps(config))
    expected = r"token_embedding_table.weight: file has \[65, 65\], config.json implies \[3, 3\]"
    with pytest.raises(ModelLoadError, match=expected):
        BigramLanguageModel.from_pretrained(saved)


def test_evaluate_refuses_a_model_type_it_does_not_know_in_one_line(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "model_type": "transformer"}))
    result = run_cli("evaluate", "--model", str(saved), "--text", str(CORPUS), "--device", "cpu")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "has model_type 'transformer'; charrnn loads model_type 'gru', 'lstm', 'bigram'" in result.stderr


@pytest.mark.parametrize("vocab,message", [("", "needs a non-empty 'vocab' string"),
                                           ("aab", "the vocabulary repeats characters")])
def test_a_bigram_folder_with_a_bad_vocabulary_is_a_model_load_error(tmp_path, vocab, message):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bigram", "vocab": vocab}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=message):
        load_model(str(tmp_path))


@pytest.mark.parametrize("config", [{}, {"vocab": ""}, {"vocab": 65}, ["vocab"]])
def test_expected_tensors_refuses_a_config_without_a_vocabulary(config):
    with pytest.raises(ValueError, match="needs a non-empty 'vocab' string"):
        BigramLanguageModel.expected_tensors(config)


def test_model_type_must_be_bigram():
    with pytest.raises(ValueError, match="model_type must be 'bigram'"):
        BigramLanguageModel(SHAKESPEARE_VOCAB, model_type="gru")


# ---- the shipped model ----

def test_the_shipped_bigram_reaches_its_target_and_shares_the_grus_vocabulary():
    measured = evaluate_on_validation(BIGRAM)
    assert measured["loss"] <= 2.50
    config = json.loads((BIGRAM / "config.json").read_text())
    assert measured["loss"] == pytest.approx(config["training"]["val_loss"], abs=1e-4)
    assert config["model_type"] == "bigram"
    assert config["vocab"] == json.loads((SHIPPED / "config.json").read_text())["vocab"]
    assert sum(f.stat().st_size for f in BIGRAM.iterdir()) < 40_000


def pair_cross_entropy(counts: Counter, text: str, alpha: float, vocab: str) -> float:
    """Mean -log p(b | a) over the pairs of text, p from the pair counts with add-alpha smoothing."""
    row_totals = Counter()
    for (a, _), n in counts.items():
        row_totals[a] += n
    pairs = zip(text, text[1:])
    total = sum(-math.log((counts[a, b] + alpha) / (row_totals[a] + alpha * len(vocab))) for a, b in pairs)
    return total / (len(text) - 1)


def test_the_count_bounds_recorded_with_the_shipped_bigram_are_the_counts_of_the_split():
    train_text, val_text = split(read_text(CORPUS))
    bounds = json.loads((BIGRAM / "config.json").read_text())["training"]["bounds"]
    val_pairs = Counter(zip(val_text, val_text[1:]))
    own = pair_cross_entropy(val_pairs, val_text, 0.0, SHAKESPEARE_VOCAB)
    assert bounds["val_own_counts"] == pytest.approx(own, abs=1e-5)
    # alpha is chosen on the training part alone: counts of its first 90 %, scored on its last 10 %
    cut = int(len(train_text) * 0.9)
    fit = Counter(zip(train_text[:cut], train_text[1:cut]))
    held_out = train_text[cut:]
    alpha = min(ALPHA_GRID, key=lambda a: pair_cross_entropy(fit, held_out, a, SHAKESPEARE_VOCAB))
    assert bounds["alpha"] == alpha
    from_train = pair_cross_entropy(Counter(zip(train_text, train_text[1:])), val_text, alpha, SHAKESPEARE_VOCAB)
    assert bounds["train_counts"] == pytest.approx(from_train, abs=1e-5)
    # No bigram beats the validation text's own counts; gradient descent gets close to the training counts.
    val_loss = json.loads((BIGRAM / "config.json").read_text())["training"]["val_loss"]
    assert own < val_loss <= from_train + 0.02
    card = (BIGRAM / "README.md").read_text()
    for figure in (own, from_train, val_loss):
        assert f"{figure:.4f}" in card
    assert "python -m charrnn train-bigram" in card and "python -m charrnn evaluate" in card


# ---- training ----

def test_brief_training_learns_records_the_run_and_evaluates_the_same(tmp_path):
    out = tmp_path / "bigram"
    result = run_cli("train-bigram", "--text", str(CORPUS), "--out", str(out), "--steps", "600",
                     "--batch-size", "16", "--block-size", "32", "--eval-every", "200", "--seed", "3")
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "config.json").read_text())["training"]
    losses = [loss for _, loss in info["curve"]]
    assert [step for step, _ in info["curve"]] == [0, 200, 400, 600]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert info["val_loss"] < losses[0] - 0.2
    assert info["steps"] == 600 and info["batch_size"] == 16 and info["block_size"] == 32 and info["lr"] == 1e-3
    assert "python -m charrnn train-bigram" in info["command"] and "--steps 600" in info["command"]
    assert f"{info['val_loss']:.4f}" in (out / "README.md").read_text()
    evaluated = run_cli("evaluate", "--model", str(out), "--text", str(CORPUS), "--device", "cpu")
    assert json.loads(evaluated.stdout)["loss"] == pytest.approx(info["val_loss"], abs=1e-4)


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "steps must be a whole number >= 1"),
    (["--batch-size", "-4"], "batch_size must be a whole number >= 1"),
    (["--lr", "0"], "lr must be in (0, 1]"),
    (["--block-size", "2000000"], "too short to train on"),
    (["--text", "/no/such/file.txt"], "no such file"),
])
def test_bad_train_bigram_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = run_cli("train-bigram", "--text", str(CORPUS), "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
