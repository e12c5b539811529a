"""The command line: sample prints the text; bad input gets one line on stderr and a non-zero exit."""

import pytest

from charrnn import DecodeSettings

from conftest import run_cli


def test_sample_prints_the_same_text_as_generate(shipped):
    result = run_cli("sample", "--model", "weights/tiny-shakespeare", "--prompt", "ROMEO:", "--temperature", "0.8",
                     "--top-p", "0.95", "--seed", "1", "--max-new-chars", "120", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    expected = shipped.generate("ROMEO:", DecodeSettings(120, 0.8, 0, 0.95, 1)).text
    assert result.stdout == expected + "\n"
    streamed = run_cli("sample", "--prompt", "ROMEO:", "--temperature", "0.8", "--top-p", "0.95", "--seed", "1",
                       "--max-new-chars", "120", "--stream", "--device", "cpu")
    assert streamed.stdout == result.stdout


@pytest.mark.parametrize("args,message", [
    (["--top-p", "1.5"], "top_p must be in (0, 1]"),
    (["--temperature", "-1"], "temperature must be between 0 (greedy) and 100"),
    (["--top-k", "-2"], "top_k must be a whole number >= 0"),
    (["--max-new-chars", "-5"], "max_new_chars must be"),
    (["--prompt", "Señor"], "outside the model's vocabulary: 'ñ'"),
    (["--prompt", ""], "the prompt is empty"),
    (["--model", "/no/such/folder"], "not a local folder"),
])
def test_bad_sample_input_is_one_line_and_non_zero(args, message):
    result = run_cli("sample", "--device", "cpu", *args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_drop_unknown_characters():
    result = run_cli("sample", "--prompt", "Señor", "--drop-unknown", "--max-new-chars", "10", "--device", "cpu")
    assert result.returncode == 0 and result.stdout.startswith("Seor")


def test_unknown_command_and_missing_arguments_exit_non_zero():
    assert run_cli("fly").returncode == 2
    assert run_cli("train").returncode == 2
