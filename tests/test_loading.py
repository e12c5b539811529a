"""Vetting a model before it is built (charrnn.loading): config.json's fields, the safetensors header, the build."""

import json
import math

import pytest
import safetensors.torch
import torch
import torch.nn as nn
from huggingface_hub import PyTorchModelHubMixin

from charrnn import CharRNN, ModelLoadError
from charrnn.models import loading
from charrnn.models.config import constructor_arguments, vocab as vocab_field
from charrnn.models.loading import MAX_CONFIG_BYTES, WEIGHTS_FILE, fetch_model, load_model

from conftest import SHAKESPEARE_VOCAB, SHIPPED, make_tiny


@pytest.fixture
def saved(tmp_path):
    make_tiny().save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("config", [
    dict(embedding_dim=8, hidden_size=16, num_layers=1),
    dict(embedding_dim=3, hidden_size=5, num_layers=3, dropout=0.0),
    dict(),  # the constructor's defaults
])
def test_expected_tensors_are_the_state_dict_of_the_model_the_config_builds(config):
    full = {"vocab": "abc\n", **config}
    with torch.device("meta"):
        built = CharRNN(**constructor_arguments(CharRNN, full))
    assert CharRNN.expected_tensors(full) == {k: tuple(v.shape) for k, v in built.state_dict().items()}


@pytest.mark.parametrize("changes,message", [
    (dict(hidden_size=True), "'hidden_size' must be a whole number from 1 to 1,000,000, not True"),
    (dict(hidden_size=16.0), "'hidden_size' must be a whole number .* not 16.0"),
    (dict(hidden_size="16"), "'hidden_size' must be a whole number .* not '16'"),
    (dict(embedding_dim=0), "'embedding_dim' must be a whole number from 1"),
    (dict(hidden_size=10**30), "'hidden_size' must be a whole number .* not 10000000000"),
    (dict(num_layers=33), "'num_layers' must be a whole number from 1 to 32, not 33"),
    (dict(vocab=""), "'vocab' is not a vocabulary: the vocabulary is empty"),
    (dict(vocab="abca"), "'vocab' is not a vocabulary: the vocabulary repeats characters"),
    (dict(vocab="".join(map(chr, range(256, 256 + 10_001)))), "'vocab' has 10,001 characters; at most 10,000"),
    (dict(dropout=1), "'dropout' must be a number from 0 up to"),
    (dict(dropout="0.3"), "'dropout' must be a number"),
    (dict(save_dtype="int8"), "'save_dtype' must be one of 'float32', 'float16', 'bfloat16', not 'int8'"),
])
def test_fields_that_define_the_model_are_checked_with_a_clear_message(saved, changes, message):
    edit_config(saved, **changes)
    with pytest.raises(ModelLoadError, match="is not a valid charrnn config: " + message):
        fetch_model(saved)


@pytest.mark.parametrize("changes,message", [
    (dict(model_type="bert"), "not a charrnn model: its config.json has model_type 'bert'; "
                              "charrnn loads model_type 'gru'"),
    (dict(model_type=["gru"]), r"has model_type \['gru'\]"),
    (dict(vocab=5), "not a charrnn model: its config.json is missing or has no 'vocab' string"),
])
def test_what_is_not_a_charrnn_model_says_what_is(saved, changes, message):
    edit_config(saved, **changes)
    with pytest.raises(ModelLoadError, match=message):
        fetch_model(saved)


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "config.json of .* is not a JSON object"),
    ("{'vocab': 'ab'}", "config.json of .* is not valid JSON"),
    ("[" * 200_000 + "]" * 200_000, "config.json of .* is not valid JSON"),  # nested deeper than Python recurses
    (" " * MAX_CONFIG_BYTES + "{}", "config.json of .* is 1,000,002 bytes; a charrnn config is a few KB, "
                                    "and at most 1,000,000 bytes are read"),
])
def test_a_config_that_is_not_a_small_json_object_is_refused(saved, text, message):
    (saved / "config.json").write_text(text)
    with pytest.raises(ModelLoadError, match=message):
        fetch_model(saved)


def test_informational_metadata_is_not_checked(saved):
    edit_config(saved, training={"val_loss": "n/a", "steps_done": None, "notes": [1, {"x": 2}]}, anything_else=7)
    model = CharRNN.from_pretrained(saved, device="cpu")
    assert model.training_info["val_loss"] == "n/a"


def header_and_data(saved) -> tuple[dict, bytes]:
    data = (saved / WEIGHTS_FILE).read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def write_weights(saved, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    (saved / WEIGHTS_FILE).write_bytes(len(text).to_bytes(8, "little") + text + data)


def test_a_header_whose_tensors_do_not_tile_the_file_is_refused(saved):
    header, data = header_and_data(saved)
    write_weights(saved, header, data + b"\0" * 4)  # bytes after the last tensor
    with pytest.raises(ModelLoadError, match="not a readable safetensors file .*describes [0-9,]+ bytes, but the file"):
        fetch_model(saved)
    first, second = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])[:2]
    gap = {**header, second: {**header[second], "data_offsets": [x + 4 for x in header[second]["data_offsets"]]}}
    write_weights(saved, gap, data)
    with pytest.raises(ModelLoadError, match="overlap or leave gaps"):
        fetch_model(saved)
    wrong = {**header, first: {**header[first], "shape": [1]}}
    write_weights(saved, wrong, data)
    with pytest.raises(ModelLoadError, match=f"tensor '{first}' of shape \\[1\\] takes bytes"):
        fetch_model(saved)
    extra = {**header, "x" * 500: {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}
    write_weights(saved, extra, data)
    with pytest.raises(ModelLoadError, match="unexpected tensor 'x{60}' in the file") as refused:
        fetch_model(saved)
    assert "x" * 61 not in str(refused.value)  # names from the file are cut short


def test_a_second_model_type_registers_in_one_line_and_loads_through_its_constructor(tmp_path, monkeypatch):
    class Toy(nn.Module, PyTorchModelHubMixin):
        """A bigram-shaped table registered as a third model type."""

        def __init__(self, vocab: str, training: dict | None = None):
            super().__init__()
            vocab_field(vocab)
            self.vocab, self.training_info = vocab, training
            self.table = nn.Embedding(len(vocab), len(vocab))

        @classmethod
        def expected_tensors(cls, config):
            size = len(vocab_field(config.get("vocab")))
            return {"table.weight": (size, size)}

    monkeypatch.setitem(loading.MODEL_TYPES, "toy", Toy)
    folder = tmp_path / "toy"
    folder.mkdir()
    table = torch.randn(4, 4).half()
    safetensors.torch.save_file({"table.weight": table}, str(folder / WEIGHTS_FILE))
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "vocab": "ab c", "training": {"n": 1}}))
    model = load_model(folder, device="cpu")
    assert type(model) is Toy and not model.training and model.training_info == {"n": 1}
    assert model.table.weight.dtype == torch.float32 and torch.equal(model.table.weight, table.float())
    with pytest.raises(ModelLoadError, match="is a 'toy' model .*, which CharRNN cannot load"):
        CharRNN.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "tree", "vocab": "ab"}))
    with pytest.raises(ModelLoadError, match="charrnn loads model_type 'gru', 'lstm', 'bigram', 'toy'"):
        load_model(folder)


def test_the_built_model_holds_the_file_weights_as_float32():
    model = CharRNN.from_pretrained(SHIPPED, device="cpu")
    stored = safetensors.torch.load_file(SHIPPED / WEIGHTS_FILE)
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, stored[name].float()), name
    assert all(p.requires_grad for p in model.parameters())  # trainable, as an ordinary module is


def test_fetch_reports_the_vetted_files_and_local_false_never_looks_on_disk(saved):
    fetched = fetch_model(saved)
    assert fetched.weights == str(saved / WEIGHTS_FILE) and fetched.model_type == "gru"
    assert fetched.num_parameters == sum(p.numel() for p in make_tiny().parameters())
    assert fetched.tensors == {k: tuple(v.shape) for k, v in make_tiny().state_dict().items()}
    assert fetched.config["vocab"] == SHAKESPEARE_VOCAB
    with pytest.raises(ModelLoadError, match="not a local folder and not a Hub repo id"):
        fetch_model(saved, local=False)
    assert math.prod(fetched.tensors["embedding.weight"]) == len(SHAKESPEARE_VOCAB) * 8
