"""The results store: atomic records, concurrent writers, unreadable files skipped; the atomic write itself."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from harness.files import atomic_write
from harness.identity import run_id, semantic_config
from harness.results import Store


def _writer(root: str, worker: int, n: int) -> None:
    store = Store(root)
    for i in range(n):
        # Half the ids are shared by every worker: the same record rewritten concurrently.
        rid = f"shared-{i % 5}" if i % 2 else f"w{worker}-{i}"
        store.write({"run_id": rid, "status": "complete", "worker": worker, "i": i, "payload": "x" * 20_000})


def test_concurrent_writers_leave_no_torn_or_lost_record(tmp_path: Path) -> None:
    workers, n = 4, 40
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    files = sorted(tmp_path.glob("*.json"))
    expected = {f"w{w}-{i}" for w in range(workers) for i in range(0, n, 2)} | {f"shared-{k}" for k in range(5)}
    assert {f.stem for f in files} == expected
    for f in files:
        record = json.loads(f.read_text())  # every file parses whole
        assert record["payload"] == "x" * 20_000
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"
    assert len(list(Store(tmp_path).records())) == len(expected)


def test_half_written_and_foreign_files_are_not_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = Store(tmp_path)
    store.write({"run_id": "good", "status": "complete"})
    (tmp_path / "torn.json").write_text('{"run_id": "torn", "status": "compl')
    (tmp_path / "other.json").write_text('{"hello": 1}')
    (tmp_path / ".good.json.abc.tmp").write_text("{}")
    assert [r["run_id"] for r in store.records()] == ["good"]
    err = capsys.readouterr().err
    assert "torn.json" in err and "other.json" in err
    assert store.get("torn") is None
    assert store.is_complete("good") and not store.is_complete("torn")


def test_atomic_write_of_text_bytes_and_a_writer(tmp_path: Path) -> None:
    import torch  # here: the writer processes above import this module, and need no torch

    atomic_write(tmp_path / "a" / "b.txt", "été\r\n")  # parents made; UTF-8; line ends kept as given
    assert (tmp_path / "a" / "b.txt").read_bytes() == "été\r\n".encode()
    atomic_write(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "d.pt", lambda tmp: torch.save({"w": torch.arange(3)}, tmp))
    assert torch.equal(torch.load(tmp_path / "d.pt")["w"], torch.arange(3))
    atomic_write(tmp_path / "empty", "")
    assert (tmp_path / "empty").read_bytes() == b""
    # Readable by everyone, as a results or data directory is shared (temporary files are private at first).
    assert {f.name: f.stat().st_mode & 0o777 for f in tmp_path.rglob("*") if f.is_file()} == {
        "b.txt": 0o644, "c.bin": 0o644, "d.pt": 0o644, "empty": 0o644}


def test_a_failed_atomic_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    atomic_write(path, "old")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text("half of the new")
        raise KeyboardInterrupt  # also an interrupt, not only an error

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["record.json"]  # no temporary file left


def test_status_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status"):
        Store(tmp_path).write({"run_id": "x", "status": "done"})


def test_run_id_ignores_paths_and_sweep_but_not_semantics() -> None:
    base = {"task": {"name": "listops", "n_train": 10}, "model": {"name": "transformer", "d_model": 8},
            "seed": 0, "paths": {"root": "a"}, "sweep": "s1", "train": {"epochs": 2, "progress": True}}
    moved = json.loads(json.dumps(base))
    moved["paths"]["root"] = "elsewhere"
    moved["sweep"] = "s2"
    moved["train"]["progress"] = False
    assert run_id(base) == run_id(moved)
    assert "paths" not in semantic_config(base) and "progress" not in semantic_config(base)["train"]
    other_seed = {**base, "seed": 1}
    assert run_id(other_seed) != run_id(base)
    assert run_id(base).startswith("listops-transformer-")
