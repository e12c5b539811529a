"""The unit atlas against the stepwise GRU: means, histograms, top and bottom contexts, windows, correlations,
timescales; the file's checks; unit profiles; the CLI; spot checks of the shipped atlas."""

import json
import math

import numpy as np
import pytest
import safetensors.torch
import torch

from charrnn.analysis.atlas import AFTER, ATLAS_FILE, BEFORE, BLOCK, MARK_CLOSE, MARK_OPEN, REFERENCE_FILE, TOP_K, AtlasError, atlas_for, build_atlas, edges, file_sha256, load_atlas, save_atlas, unit_profile
from charrnn.decoding.unit import KINDS, KIND_RANGES
from charrnn.training.data import split
from charrnn.analysis.signals import BUILTIN

from conftest import CORPUS, SHIPPED, make_tiny, run_cli
from stepwise import START_CHARS, reference_start, stepwise_values

TEXT = (SHIPPED / REFERENCE_FILE).read_text(encoding="utf-8")[:1000]


@pytest.fixture(scope="module")
def tiny_model():
    return make_tiny(hidden_size=8, num_layers=2)


@pytest.fixture(scope="module")
def tiny_atlas(tiny_model):
    return build_atlas(tiny_model, TEXT, chunk_size=64)  # 16 pieces: the statistics cross every boundary


@pytest.fixture(scope="module")
def expected(tiny_model):
    return stepwise_values(tiny_model, TEXT)  # [kinds, layers, T, H]


def block_extremes(series, sign):
    """The TOP_K strongest block maxima (sign 1) or minima (sign -1) of a series, computed directly."""
    blocks = [(sign * series[s : s + BLOCK]).max() for s in range(0, len(series), BLOCK)]
    return np.sort(np.array(blocks))[::-1][:TOP_K] * sign


def test_means_spreads_and_gate_means(tiny_atlas, expected):
    assert (tiny_atlas.mean.double() - expected.mean(2)).abs().max() <= 1e-6
    assert (tiny_atlas.std.double() - expected.std(2, unbiased=False)).abs().max() <= 1e-6
    assert (tiny_atlas.gate_mean("reset").double() - expected[1].mean(-1)).abs().max() <= 1e-5
    assert (tiny_atlas.gate_mean("update").double() - expected[2].mean(-1)).abs().max() <= 1e-5
    assert tiny_atlas.timescale == pytest.approx(1 / (1 - expected[2].mean(1).numpy()), rel=1e-5)


def test_histograms_equal_numpy_histograms(tiny_atlas, expected):
    for k, kind in enumerate(KINDS):
        for layer in range(2):
            for u in range(8):
                series = expected[k, layer, :, u].numpy()
                direct, _ = np.histogram(series, edges(kind))
                counts = tiny_atlas.histogram[k, layer, u].numpy()
                # The pass is within 1e-5 of the stepwise values: only values that close to an edge may move bins.
                near_edge = (np.abs(series[:, None] - edges(kind)[None]) < 1e-5).sum()
                assert np.abs(counts - direct).sum() <= 2 * near_edge
                assert counts.sum() == len(TEXT)


def test_top_and_bottom_contexts_are_the_strongest_block_extremes(tiny_atlas, expected):
    for k in range(3):
        for layer in range(2):
            for u in range(8):
                series = expected[k, layer, :, u].numpy()
                for sign, offsets, values, windows in (
                        (1, tiny_atlas.top_offsets, tiny_atlas.top_values, tiny_atlas.top_windows),
                        (-1, tiny_atlas.bottom_offsets, tiny_atlas.bottom_values, tiny_atlas.bottom_windows)):
                    o, v, w = offsets[k, layer, u].numpy(), values[k, layer, u].numpy(), windows[k, layer, u].numpy()
                    assert v == pytest.approx(block_extremes(series, sign), abs=1e-5)
                    assert v == pytest.approx(series[o], abs=1e-5)
                    for offset, value in zip(o, v):  # each is its block's extreme
                        block = series[offset // BLOCK * BLOCK : (offset // BLOCK + 1) * BLOCK]
                        assert sign * value >= sign * (block.max() if sign > 0 else block.min()) - 1e-5
                    assert len(set(o // BLOCK)) == TOP_K  # one per block
                    for offset, window in zip(o, w):
                        for j, got in enumerate(window):
                            at = offset - BEFORE + j
                            if 0 <= at < len(TEXT):
                                assert got == pytest.approx(series[at], abs=1e-5)
                            else:
                                assert math.isnan(got)


def test_signal_correlations_equal_numpy(tiny_atlas, expected):
    assert tiny_atlas.signal_names == [n for n in BUILTIN if n in tiny_atlas.signal_names]
    assert {"line position", "word position", "speaker name line"} <= set(tiny_atlas.signal_names)
    for s, name in enumerate(tiny_atlas.signal_names):
        signal = BUILTIN[name].values(TEXT)
        for k in range(3):
            for layer in range(2):
                for u in range(8):
                    r = np.corrcoef(expected[k, layer, :, u].numpy(), signal)[0, 1]
                    assert tiny_atlas.signal_r[s, k, layer, u].item() == pytest.approx(r, abs=1e-5)


def test_file_round_trip_and_its_checks(tiny_model, tiny_atlas, tmp_path):
    path = save_atlas(tiny_atlas, tmp_path / ATLAS_FILE)
    loaded = load_atlas(path, tiny_model, TEXT)
    for name in ("mean", "std", "histogram", "top_offsets", "top_values", "bottom_values", "signal_r", "gate_means"):
        assert torch.equal(getattr(loaded, name), getattr(tiny_atlas, name)), name
    # windows travel as int8: within half a step of 1/254 of the kind's range
    for k, kind in enumerate(KINDS):
        low, high = KIND_RANGES[kind]
        difference = (loaded.top_windows[k] - tiny_atlas.top_windows[k]).nan_to_num().abs().max()
        assert difference <= (high - low) / 254 / 2 + 1e-6
        assert torch.equal(loaded.top_windows[k].isnan(), tiny_atlas.top_windows[k].isnan())
    assert loaded.meta["text_chars"] == str(len(TEXT)) and loaded.meta["version"] == "2"

    with pytest.raises(AtlasError, match="built for other weights"):
        load_atlas(path, make_tiny(seed=1, hidden_size=8, num_layers=2), TEXT)
    with pytest.raises(AtlasError, match="over another reference text"):
        load_atlas(path, tiny_model, TEXT[:-1] + "!")
    tensors = safetensors.torch.load_file(path)
    safetensors.torch.save_file(tensors, tmp_path / "old.safetensors", metadata={**loaded.meta, "version": "0",
                                                                                  "signals": "[]"})
    with pytest.raises(AtlasError, match="version 0, this charrnn reads version 2: rebuild it with"):
        load_atlas(tmp_path / "old.safetensors", tiny_model, TEXT)
    with pytest.raises(AtlasError, match="not a charrnn atlas"):
        load_atlas(SHIPPED / "model.safetensors", tiny_model, TEXT)
    with pytest.raises(AtlasError, match="not a readable atlas file"):
        load_atlas(tmp_path / "missing.safetensors", tiny_model, TEXT)


def test_unit_profile(tiny_model, tiny_atlas, expected):
    profile = unit_profile(tiny_atlas, 2, "hidden", 3, model=tiny_model)
    assert (profile["layer"], profile["kind"], profile["unit"]) == (2, "hidden", 3)
    assert profile["timescale"] == pytest.approx(1 / (1 - expected[2, 1, :, 3].mean().item()), rel=1e-5)
    assert len(profile["top"]) >= 10 and len(profile["bottom"]) >= 10
    tops, bottoms = [c["value"] for c in profile["top"]], [c["value"] for c in profile["bottom"]]
    assert tops == sorted(tops, reverse=True) and bottoms == sorted(bottoms)
    for entry in profile["top"] + profile["bottom"]:
        o = entry["offset"]
        assert entry["char"] == TEXT[o] and entry["value"] == pytest.approx(expected[0, 1, o, 3].item(), abs=1e-5)
        assert entry["context"] == entry["before"] + MARK_OPEN + entry["char"] + MARK_CLOSE + entry["after"]
        assert entry["before"] == TEXT[max(0, o - BEFORE) : o] and entry["after"] == TEXT[o + 1 : o + 1 + AFTER]
        assert len(entry["values"]) == len(entry["before"]) + 1 + len(entry["after"])
        assert entry["values"][len(entry["before"])] == pytest.approx(entry["value"], abs=0.005)
    assert sum(profile["histogram"]["counts"]) == len(TEXT) and len(profile["histogram"]["edges"]) == 41
    column = tiny_model.head.weight.detach()[:, 3]
    assert [p["char"] for p in profile["pushes"]["up"]] == [tiny_model.vocab[i] for i in column.argsort(descending=True)[:8]]
    assert profile["pushes"]["down"][0]["weight"] == pytest.approx(column.min().item())
    assert unit_profile(tiny_atlas, 1, "hidden", 3, model=tiny_model)["pushes"] is None
    assert unit_profile(tiny_atlas, 2, "update", 3, model=tiny_model)["pushes"] is None
    for signal in profile["signals"]:
        assert signal["r"] == pytest.approx(np.corrcoef(expected[0, 1, :, 3], BUILTIN[signal["signal"]].values(TEXT))[0, 1],
                                            abs=1e-5)
    with pytest.raises(ValueError, match="layer must be a whole number from 1 to 2"):
        unit_profile(tiny_atlas, 0, "hidden", 3)
    with pytest.raises(ValueError, match="unit must be a whole number from 0 to 7"):
        unit_profile(tiny_atlas, 1, "hidden", 8)
    with pytest.raises(ValueError, match="kind must be one of"):
        unit_profile(tiny_atlas, 1, "cell", 0)


def test_atlas_for_a_folder_loads_builds_or_refuses(tiny_model, tiny_atlas, tmp_path):
    with pytest.raises(AtlasError, match="has no reference.txt"):
        atlas_for(tiny_model, tmp_path)
    (tmp_path / REFERENCE_FILE).write_text(TEXT, encoding="utf-8")
    with pytest.raises(AtlasError, match="has no atlas.safetensors"):
        atlas_for(tiny_model, tmp_path, build=False)
    built = atlas_for(tiny_model, tmp_path)  # built in memory
    assert torch.equal(built.top_offsets, tiny_atlas.top_offsets)
    save_atlas(tiny_atlas, tmp_path / ATLAS_FILE)
    assert atlas_for(tiny_model, tmp_path, build=False).meta["text_sha256"] == tiny_atlas.meta["text_sha256"]
    other = make_tiny(seed=3, hidden_size=8, num_layers=2)
    with pytest.raises(AtlasError, match="other weights"):
        atlas_for(other, tmp_path, build=False)
    assert atlas_for(other, tmp_path).meta["model_sha256"] != tiny_atlas.meta["model_sha256"]  # rebuilt


def test_cli_writes_the_reference_text_and_the_atlas(tiny_model, tmp_path):
    folder = tmp_path / "tiny"
    tiny_model.save_pretrained(folder)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 3, encoding="utf-8")
    done = run_cli("atlas", "--model", str(folder), "--from-corpus", str(corpus), "--quiet", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["chars"] == len(split(TEXT * 3)[1]) and report["bytes"] == (folder / ATLAS_FILE).stat().st_size
    assert (folder / REFERENCE_FILE).read_text(encoding="utf-8") == split(TEXT * 3)[1]
    atlas = load_atlas(folder / ATLAS_FILE, tiny_model, split(TEXT * 3)[1])
    assert atlas.meta["model_file_sha256"] == file_sha256(folder / "model.safetensors")

    missing = run_cli("atlas", "--model", str(tmp_path / "nowhere"), "--quiet")
    assert missing.returncode == 2 and "is not a local model folder" in missing.stderr
    assert missing.stderr.count("\n") == 1
    (folder / REFERENCE_FILE).unlink()
    no_text = run_cli("atlas", "--model", str(folder), "--quiet", "--device", "cpu")
    assert no_text.returncode == 2 and "has no reference.txt" in no_text.stderr and "Traceback" not in no_text.stderr


# ---- the shipped model's atlas ----


def test_shipped_reference_text_is_the_validation_split():
    text = (SHIPPED / REFERENCE_FILE).read_text(encoding="utf-8")
    corpus = CORPUS.read_text(encoding="utf-8")
    assert text == corpus[int(len(corpus) * 0.9) :] and len(text) == 111_540
    assert "## Reference text and unit atlas" in (SHIPPED / "README.md").read_text(encoding="utf-8")


def test_shipped_atlas_spot_checks(shipped):
    text = (SHIPPED / REFERENCE_FILE).read_text(encoding="utf-8")
    atlas = load_atlas(SHIPPED / ATLAS_FILE, shipped, text)  # checks weights, text and version
    assert (SHIPPED / ATLAS_FILE).stat().st_size < 10_000_000
    assert atlas.meta["model_file_sha256"] == file_sha256(SHIPPED / "model.safetensors")
    start, expected = reference_start(shipped)
    assert (atlas.gate_means[:, :, :START_CHARS].double() - expected[1:].mean(-1)).abs().max() <= 1e-5
    assert (atlas.histogram.sum(-1) == len(text)).all()
    assert atlas.timescale == pytest.approx(1 / (1 - atlas.mean[2].double().numpy()))
    checked = 0
    for offsets, values in ((atlas.top_offsets, atlas.top_values), (atlas.bottom_offsets, atlas.bottom_values)):
        sign = 1 if offsets is atlas.top_offsets else -1
        for k, layer, u, i in (offsets < START_CHARS // BLOCK * BLOCK).nonzero().tolist():
            offset, value = offsets[k, layer, u, i].item(), values[k, layer, u, i].item()
            series = expected[k, layer, :, u]
            block = series[offset // BLOCK * BLOCK : (offset // BLOCK + 1) * BLOCK]
            assert value == pytest.approx(series[offset].item(), abs=1e-4)
            assert sign * value >= sign * (block.max() if sign > 0 else block.min()).item() - 1e-4
            checked += 1
    assert checked > 100  # many units peak in the first 1,500 characters
