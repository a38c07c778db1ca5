"""Speech Commands: the 35 words and SC10, official split lists, padding, standardisation, rate change (S4's
subsampling and the sinc option), the spec from the config, cache integrity, fingerprint, downloads and bad data."""

from __future__ import annotations

import hashlib
import json
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
from tests.fixtures import SC_ALL_WORDS, SC_WORDS, speech_commands_tarball, write_speech_commands, write_wav

PER_WORD = 4


@pytest.fixture(scope="module")
def sc_data(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("speech_commands")
    return root, write_speech_commands(root, n_per_word=PER_WORD)


@pytest.fixture()
def copy(sc_data, tmp_path) -> Path:
    shutil.copytree(sc_data[0], tmp_path / "sc", ignore=shutil.ignore_patterns("cache"))
    return tmp_path / "sc"


def damage(path: Path, data: bytes) -> None:
    """Replace a cache file by `data`. Through a new inode: the tasks built above still map the old one, and
    changing a mapped file in place would crash them with SIGBUS (the loaders never write in place)."""
    path.with_name("damaged").write_bytes(data)
    path.with_name("damaged").replace(path)


def build(root: Path, **overrides):
    return TASKS.build(TASKS.config("speech_commands", **overrides), root)


def padded(samples: np.ndarray) -> np.ndarray:
    out = np.zeros(16000)
    out[:len(samples)] = samples / 32768.0
    return out


@pytest.mark.parametrize(("all_classes", "words"), [(True, SC_ALL_WORDS), (False, SC_WORDS)])
def test_official_lists_padding_and_standardisation(sc_data, all_classes, words):
    root, written = sc_data
    cfg = TASKS.config("speech_commands", all_classes=all_classes)
    task = TASKS.build(cfg, root)
    spec = task.spec
    assert (spec.input, spec.seq_len, spec.d_input, spec.n_outputs, spec.metric) == ("signal", 16000, 1, len(words),
                                                                                      "accuracy")
    assert spec == sc.task_spec(cfg)  # the spec a dry run computes without the data
    assert task.info["classes"] == words
    n = len(words)
    assert {k: len(v) for k, v in task.splits.items()} == {"train": n * (PER_WORD - 2), "val": n, "test": n}
    chosen = {s: sorted(((rel, words.index(w), x) for rel, w, x in items if w in words),
                        key=lambda r: (r[1], r[0].split("/")[1]))  # by word index, then file name
              for s, items in written.items()}
    train = np.stack([padded(x) for _, _, x in chosen["train"]])
    mean, std = train.mean(), train.std()  # one mean/std over the training split, padding included
    for split in ("train", "val", "test"):
        for pos in (0, len(chosen[split]) - 1):
            rel, label, samples = chosen[split][pos]
            item = task.splits[split][pos]
            assert int(item["y"]) == label
            np.testing.assert_allclose(item["x"][:, 0].numpy(), (padded(samples) - mean) / std, rtol=1e-4, atol=1e-5)
    short = [i for i, (_, _, x) in enumerate(chosen["train"]) if len(x) < 16000]
    assert short  # the fixture has short clips: their tails are zero before standardisation
    x = task.splits["train"][short[0]]["x"][:, 0]
    torch.testing.assert_close(x[-100:], torch.full((100,), -mean / std, dtype=torch.float32))
    batch = next(iter(DataLoader(task.splits["val"], batch_size=4)))
    assert batch["x"].shape == (4, 16000, 1) and batch["x"].dtype == torch.float32 and batch["y"].dtype == torch.int64


def test_the_35_words_are_the_archive_s_and_s4_s_default():
    assert list(sc.ALL_WORDS) == SC_ALL_WORDS and len(sc.ALL_WORDS) == 35
    assert sc.SpeechCommandsConfig().all_classes and sc.task_spec(sc.SpeechCommandsConfig()).n_outputs == 35


def test_without_normalisation(sc_data):
    root, written = sc_data
    task = build(root, normalize=False, all_classes=False)
    rel, word, samples = sorted((r for r in written["test"] if r[1] in SC_WORDS), key=lambda r: SC_WORDS.index(r[1]))[3]
    np.testing.assert_allclose(task.splits["test"][3]["x"][:, 0].numpy(), padded(samples), atol=1e-7)


def test_zero_shot_half_rate_takes_every_second_sample_as_s4(sc_data):
    root, _ = sc_data
    full = build(root)
    half = build(root, eval_rate=8000)
    assert half.spec.seq_len == 16000 and half.info["rates"] == {"train": 16000, "val": 16000, "test": 8000}
    assert half.spec == sc.task_spec(TASKS.config("speech_commands", eval_rate=8000))
    assert torch.equal(half.splits["val"][0]["x"], full.splits["val"][0]["x"])
    x16, x8 = full.splits["test"][2]["x"][:, 0], half.splits["test"][2]["x"][:, 0]
    assert x8.shape == (8000,) and torch.equal(x8, x16[::2])
    low = build(root, train_rate=8000, eval_rate=16000)
    assert low.spec.seq_len == 16000 and low.splits["train"][0]["x"].shape == (8000, 1)
    assert low.splits["test"][0]["x"].shape == (16000, 1)
    with pytest.raises(ConfigError, match="task.eval_rate=12000.*task.resample=sinc"):
        build(root, eval_rate=12000)


def test_sinc_resampling_is_an_option(sc_data):
    root, _ = sc_data
    full = build(root)
    half = build(root, eval_rate=8000, resample="sinc")
    x16, x8 = full.splits["test"][2]["x"][:, 0], half.splits["test"][2]["x"][:, 0]
    torch.testing.assert_close(x8, AF.resample(x16, 16000, 8000))
    odd = build(root, eval_rate=12000, resample="sinc")
    assert odd.spec.seq_len == 16000 and odd.splits["test"][0]["x"].shape == (12000, 1)
    # A tone far below the new Nyquist frequency survives the rate change.
    t = torch.arange(16000) / 16000
    down = AF.resample(torch.sin(2 * torch.pi * 440 * t), 16000, 8000)
    expected = torch.sin(2 * torch.pi * 440 * torch.arange(8000) / 8000)
    assert (down[200:-200] - expected[200:-200]).abs().max() < 0.02


def test_cache_is_reused_and_never_half_read_or_damaged(copy, monkeypatch):
    reference = build(copy)
    caches = sorted((copy / "cache").glob("sc35_*.npy"))
    assert len(caches) == 3 and all(c.with_suffix(".json").is_file() for c in caches)
    calls = []
    real = sc.read_wav
    monkeypatch.setattr(sc, "read_wav", lambda p: calls.append(p) or real(p))
    build(copy)
    assert calls == []
    (copy / "cache" / f".{caches[0].name}.x.tmp").write_bytes(b"\x93NUMPY partial")  # a crashed writer's leftover
    damage(caches[1], caches[1].read_bytes()[:3000])  # cut
    with pytest.warns(UserWarning, match=f"{caches[1].name} has 3000 bytes"):
        again = build(copy)
    assert 0 < len(calls) <= 35 * PER_WORD  # only the damaged split was decoded again
    for split in ("train", "val", "test"):
        assert torch.equal(again.splits[split][0]["x"], reference.splits[split][0]["x"])
    calls.clear()
    raw = bytearray(caches[2].read_bytes())
    raw[-1] ^= 0xFF  # same size, other content
    damage(caches[2], bytes(raw))
    with pytest.warns(UserWarning, match="sha256"):
        build(copy)
    assert len(calls) == 35  # the test split (one clip per word), decoded again
    calls.clear()
    caches[0].with_suffix(".json").unlink()  # the sidecar is written last: without it the cache never completed
    build(copy)
    assert len(calls) == 35
    write_wav(copy / "yes" / "ffffffff_nohash_9.wav", np.zeros(16000, dtype=np.int16))
    assert len(build(copy).splits["train"]) == len(reference.splits["train"]) + 1  # new key


def test_fingerprint_digests_the_files_read_once(copy, monkeypatch):
    first = build(copy).info["fingerprint"]
    assert first["files"] == 2 + 35 * PER_WORD and len(first["sha256"]) == 64 and "archive" not in first
    monkeypatch.setattr("tasks._fingerprint.file_sha256", lambda p: pytest.fail(f"{p} hashed again"))
    assert build(copy).info["fingerprint"] == first  # from the cache in the cache directory
    monkeypatch.undo()
    assert build(copy, all_classes=False).info["fingerprint"]["files"] == 2 + 10 * PER_WORD
    path = next((copy / "no").glob("*.wav"))
    write_wav(path, np.ones(16000, dtype=np.int16))
    assert build(copy).info["fingerprint"]["sha256"] != first["sha256"]


def test_unwritable_cache_dir_computes_in_memory(sc_data, tmp_path):
    (tmp_path / "not_a_dir").write_text("")  # the cache directory cannot be made
    reference = build(sc_data[0])
    with pytest.warns(UserWarning, match="cannot cache"):
        task = build(sc_data[0], cache_dir=str(tmp_path / "not_a_dir"))
    assert torch.equal(task.splits["val"][3]["x"], reference.splits["val"][3]["x"])
    assert task.info["fingerprint"] == reference.info["fingerprint"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_dir"]


def test_download_checks_the_archive_and_records_it(tmp_path, sc_data):
    archive = tmp_path / "speech_commands_v0.02.tar.gz"
    speech_commands_tarball(sc_data[0], archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert sc.URL.startswith("https://") and len(sc.SHA256) == 64
    with pytest.raises(DataError, match="sha256"):
        sc.download_speech_commands(tmp_path / "bad", url=archive.as_uri())  # not the published archive
    assert list((tmp_path / "bad").iterdir()) == []
    sc.download_speech_commands(tmp_path / "dl", url=archive.as_uri(), checksum=digest)
    task = build(tmp_path / "dl")
    assert len(task.splits["test"]) == 35
    assert task.info["fingerprint"]["archive"] == {"url": archive.as_uri(), "sha256": digest,
                                                   "bytes": archive.stat().st_size, "checked": f"sha256:{digest}"}
    assert json.loads((tmp_path / "dl" / "download.json").read_text())["sha256"] == digest
    assert [p.name for p in (tmp_path / "dl").iterdir() if p.name.startswith(".")] == []  # no staging left
    with pytest.raises(DataError, match="failed"):
        sc.download_speech_commands(tmp_path / "dl2", url=(tmp_path / "absent.tar.gz").as_uri())
    with pytest.raises(DataError, match="only https://"):
        sc.download_speech_commands(tmp_path / "dl3", url="http://download.tensorflow.org/x.tar.gz")


def test_missing_root(tmp_path):
    with pytest.raises(DataError) as err:
        build(tmp_path / "absent")
    assert "speech_commands_v0.02.tar.gz" in str(err.value) and str(tmp_path / "absent") in str(err.value)


def test_missing_list_and_word_folder(copy):
    (copy / "testing_list.txt").unlink()
    with pytest.raises(DataError, match="testing_list.txt"):
        build(copy)
    (copy / "testing_list.txt").write_text("")
    with pytest.raises(DataError, match="test split has no clip of 'backward'"):
        build(copy)
    shutil.rmtree(copy / "visual")  # v0.01 had no 'visual': the 35-word task refuses it, SC10 does not need it
    with pytest.raises(DataError, match="visual is missing"):
        build(copy)


def test_list_that_is_not_utf8_names_file_and_line(copy):
    path = copy / "validation_list.txt"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + b"yes/\xe9t\xe9.wav\n" + b"".join(lines[2:]))  # Latin-1, not UTF-8
    with pytest.raises(DataError, match=r"validation_list.txt, line 3: byte 0xe9 is not UTF-8"):
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
        build(sc_data[0], train_rate=10**6, resample="sinc")
    with pytest.raises(ConfigError, match="task.resample"):
        build(sc_data[0], resample="linear")
