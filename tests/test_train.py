"""Real training on the real corpus (briefly), resuming, evaluation, and refusals of unusable text."""

import json

import pytest
import safetensors.torch

from charrnn import CharRNN
from charrnn.training.data import DataError, read_text, split

from conftest import CORPUS, SHIPPED, evaluate_on_validation, run_cli

SMALL = ["--hidden-size", "48", "--num-layers", "2", "--embedding-dim", "16", "--batch-size", "32",
         "--seq-len", "64", "--eval-every", "40", "--warmup", "10", "--save-dtype", "float32", "--quiet"]


def test_the_split_is_the_first_90_and_last_10_percent():
    text = read_text(CORPUS)
    train_part, val_part = split(text)
    assert len(train_part) == 1_003_854 and len(val_part) == 111_540
    assert train_part + val_part == text


def test_training_learns_saves_the_best_and_resumes(tmp_path):
    out, checkpoint = tmp_path / "model", tmp_path / "ck"
    first = run_cli("train", "--text", str(CORPUS), "--out", str(out), "--checkpoint-dir", str(checkpoint),
                    "--steps", "80", *SMALL)
    assert first.returncode == 0, first.stderr
    assert "val loss" in first.stdout and "best validation loss" in first.stdout
    config = json.loads((out / "config.json").read_text())
    info = config["training"]
    assert info["val_loss"] < 3.3  # from ln(65) = 4.17 at the start
    assert info["steps_done"] == 80 and info["train_chars"] == 1_003_854
    assert "python -m charrnn train" in info["command"] and "--steps 80" in info["command"]
    card = (out / "README.md").read_text()
    assert f"{info['val_loss']:.4f}" in card and "first 90 %" in card
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["step"] == 80
    moments = safetensors.torch.load_file(checkpoint / "optimizer.safetensors")
    assert any(k.endswith("exp_avg_sq") for k in moments)

    resumed = run_cli("train", "--text", str(CORPUS), "--out", str(out), "--checkpoint-dir", str(checkpoint),
                      "--steps", "160", "--resume", *SMALL)
    assert resumed.returncode == 0, resumed.stderr
    assert "step 120/160" in resumed.stdout and "step 40/160" not in resumed.stdout
    after = json.loads((out / "config.json").read_text())["training"]
    assert after["steps_done"] == 160 and after["val_loss"] < info["val_loss"]
    model = CharRNN.from_pretrained(out, device="cpu")
    evaluated = run_cli("evaluate", "--model", str(out), "--text", str(CORPUS))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["loss"] == pytest.approx(after["val_loss"], abs=1e-4)
    assert model.hidden_size == 48


def test_the_shipped_model_reaches_the_target_validation_loss():
    measured = evaluate_on_validation(SHIPPED)
    assert measured["loss"] <= 1.50
    recorded = json.loads((SHIPPED / "config.json").read_text())["training"]["val_loss"]
    assert measured["loss"] == pytest.approx(recorded, abs=2e-4)


@pytest.mark.parametrize("content,message", [
    (b"", "is empty"),
    (b"To be or not to be", "too short to train on"),
    (b"caf\xe9 au lait " * 100, "not UTF-8 text: byte 0xe9 at offset 3"),
])
def test_unusable_text_gets_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    result = run_cli("train", "--text", str(path), "--out", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    result = run_cli("train", "--text", str(CORPUS), "--out", str(tmp_path / "out"), "--checkpoint-dir",
                     str(tmp_path / "nothing"), "--resume", "--quiet")
    assert result.returncode == 2 and "no checkpoint" in result.stderr


def test_read_text_reports_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "missing.txt")
