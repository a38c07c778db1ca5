"""Sweeps without a cluster: zipped points, validation before launch, dry runs, idempotent reruns, status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness import manifest, sweep
from harness.errors import ConfigError
from harness.registry import MODELS, TASKS
from harness.results import Store
from harness.sweeper import expand
from tests.helpers import TINY_LISTOPS, run_py


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def points(*args: str, zipped: list[list[str]] = ()) -> list[list[str]]:
    return expand(OverridesParser.create().parse_overrides(list(args)), zipped)


def test_keys_are_crossed_unless_zipped() -> None:
    crossed = points("model=s4,multires", "optim.lr=0.01,0.003", "seed=0")
    assert crossed == [["model=s4", "optim.lr=0.01", "seed=0"], ["model=s4", "optim.lr=0.003", "seed=0"],
                       ["model=multires", "optim.lr=0.01", "seed=0"], ["model=multires", "optim.lr=0.003", "seed=0"]]
    zipped = points("model=s4,multires", "seed=0,1", "optim.lr=0.01,0.003", zipped=[["model", "optim.lr"]])
    assert zipped == [["model=s4", "optim.lr=0.01", "seed=0"], ["model=s4", "optim.lr=0.01", "seed=1"],
                      ["model=multires", "optim.lr=0.003", "seed=0"], ["model=multires", "optim.lr=0.003", "seed=1"]]
    assert points("+experiment=a,b", "x=1,2", zipped=[["experiment", "x"]]) == [["+experiment=a", "x=1"],
                                                                                 ["+experiment=b", "x=2"]]
    with pytest.raises(ConfigError, match="equally many values"):
        points("model=s4,multires", "optim.lr=0.1,0.2,0.3", zipped=[["model", "optim.lr"]])
    with pytest.raises(ConfigError, match="does not set"):
        points("model=s4,multires", zipped=[["model", "optim.lr"]])


def test_dry_run_checks_every_point_and_trains_nothing(tmp_path: Path) -> None:
    out = run_py(tmp_path, "-m", "hydra/sweeper=seqbench", *TINY_LISTOPS, "model.d_model=choice(16,32)", "seed=0,1",
                 "dry_run=true")
    assert out.returncode == 0, out.stderr
    lines = json_lines(out.stdout)
    assert len(lines) == 4 and len({line["run_id"] for line in lines}) == 4
    assert {(line["seed"], next(o for o in line["overrides"] if "d_model" in o)) for line in lines} == {
        (s, f"model.d_model={d}") for s in (0, 1) for d in (16, 32)}
    # The count from fake tensors is the real model's.
    task = TASKS.build(TASKS.config("listops", n_train=64, n_val=16, n_test=16, min_length=10, max_length=40,
                                    max_depth=3, l_max=48), tmp_path / "data" / "listops")
    for line in lines:
        d_model = 16 if "model.d_model=16" in line["overrides"] else 32
        model = MODELS.build(MODELS.config("transformer", d_model=d_model, n_layers=1), task.spec)
        assert line["params"] == sum(p.numel() for p in model.parameters())
        memory = line["memory"]
        assert memory["params_bytes"] == 4 * line["params"] and memory["activations_bytes"] > 0
        assert memory["total_bytes"] > memory["activations_bytes"] and line["spec_from"] == "data"
    assert not (tmp_path / "results" / "store").exists() and not (tmp_path / "results" / "runs").exists()


def test_dry_run_of_one_run(tmp_path: Path) -> None:
    out = run_py(tmp_path, *TINY_LISTOPS, "model.d_model=16", "dry_run=true")
    assert out.returncode == 0, out.stderr
    [line] = json_lines(out.stdout)
    assert line["task"] == "listops" and line["model"] == "transformer" and "model.d_model=16" in line["overrides"]
    assert not (tmp_path / "results" / "store").exists()


def test_a_sweep_with_a_bad_point_is_refused_whole(tmp_path: Path) -> None:
    out = run_py(tmp_path, "-m", "hydra/sweeper=seqbench", *TINY_LISTOPS, "model.n_heads=2",
                 "model.d_model=choice(16,15)", "optim.optimizer=adamw,sgd")
    assert out.returncode == 2
    assert "sweep refused: 3 of 4 points cannot run, nothing was launched" in out.stderr
    assert "model.d_model=15" in out.stderr and "must divide" in out.stderr and "adamw or adam" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results" / "store").exists() and not (tmp_path / "results" / "runs").exists()


@pytest.mark.slow  # two sweeps and a report, each a process: 15 to 40 s
def test_rerunning_a_sweep_runs_only_what_is_missing_or_failed(tmp_path: Path) -> None:
    args = ["-m", "hydra/sweeper=seqbench", *TINY_LISTOPS, "model.d_model=16", "seed=0,1"]
    first = run_py(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    assert "0 already complete (skipped), 2 to run" in first.stdout
    store = Store(tmp_path / "results" / "store")
    records = {r["seed"]: r for r in store.records()}
    assert {r["status"] for r in records.values()} == {"complete"} and set(records) == {0, 1}
    # Seed 1 failed (as the runner records it); seed 0 stays complete and must not run again.
    store.write({**records[1], "status": "failed", "error": "boom"})
    kept = store.path(records[0]["run_id"]).stat().st_mtime_ns
    second = run_py(tmp_path, *args)
    assert second.returncode == 0, second.stderr
    assert "1 already complete (skipped), 1 to run" in second.stdout
    assert store.path(records[0]["run_id"]).stat().st_mtime_ns == kept
    assert store.get(records[1]["run_id"])["status"] == "complete"
    # The manifest of the second sweep names both points; status reads the store.
    sweep_dir = manifest.find_sweep(tmp_path / "results")
    rows = sweep.sweep_status(sweep_dir)
    assert sorted(r["run_id"] for r in rows) == sorted(r["run_id"] for r in records.values())
    assert {r["state"] for r in rows} == {"done"}
    assert sweep.main(["collect", str(sweep_dir), "--report", str(tmp_path / "report")]) == 0
    assert "| transformer |" in (tmp_path / "report" / "leaderboard.md").read_text()


def test_status_takes_the_store_first_then_the_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path / "store")
    base = {"kind": "train", "task": "toy", "model": "m", "seed": 0, "config": {}}
    store.write({**base, "run_id": "a", "status": "complete"})
    store.write({**base, "run_id": "b", "status": "preempted"})  # requeued: the queue says what it is now
    store.write({**base, "run_id": "c", "status": "oom"})
    names = ["a", "b", "c", "d", "e", "f"]
    entries = [{"run_id": n, "overrides": [f"seed={i}"], "store": str(store.root), "job_num": i, "sweep": "s"}
               for i, n in enumerate(names)]
    (tmp_path / manifest.MANIFEST).write_text(json.dumps({"points": entries}))
    (tmp_path / manifest.JOBS).write_text(json.dumps({str(i): f"7_{i}" for i in range(6)}))
    queue = {"7_0": "RUNNING", "7_1": "PENDING", "7_3": "RUNNING", "7_4": "REQUEUED"}
    monkeypatch.setattr(sweep, "squeue", lambda: queue)
    states = {r["run_id"]: r["state"] for r in sweep.sweep_status(tmp_path)}
    assert states == {"a": "done", "b": "queued", "c": "oom", "d": "running", "e": "queued", "f": "missing"}
    monkeypatch.setattr(sweep, "squeue", lambda: None)  # no squeue here: the store alone
    states = {r["run_id"]: r["state"] for r in sweep.sweep_status(tmp_path)}
    assert states == {"a": "done", "b": "preempted", "c": "oom", "d": "missing", "e": "missing", "f": "missing"}
    assert sweep.main(["status", str(tmp_path)]) == 0
    assert sweep.main(["collect", str(tmp_path)]) == 1  # not everything is done
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        sweep.main(["status", str(tmp_path / "nowhere")])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (f"seqbench: error: {tmp_path / 'nowhere'} is not a seqbench sweep directory "
                                       f"(no {manifest.MANIFEST}); sweeps run with hydra/sweeper=seqbench write one\n")
