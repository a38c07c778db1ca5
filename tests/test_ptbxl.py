"""PTB-XL: labels of the six sets, folds, standardisation, the spec from the config, the on-disk cache and its
integrity, the data fingerprint, per-label AUROC, and bad data."""

from __future__ import annotations

import hashlib
import json
import math
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
from harness.task import MacroAUROC, multilabel_bce
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
    cfg = TASKS.config("ptbxl", label_set=label_set)
    task = TASKS.build(cfg, root)
    db = written["db"]
    labels = {ecg_id: expected_labels(eval(codes), label_set) for ecg_id, codes in db["scp_codes"].items()}
    kept = [ecg_id for ecg_id, lab in labels.items() if lab]
    classes = sorted(set().union(*labels.values()))
    assert task.info["classes"] == classes and task.spec.n_outputs == len(classes)
    # The benchmark's class counts (helme/ecg_ptbxl_benchmarking), which the fixture's statement table reproduces.
    assert len(classes) == {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19,
                            "rhythm": 12}[label_set]
    assert task.spec == ptbxl.task_spec(cfg)  # the spec a dry run computes without the data
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
    assert task.objective.loss is multilabel_bce
    metric = task.objective.metric()
    assert isinstance(metric, MacroAUROC) and metric.labels == task.info["classes"]
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


def test_a_database_with_other_classes_is_not_ptbxl(copy):
    db = pd.read_csv(copy / "ptbxl_database.csv", index_col="ecg_id")
    db["scp_codes"] = db["scp_codes"].str.replace("'TRIGU'", "'SR'")  # no record has the rhythm TRIGU any more
    db.to_csv(copy / "ptbxl_database.csv")
    assert len(build(copy, label_set="diagnostic").info["classes"]) == 44
    with pytest.raises(DataError, match="11 'rhythm' classes; PTB-XL 1.0.3 has 12") as err:
        build(copy, label_set="rhythm")
    assert "download it again from https://physionet.org" in str(err.value)


def test_macro_auroc_keeps_each_label_and_names_the_skipped():
    metric = MacroAUROC(["A", "B", "C"])
    y = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.4, 0.2, 0.3], [0.6, 0.8, 0.2]])
    metric.update(scores[:2], {"y": y[:2]})
    metric.update(scores[2:], {"y": y[2:]})
    details = metric.details()
    assert details["skipped"] == ["B", "C"]  # B has no positive, C no negative in the split
    assert details["per_label"] == {"A": 0.75, "B": None, "C": None}  # A: 3 of the 4 (pos, neg) pairs ordered
    assert metric.compute() == 0.75
    unnamed = MacroAUROC()
    unnamed.update(scores, {"y": y})
    assert unnamed.details()["skipped"] == ["1", "2"] and math.isclose(unnamed.compute(), 0.75)
    json.dumps(details)  # storable in the record as it is


def test_fingerprint_digests_the_files_read_once(copy, monkeypatch):
    first = build(copy, label_set="rhythm").info["fingerprint"]
    assert first["files"] == 2 + 2 * N and len(first["sha256"]) == 64 and "archive" not in first
    monkeypatch.setattr("tasks._fingerprint.file_sha256", lambda p: pytest.fail(f"{p} hashed again"))
    assert build(copy, label_set="form").info["fingerprint"] == first  # same files, from the cache
    monkeypatch.undo()
    name = pd.read_csv(copy / "ptbxl_database.csv", index_col="ecg_id")["filename_lr"].iloc[3]
    hea = copy / f"{name}.hea"
    hea.write_text(hea.read_text() + "# a comment\n")
    assert build(copy, label_set="rhythm").info["fingerprint"]["sha256"] != first["sha256"]


def test_database_that_is_not_utf8_names_file_and_line(copy):
    path = copy / "ptbxl_database.csv"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5] = lines[5].replace(b"fixture", b"fixtur\xe9", 1)  # a Latin-1 byte in the report column
    path.write_bytes(b"".join(lines))
    with pytest.raises(DataError, match=r"ptbxl_database.csv, line 6: byte 0xe9 is not UTF-8"):
        build(copy)


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
    with pytest.warns(UserWarning, match="has 5000 bytes"):
        task = build(copy, label_set="rhythm")
    assert len(calls) == N  # rebuilt from the records
    assert torch.equal(task.splits["test"][2]["x"], reference.splits["test"][2]["x"])
    assert np.load(cache).shape == (N, 1000, 12)
    # Altered in place with its size kept: found by its sha256 (the mtime changed), rebuilt.
    raw = bytearray(cache.read_bytes())
    raw[-4:] = b"\x00\x00\xc0\x7f"  # a NaN
    (copy / "damaged").write_bytes(bytes(raw))
    (copy / "damaged").replace(cache)
    with pytest.warns(UserWarning, match="sha256"):
        build(copy, label_set="rhythm")
    assert len(calls) == 2 * N and np.isfinite(np.load(cache)).all()
    # Without its sidecar (written last) a cache is an interrupted one: rebuilt.
    cache.with_suffix(".json").unlink()
    build(copy, label_set="rhythm")
    assert len(calls) == 3 * N


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
    task = build(tmp_path / "dl", label_set="rhythm")
    assert len(task.splits["train"]) == 24
    # PhysioNet publishes no checksum of the zip: its sha256 is recorded in the fingerprint, unchecked.
    assert ptbxl.ZIP_SHA256 is None and ptbxl.ZIP_URL.startswith("https://")
    assert task.info["fingerprint"]["archive"]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert task.info["fingerprint"]["archive"]["checked"] is None
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


def test_the_record_keeps_per_label_auroc_and_names_the_skipped_labels(ptbxl_data, tmp_path):
    """A run on the fixture (30 records: most of the 71 labels have one class in the test fold)."""
    from harness import runner
    from tests.helpers import compose_run

    cfg = compose_run(tmp_path, "task=ptbxl", f"task.root={ptbxl_data[0]}", "task.label_set=superdiagnostic",
                      "model=s4d", "model.d_model=8", "model.n_layers=1", "model.d_state=4", "train.epochs=1",
                      "train.batch_size=8")
    record = runner.run(cfg)
    details = record["metrics"]["test_details"]
    per_label = details["per_label"]
    assert len(per_label) == 5
    assert details["skipped"] == [k for k, v in per_label.items() if v is None]
    scored = [v for v in per_label.values() if v is not None]
    assert scored and record["metrics"]["test"] == pytest.approx(sum(scored) / len(scored))
