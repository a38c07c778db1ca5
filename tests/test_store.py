"""The results store: atomic records, concurrent writers, unreadable files skipped, complete records kept, strict
JSON; the atomic write itself (umask, fsync, full disk, stale temporary files) and the run lock."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import stat
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest

from harness import files
from harness.errors import UserError
from harness.files import HOST, HOST_TAG, DiskFull, RunLock, atomic_write, remove_stale_temps
from harness.identity import run_id, semantic_config
from harness.results import Store, strict_json


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


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_write_honours_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """As any created file does (temporary files are private at first): with umask 002 a group-shared results or data
    directory stays writable by the group."""
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.txt", "x")
        atomic_write(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(old)
    assert {f.name: f.stat().st_mode & 0o777 for f in tmp_path.iterdir()} == {"a.txt": mode, "b.bin": mode}


def test_atomic_write_flushes_the_file_before_the_rename_and_the_directory_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = []
    fsync, replace = os.fsync, os.replace

    def noting_fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        fsync(fd)

    def noting_replace(src: Any, dst: Any) -> None:
        synced.append("rename")
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", noting_fsync)
    monkeypatch.setattr(os, "replace", noting_replace)
    atomic_write(tmp_path / "r.json", "{}")
    assert synced == ["file", "rename", "dir"]


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    store.write({"run_id": "r", "status": "preempted", "n": 1})
    before = store.path("r").read_bytes()

    def full(fd: int) -> NoReturn:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # where NFS reports it, after the data was handed over
    with pytest.raises(DiskFull) as error:
        store.write({"run_id": "r", "status": "preempted", "n": 2})
    assert isinstance(error.value, UserError)  # run.py prints it as one line and exits with status 2
    message = str(error.value)
    assert "\n" not in message and str(store.path("r")) in message and "no space left" in message
    assert store.path("r").read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]  # no temporary file left


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    """A killed writer's temporary file goes when its pid is dead on this host or it is older than the limit; a live
    writer's and another host's recent ones stay."""
    dead = mp.get_context("spawn").Process(target=int)
    dead.start()
    dead.join()
    names = {"dead": f".r.json.{HOST_TAG}-{dead.pid}.abc.tmp", "alive": f".r.json.{HOST_TAG}-{os.getpid()}.abc.tmp",
             "other_host": f".r.json.0000ffff-{dead.pid}.abc.tmp", "foreign": ".r.json.abc.tmp",
             "old": f".r.json.0000ffff-{os.getpid()}.abc.tmp"}
    for name in names.values():
        (tmp_path / name).write_text("{")
    os.utime(tmp_path / names["old"], (time.time() - 120, time.time() - 120))
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["old"]])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["alive"], names["other_host"], names["foreign"]])
    assert len(remove_stale_temps(tmp_path, older_than_s=0)) == 3  # the only writer (a run's lock holder) clears all


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
    Store(tmp_path).write({"run_id": "x", "status": "diverged"})  # a status of its own


def test_a_complete_record_is_never_downgraded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = Store(tmp_path)
    store.write({"run_id": "r", "status": "complete", "val": 1.0})
    for status in ("failed", "oom", "preempted", "diverged"):
        assert store.write({"run_id": "r", "status": status}) is None
        assert store.get("r")["status"] == "complete"
    assert "is complete: not replacing it with a diverged record" in capsys.readouterr().err
    store.write({"run_id": "r", "status": "complete", "val": 2.0})  # a complete one replaces it
    assert store.get("r")["val"] == 2.0
    Store(tmp_path, force=True).write({"run_id": "r", "status": "preempted"})  # anything does in a forced rerun
    assert store.get("r")["status"] == "preempted"


def test_records_are_strict_json(tmp_path: Path) -> None:
    """Standard JSON has no NaN: a diverged loss is written as null, which every JSON reader (and the store) reads."""
    assert strict_json({"a": float("nan"), "b": [float("inf"), 1.5, (2, -float("inf"))]}) == (
        '{"a": null, "b": [null, 1.5, [2, null]]}')
    store = Store(tmp_path)
    store.write({"run_id": "r", "status": "diverged", "history": [{"train_loss": float("nan"), "val": 0.5}]})

    def refuse(name: str) -> NoReturn:
        raise AssertionError(f"{name} in a record")

    record = json.loads(store.path("r").read_text(), parse_constant=refuse)
    assert record["history"] == [{"train_loss": None, "val": 0.5}] and store.get("r") == record


def _hold(path: str, ready: Any, done: Any) -> None:
    lock = RunLock(Path(path))
    assert lock.acquire()
    ready.set()
    done.wait(60)
    lock.release()


def test_the_run_lock_is_exclusive_and_says_who_holds_it(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "run.lock"), ready, done))
    holder.start()
    try:
        assert ready.wait(60)
        second = RunLock(tmp_path / "run.lock")
        assert not second.acquire()
        assert second.holder["pid"] == holder.pid and second.holder["host"] == HOST
        assert f"pid {holder.pid} on {HOST} since " in second.holder_text()
        second.release()  # not its lock: left alone
        assert (tmp_path / "run.lock").exists()
    finally:
        done.set()
        holder.join(60)
    assert not (tmp_path / "run.lock").exists()  # released by its holder
    assert second.acquire()
    second.release()


def test_a_lock_whose_holder_is_gone_is_taken_over(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dead = mp.get_context("spawn").Process(target=int)
    dead.start()
    dead.join()
    path = tmp_path / "run.lock"
    path.write_text(json.dumps({"host": HOST, "pid": dead.pid, "started": "then", "token": "t"}))
    lock = RunLock(path)
    assert lock.acquire()
    assert f"taking over the lock {path}: its holder, pid {dead.pid} on this host, is no longer running" in (
        capsys.readouterr().err)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()

    # On another host, alive as far as this one can tell: held until it has not been refreshed for a long time.
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "then", "token": "t"}))
    assert not RunLock(path).acquire()
    old = time.time() - RunLock.STALE_AFTER_S - 60
    os.utime(path, (old, old))
    assert RunLock(path).acquire()
    assert "has not refreshed it for 2.0 h" in capsys.readouterr().err


def test_the_holder_refreshes_its_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = RunLock(tmp_path / "run.lock")
    assert lock.acquire()
    old = time.time() - 3600
    os.utime(lock.path, (old, old))
    lock.refresh()  # throttled: just acquired
    assert lock.path.stat().st_mtime == pytest.approx(old)
    monkeypatch.setattr(RunLock, "REFRESH_EVERY_S", 0.0)
    lock.refresh()
    assert lock.path.stat().st_mtime > old + 3000
    assert files.pid_alive(os.getpid())


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
