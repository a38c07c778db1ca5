"""PTB-XL: labels of the six sets, folds, standardisation, the on-disk cache, and bad data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

import tasks.ptbxl as ptbxl
from harness.errors import ConfigError, DataError
from harness.registry import TASKS
from harness.task import OBJECTIVES
from tests.fixtures import STATEMENTS, ptbxl_zip, write_ptbxl

N = 30
# wfdb 4.3 calls pandas with the deprecated inplace keyword; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")


@pytest.fixture(scope="module")
def ptbxl_data(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ptbxl")
    return root, write_ptbxl(root, n_records=N)


@pytest.fixture()
def copy(ptbxl_data, tmp_path) -> Path:
    """A private copy to damage."""
    shutil.copytree(ptbxl_data[0], tmp_path / "ptbxl", ignore=shutil.ignore_patterns("cache"))
    return tmp_path / "ptbxl"


def build(root: Path, **overrides):
    return TASKS.build(TASKS.config("ptbxl", **overrides), root)


def expected_labels(codes: dict, label_set: str) -> set[str]:
    """Independent derivation from the fixture's statement table."""
    out = set()
    for code in codes:
        diag, form, rhythm, cls, sub = STATEMENTS.get(code, (None,) * 5)
        if label_set == "all":
            out.add(code)
        elif label_set == "diagnostic" and diag == 1.0:
            out.add(code)
        elif label_set == "subdiagnostic" and diag == 1.0 and sub:
            out.add(sub)
        elif label_set == "superdiagnostic" and diag == 1.0 and cls:
            out.add(cls)
        elif label_set in ("form", "rhythm") and {"form": form, "rhythm": rhythm}[label_set] == 1.0:
            out.add(code)
    return out


@pytest.mark.parametrize("label_set", ["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"])
def test_label_sets_and_folds(ptbxl_data, label_set):
    root, written = ptbxl_data
    task = build(root, label_set=label_set)
    db = written["db"]
    labels = {ecg_id: expected_labels(eval(codes), label_set) for ecg_id, codes in db["scp_codes"].items()}
    kept = [ecg_id for ecg_id, lab in labels.items() if lab]
    classes = sorted(set().union(*labels.values()))
    assert task.info["classes"] == classes and task.spec.n_outputs == len(classes)
    folds = db["strat_fold"]
    for split, wanted in (("train", range(1, 9)), ("val", [9]), ("test", [10])):
        ids = [i for i in kept if folds[i] in wanted]
        ds = task.splits[split]
        assert len(ds) == len(ids)
        for pos in (0, len(ids) - 1):
            hot = ds[pos]["y"]
            assert {classes[j] for j in torch.nonzero(hot).flatten().tolist()} == labels[ids[pos]]
    if label_set == "superdiagnostic":
        assert set(classes) <= {"NORM", "MI", "STTC", "CD", "HYP"}


def test_signals_and_global_standardisation(ptbxl_data):
    root, written = ptbxl_data
    task = build(root, label_set="rhythm")  # every record has a rhythm label: nothing is dropped
    spec = task.spec
    assert (spec.input, spec.seq_len, spec.d_input, spec.metric, spec.output) == ("signal", 1000, 12, "auroc",
                                                                                  "pooled")
    assert task.objective is OBJECTIVES["auroc"]
    signals, folds = written["signals"][100], written["db"]["strat_fold"].to_numpy()
    train = signals[folds <= 8]
    mean, std = train.mean(), train.std()  # one global mean/std, population std (StandardScaler)
    test_rows = np.flatnonzero(folds == 10)
    x = task.splits["test"][1]["x"]
    assert x.shape == (1000, 12) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), (signals[test_rows[1]] - mean) / std, rtol=1e-4, atol=1e-4)
    batch = next(iter(DataLoader(task.splits["train"], batch_size=5)))
    assert batch["x"].shape == (5, 1000, 12) and batch["y"].shape == (5, task.spec.n_outputs)
    assert batch["y"].dtype == torch.float32
    loss = task.objective.loss(torch.zeros(5, task.spec.n_outputs), batch)
    assert loss.item() == pytest.approx(np.log(2), rel=1e-6)


def test_500_hz_records(tmp_path):
    written = write_ptbxl(tmp_path, n_records=10, rates=(500,))
    task = build(tmp_path, sampling_rate=500, label_set="rhythm")
    assert task.spec.seq_len == 5000 and task.splits["test"][0]["x"].shape == (5000, 12)
    assert len(task.splits["train"]) == 8 and len(written["signals"][500]) == 10
    with pytest.raises(DataError, match="records100"):  # only the 500 Hz records exist
        build(tmp_path, sampling_rate=100)


def test_cache_is_reused_and_keyed_by_the_inputs(copy, monkeypatch):
    first = build(copy, label_set="form")
    caches = sorted((copy / "cache").glob("ptbxl_signals_100hz_*.npy"))
    assert len(caches) == 1
    calls = []
    real_read = ptbxl.read_record
    monkeypatch.setattr(ptbxl, "read_record", lambda *a: calls.append(a) or real_read(*a))
    second = build(copy, label_set="form")
    build(copy, label_set="all")  # another label set: the same signals, read from the cache too
    assert calls == []
    assert torch.equal(first.splits["val"][0]["x"], second.splits["val"][0]["x"])
    # A changed record changes the fingerprint: everything is read again into a new cache file.
    name = pd.read_csv(copy / "ptbxl_database.csv", index_col="ecg_id")["filename_lr"].iloc[0]
    dat = copy / f"{name}.dat"
    dat.write_bytes(dat.read_bytes())
    build(copy, label_set="all")
    assert len(calls) == N and len(list((copy / "cache").glob("*.npy"))) == 2


def test_half_written_or_corrupt_cache_is_never_read(copy, monkeypatch):
    reference = build(copy, label_set="rhythm", cache_dir=str(copy / "other"))
    build(copy, label_set="rhythm")
    cache = next((copy / "cache").glob("*.npy"))
    (copy / "cache" / f".{cache.name}.abc.tmp").write_bytes(cache.read_bytes()[:1000])  # a crashed writer's leftover
    # And a damaged final file, through a new inode (truncating a file that is memory-mapped crashes its readers).
    (copy / "damaged").write_bytes(cache.read_bytes()[:5000])
    (copy / "damaged").replace(cache)
    calls = []
    real_read = ptbxl.read_record
    monkeypatch.setattr(ptbxl, "read_record", lambda *a: calls.append(a) or real_read(*a))
    task = build(copy, label_set="rhythm")
    assert len(calls) == N  # rebuilt from the records
    assert torch.equal(task.splits["test"][2]["x"], reference.splits["test"][2]["x"])
    assert np.load(cache).shape == (N, 1000, 12)


def test_missing_root(tmp_path):
    with pytest.raises(DataError) as err:
        build(tmp_path / "absent")
    assert "ptbxl_database.csv" in str(err.value) and "physionet.org" in str(err.value)


def test_versioned_subfolder_is_found(tmp_path, ptbxl_data):
    shutil.copytree(ptbxl_data[0], tmp_path / ptbxl.VERSION_DIR, ignore=shutil.ignore_patterns("cache"))
    assert len(build(tmp_path, label_set="rhythm").splits["test"]) == 3


def test_missing_record_names_the_file(copy):
    name = pd.read_csv(copy / "ptbxl_database.csv", index_col="ecg_id")["filename_lr"].iloc[4]
    (copy / f"{name}.dat").unlink()
    with pytest.raises(DataError, match=f"{Path(name).name}.dat"):
        build(copy)


def test_truncated_record_names_the_file(copy):
    name = pd.read_csv(copy / "ptbxl_database.csv", index_col="ecg_id")["filename_lr"].iloc[7]
    dat = copy / f"{name}.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"{Path(name).name}.*truncated"):
        build(copy)
    assert not list((copy / "cache").glob("*.npy"))  # nothing partial was cached


def test_csv_without_expected_columns(copy):
    db = pd.read_csv(copy / "ptbxl_database.csv")
    db.drop(columns=["strat_fold"]).to_csv(copy / "ptbxl_database.csv", index=False)
    with pytest.raises(DataError, match="ptbxl_database.csv.*strat_fold"):
        build(copy)
    db.drop(columns=["ecg_id"]).to_csv(copy / "ptbxl_database.csv", index=False)
    with pytest.raises(DataError, match="ecg_id"):
        build(copy)
    db.to_csv(copy / "ptbxl_database.csv", index=False)
    statements = pd.read_csv(copy / "scp_statements.csv", index_col=0)
    statements.drop(columns=["diagnostic_class"]).to_csv(copy / "scp_statements.csv")
    with pytest.raises(DataError, match="scp_statements.csv.*diagnostic_class"):
        build(copy)
    (copy / "scp_statements.csv").unlink()
    with pytest.raises(DataError, match="scp_statements.csv is missing"):
        build(copy)


def test_bad_config(ptbxl_data):
    root, _ = ptbxl_data
    with pytest.raises(ConfigError, match="task.label_set"):
        build(root, label_set="diagnostic_classes")
    with pytest.raises(ConfigError, match="task.sampling_rate"):
        build(root, sampling_rate=250)


def test_download_extracts_physionets_zip(tmp_path, ptbxl_data):
    archive = tmp_path / f"{ptbxl.VERSION_DIR}.zip"
    ptbxl_zip(ptbxl_data[0], archive, ptbxl.VERSION_DIR)
    ptbxl.download_ptbxl(tmp_path / "dl", url=archive.as_uri())
    assert len(build(tmp_path / "dl", label_set="rhythm").splits["train"]) == 24
    assert [p.name for p in (tmp_path / "dl").iterdir() if p.name.startswith(".")] == []  # no staging left
    with pytest.raises(DataError, match="failed") as err:
        ptbxl.download_ptbxl(tmp_path / "dl2", url=(tmp_path / "absent.zip").as_uri())
    assert "physionet.org" in str(err.value)  # says how to fetch it by hand
    # An archive without the database file is not PTB-XL: nothing of it is kept.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("not PTB-XL")
    ptbxl_zip(tmp_path / "other", tmp_path / "other.zip", "other")
    with pytest.raises(DataError, match="does not contain ptbxl_database.csv"):
        ptbxl.download_ptbxl(tmp_path / "dl3", url=(tmp_path / "other.zip").as_uri())
    assert list((tmp_path / "dl3").iterdir()) == []
