"""Speech Commands SC10: the official split lists, padding, standardisation, rate change, cache, bad data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from torch.utils.data import DataLoader

import tasks.speech_commands as sc
from harness.errors import ConfigError, DataError
from harness.registry import TASKS
from tests.fixtures import SC_WORDS, speech_commands_tarball, write_speech_commands, write_wav

PER_WORD = 4


@pytest.fixture(scope="module")
def sc_data(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("speech_commands")
    return root, write_speech_commands(root, n_per_word=PER_WORD)


@pytest.fixture()
def copy(sc_data, tmp_path) -> Path:
    shutil.copytree(sc_data[0], tmp_path / "sc", ignore=shutil.ignore_patterns("cache"))
    return tmp_path / "sc"


def damage(path: Path) -> None:
    """Replace a cache file by a truncated copy. Through a new inode: the tasks built above still map the old
    one, and truncating a mapped file in place would crash them with SIGBUS (the loaders never write in place)."""
    path.with_name("damaged").write_bytes(path.read_bytes()[:3000])
    path.with_name("damaged").replace(path)


def build(root: Path, **overrides):
    return TASKS.build(TASKS.config("speech_commands", **overrides), root)


def padded(samples: np.ndarray) -> np.ndarray:
    out = np.zeros(16000)
    out[:len(samples)] = samples / 32768.0
    return out


def test_official_lists_padding_and_standardisation(sc_data):
    root, written = sc_data
    task = build(root)
    spec = task.spec
    assert (spec.input, spec.seq_len, spec.d_input, spec.n_outputs, spec.metric) == ("signal", 16000, 1, 10,
                                                                                      "accuracy")
    assert task.info["classes"] == SC_WORDS
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 10 * (PER_WORD - 2), "val": 10, "test": 10}
    train = np.stack([padded(s) for _, _, s in written["train"]])
    mean, std = train.mean(), train.std()  # one mean/std over the training split, padding included
    for split in ("train", "val", "test"):
        items = sorted(written[split], key=lambda r: (r[1], r[0].split("/")[1]))  # by word index, then file name
        for pos in (0, len(items) - 1):
            rel, label, samples = items[pos]
            item = task.splits[split][pos]
            assert int(item["y"]) == label
            np.testing.assert_allclose(item["x"][:, 0].numpy(), (padded(samples) - mean) / std, rtol=1e-4, atol=1e-5)
    short = [i for i, (_, _, s) in enumerate(sorted(written["train"], key=lambda r: (r[1], r[0].split("/")[1])))
             if len(s) < 16000]
    assert short  # the fixture has short clips: their tails are zero before standardisation
    x = task.splits["train"][short[0]]["x"][:, 0]
    torch.testing.assert_close(x[-100:], torch.full((100,), -mean / std, dtype=torch.float32))
    batch = next(iter(DataLoader(task.splits["val"], batch_size=4)))
    assert batch["x"].shape == (4, 16000, 1) and batch["x"].dtype == torch.float32 and batch["y"].dtype == torch.int64


def test_without_normalisation(sc_data):
    root, written = sc_data
    task = build(root, normalize=False)
    rel, label, samples = sorted(written["test"], key=lambda r: r[1])[3]
    np.testing.assert_allclose(task.splits["test"][3]["x"][:, 0].numpy(), padded(samples), atol=1e-7)


def test_zero_shot_rate_change(sc_data):
    root, _ = sc_data
    full = build(root)
    half = build(root, eval_rate=8000)
    assert half.spec.seq_len == 16000 and half.info["rates"] == {"train": 16000, "val": 16000, "test": 8000}
    assert torch.equal(half.splits["val"][0]["x"], full.splits["val"][0]["x"])
    x16, x8 = full.splits["test"][2]["x"][:, 0], half.splits["test"][2]["x"][:, 0]
    assert x8.shape == (8000,)
    torch.testing.assert_close(x8, AF.resample(x16, 16000, 8000))
    # A tone far below the new Nyquist frequency survives the rate change.
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 440 * t)
    down = AF.resample(tone, 16000, 8000)
    expected = torch.sin(2 * torch.pi * 440 * torch.arange(8000) / 8000)
    assert (down[200:-200] - expected[200:-200]).abs().max() < 0.02
    low = build(root, train_rate=8000, eval_rate=16000)
    assert low.spec.seq_len == 16000 and low.splits["train"][0]["x"].shape == (8000, 1)
    assert low.splits["test"][0]["x"].shape == (16000, 1)


def test_cache_is_reused_and_never_half_read(copy, monkeypatch):
    reference = build(copy)
    caches = sorted((copy / "cache").glob("sc10_*.npy"))
    assert len(caches) == 3
    calls = []
    real = sc.read_wav
    monkeypatch.setattr(sc, "read_wav", lambda p: calls.append(p) or real(p))
    build(copy)
    assert calls == []
    (copy / "cache" / f".{caches[0].name}.x.tmp").write_bytes(b"\x93NUMPY partial")  # a crashed writer's leftover
    damage(caches[1])
    again = build(copy)
    assert 0 < len(calls) <= 10 * PER_WORD  # only the damaged split was decoded again
    for split in ("train", "val", "test"):
        assert torch.equal(again.splits[split][0]["x"], reference.splits[split][0]["x"])
    write_wav(copy / "yes" / "ffffffff_nohash_9.wav", np.zeros(16000, dtype=np.int16))
    assert len(build(copy).splits["train"]) == len(reference.splits["train"]) + 1  # new fingerprint


def test_unwritable_cache_dir_computes_in_memory(sc_data, tmp_path):
    (tmp_path / "not_a_dir").write_text("")  # the cache directory cannot be made
    reference = build(sc_data[0])
    with pytest.warns(UserWarning, match="cannot cache"):
        task = build(sc_data[0], cache_dir=str(tmp_path / "not_a_dir"))
    assert torch.equal(task.splits["val"][3]["x"], reference.splits["val"][3]["x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_dir"]


def test_download_extracts_the_archive(tmp_path, sc_data):
    archive = tmp_path / "speech_commands_v0.02.tar.gz"
    speech_commands_tarball(sc_data[0], archive)
    sc.download_speech_commands(tmp_path / "dl", url=archive.as_uri())
    assert len(build(tmp_path / "dl").splits["test"]) == 10
    assert [p.name for p in (tmp_path / "dl").iterdir() if p.name.startswith(".")] == []  # no staging left
    with pytest.raises(DataError, match="failed"):
        sc.download_speech_commands(tmp_path / "dl2", url=(tmp_path / "absent.tar.gz").as_uri())


def test_missing_root(tmp_path):
    with pytest.raises(DataError) as err:
        build(tmp_path / "absent")
    assert "speech_commands_v0.02.tar.gz" in str(err.value) and str(tmp_path / "absent") in str(err.value)


def test_missing_list_and_word_folder(copy):
    (copy / "testing_list.txt").unlink()
    with pytest.raises(DataError, match="testing_list.txt"):
        build(copy)
    (copy / "testing_list.txt").write_text("")
    shutil.rmtree(copy / "stop")
    with pytest.raises(DataError, match="stop"):
        build(copy)


def test_listed_file_missing(copy):
    rel = next(line for line in (copy / "validation_list.txt").read_text().split() if line.startswith("go/"))
    (copy / rel).unlink()
    with pytest.raises(DataError, match=rel):
        build(copy)


def test_truncated_wav_names_the_file(copy):
    path = next((copy / "left").glob("*.wav"))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=f"{path.name}.*truncated"):
        build(copy)
    path.write_bytes(b"RIFF")
    with pytest.raises(DataError, match=path.name):
        build(copy)


def test_wrong_wav_format(copy):
    path = next((copy / "up").glob("*.wav"))
    write_wav(path, np.zeros(8000, dtype=np.int16), rate=8000)
    with pytest.raises(DataError, match="8000 Hz"):
        build(copy)
    write_wav(path, np.zeros(20000, dtype=np.int16))
    with pytest.raises(DataError, match="20000 samples"):
        build(copy)


def test_bad_config(sc_data):
    with pytest.raises(ConfigError, match="task.eval_rate"):
        build(sc_data[0], eval_rate=0)
    with pytest.raises(ConfigError, match="task.train_rate"):
        build(sc_data[0], train_rate=16000.5)
    with pytest.raises(ConfigError, match="task.train_rate"):
        build(sc_data[0], train_rate=10**6)
