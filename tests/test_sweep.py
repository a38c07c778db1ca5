"""Sweeps without a cluster: zipped points, options of swept models, validation before launch, dry runs (of every
preset), idempotent reruns, status."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness.errors import ConfigError
from harness.jobs import dispatch
from harness.registry import MODELS, TASKS
from harness.results import Store
from sweeps import manifest, status
from sweeps.sweeper import as_written, check_open_keys, expand, open_group_keys, settle
from tasks.listops import task_spec as listops_spec
from tests.helpers import ROOT, TINY_LISTOPS, compose_run, run_py


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


def test_options_of_swept_models_are_set_where_each_model_has_them(tmp_path: Path) -> None:
    # run.py hands a multirun's `model.x=v` on as `++model.x=v`: Hydra composes the sweep's primary config (model
    # null) with it. Plain overrides, flags and other keys stay as they are.
    argv = ["run.py", "-m", "model=s4,multires", "model.d_model=16", "task.l_max=48", "+model.x=1", "seed=0,1"]
    assert open_group_keys(argv) == ["run.py", "-m", "model=s4,multires", "++model.d_model=16", "++task.l_max=48",
                                     "+model.x=1", "seed=0,1"]
    overrides = ["task=listops", "model=s4d", "++model.d_model=16", "++model.kernel_size=4", "seed=0"]
    cfg = compose_run(tmp_path, *overrides)
    assert settle(cfg, overrides) == (["task=listops", "model=s4d", "model.d_model=16", "seed=0"],
                                      {"model.d_model": ("s4d", True), "model.kernel_size": ("s4d", False)})
    check_open_keys({"model.d_model": {"s4d": True, "multires": True}}, "refuse")
    with pytest.raises(ConfigError, match=r"model.kernel_size is an option of multires but not of s4d, transformer: "
                                          r"add hydra.sweeper.partial_keys=skip"):
        check_open_keys({"model.kernel_size": {"s4d": False, "multires": True, "transformer": False}}, "refuse")
    # Messages show the keys as the user wrote them: without the `++` added here, with one the user typed.
    assert as_written(["++model.d_model=16", "++task.l_max=48", "++model.x=1", "seed=0"]) == (
        "model.d_model=16 task.l_max=48 ++model.x=1 seed=0")
    check_open_keys({"model.kernel_size": {"s4d": False, "multires": True}}, "skip")
    with pytest.raises(ConfigError, match=r"model.n_head is an option of none of the swept models \(s4d, "
                                          r"transformer\) \(did you mean model.n_heads\?\)"):
        check_open_keys({"model.n_head": {"s4d": False, "transformer": False}}, "skip")


def test_a_sweep_over_three_models_with_shared_and_specific_options(tmp_path: Path) -> None:
    """The command of issue 14.1, as a dry run: a shared option reaches every model, a model's own only that one."""
    tiny = [a for a in TINY_LISTOPS if not a.startswith("model")]
    out = run_py(tmp_path, "-m", *tiny, "model=transformer,s4d,multires", "model.n_layers=1", "model.d_model=16",
                 "model.dropout=0.1", "model.kernel_size=4", "hydra.sweeper.partial_keys=skip", "dry_run=true")
    assert out.returncode == 0, out.stderr
    lines = {line["model"]: line for line in json_lines(out.stdout)}
    assert set(lines) == {"transformer", "s4d", "multires"}
    for name, line in lines.items():
        assert {"model.d_model=16", "model.dropout=0.1"} <= set(line["overrides"])
        assert ("model.kernel_size=4" in line["overrides"]) == (name == "multires")
        assert not any(o.startswith("++") for o in line["overrides"])
        built = MODELS.build(MODELS.config(name, **{"d_model": 16, "dropout": 0.1, "n_layers": 1,
                                                    **({"kernel_size": 4} if name == "multires" else {})}),
                             listops_spec(TASKS.config("listops", l_max=48, min_length=10, max_length=40, max_depth=3)))
        assert line["params"] == sum(p.numel() for p in built.parameters())
    assert "model.kernel_size set for multires only (not an option of s4d, transformer)" in out.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / "results" / "store").exists()


def test_dry_run_checks_every_point_and_trains_nothing(tmp_path: Path) -> None:
    out = run_py(tmp_path, "-m", "hydra/sweeper=seqbench", *TINY_LISTOPS, "model.d_model=choice(16,32)", "seed=0,1",
                 "dry_run=true")
    assert out.returncode == 0, out.stderr
    lines = json_lines(out.stdout)
    assert len(lines) == 4 and len({line["run_id"] for line in lines}) == 4
    assert {(line["seed"], next(o for o in line["overrides"] if "d_model" in o)) for line in lines} == {
        (s, f"model.d_model={d}") for s in (0, 1) for d in (16, 32)}
    assert not (tmp_path / "data").exists()  # the spec comes from the config: no data read or generated
    # The count from fake tensors is the real model's.
    task = TASKS.build(TASKS.config("listops", n_train=64, n_val=16, n_test=16, min_length=10, max_length=40,
                                    max_depth=3, l_max=48), tmp_path / "data" / "listops")
    for line in lines:
        d_model = 16 if "model.d_model=16" in line["overrides"] else 32
        model = MODELS.build(MODELS.config("transformer", d_model=d_model, n_layers=1), task.spec)
        assert line["params"] == sum(p.numel() for p in model.parameters())
        memory = line["memory"]
        assert memory["params_bytes"] == 4 * line["params"] and memory["activations_bytes"] > 0
        assert memory["total_bytes"] > memory["activations_bytes"] and memory["built_on"] == "fake"
    assert not (tmp_path / "results" / "store").exists() and not (tmp_path / "results" / "runs").exists()


def test_dry_run_of_one_run(tmp_path: Path) -> None:
    out = run_py(tmp_path, *TINY_LISTOPS, "model.d_model=16", "dry_run=true")
    assert out.returncode == 0, out.stderr
    [line] = json_lines(out.stdout)
    assert line["task"] == "listops" and line["model"] == "transformer" and "model.d_model=16" in line["overrides"]
    assert not (tmp_path / "results" / "store").exists()


def test_a_dry_run_estimates_activations_only_when_asked(tmp_path: Path) -> None:
    """`dry_run=true` builds the model on the CPU (no activation estimate, so no total); `dry_run=memory` on fake
    tensors, with the estimate. Both count the same parameters."""
    lines = {}
    for value in ("true", "memory"):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            dispatch(compose_run(tmp_path, *TINY_LISTOPS, "model.d_model=16", f"dry_run={value}"))
        [lines[value]] = json_lines(printed.getvalue())
    quick, full = lines["true"]["memory"], lines["memory"]["memory"]
    assert lines["true"]["params"] == lines["memory"]["params"] > 0
    assert quick["built_on"] == "cpu" and quick["activations_bytes"] is None and quick["total_bytes"] is None
    assert "dry_run=memory" in quick["note"]
    assert full["built_on"] == "fake" and full["total_bytes"] > full["activations_bytes"] > 0


def test_a_sweep_with_a_bad_point_is_refused_whole(tmp_path: Path) -> None:
    out = run_py(tmp_path, "-m", "hydra/sweeper=seqbench", *TINY_LISTOPS, "model.n_heads=2",
                 "model.d_model=choice(16,15)", "optim.optimizer=adamw,sgd")
    assert out.returncode == 2
    assert "sweep refused: 3 of 4 points cannot run, nothing was launched" in out.stderr
    assert "model.d_model=15" in out.stderr and "must divide" in out.stderr and "adamw or adam" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "results" / "store").exists() and not (tmp_path / "results" / "runs").exists()


def test_bad_values_refuse_the_whole_sweep_naming_point_and_key(tmp_path: Path) -> None:
    out = run_py(tmp_path, "-m", *TINY_LISTOPS, "model.d_model=32,0", "train.batch_size=8,0", "train.epochs=1,-1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "sweep refused: 7 of 8 points cannot run, nothing was launched" in out.stderr
    # One line per bad point: its overrides, then the first bad key and value.
    bad = {frozenset(head.split()[1:]): error for head, _, error in
           (line.partition(": ConfigError: ") for line in out.stderr.splitlines() if line.startswith("  #"))}
    assert len(bad) == 7
    [only_d_model] = [error for point, error in bad.items()
                      if {"model.d_model=0", "train.batch_size=8", "train.epochs=1"} <= point]
    assert only_d_model == "model.d_model=0 must be an integer > 0"
    assert {error.split(" must")[0] for error in bad.values()} == {"model.d_model=0", "train.batch_size=0",
                                                                  "train.epochs=-1"}
    assert not (tmp_path / "results" / "store").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize(("override", "expected"), [
    ("+train.epoch=5", "train.epoch is not an option (did you mean train.epochs?)"),
    ("+seeds=1", "seeds is not an option (did you mean seed?)"),
    ("+model.d_mdl=8", "model.d_mdl is not an option (did you mean model.d_model?)"),
    ("train.batch_size=0", "train.batch_size=0 must be an integer > 0"),
    ("train.epochs=-1", "train.epochs=-1 must be an integer > 0"),
    ("optim.lr=inf", "optim.lr=inf must be a finite number > 0"),
    ("optim.lr=nan", "optim.lr=nan must be a finite number > 0"),
    ("train.warmup_epochs=-1", "train.warmup_epochs=-1.0 must be a finite number >= 0"),
    ("train.grad_clip=-0.5", "train.grad_clip=-0.5 must be a finite number >= 0"),
    ("train.max_steps=0", "train.max_steps=0 must be an integer > 0 (or null)"),
    ("train.device=gpu", "train.device='gpu' must be auto, cpu, cuda or cuda:N"),
    ("optim.betas=[0.9,1.5]", "optim.betas=[0.9, 1.5] must be two numbers in [0, 1)"),
    ("model.d_model=0", "model.d_model=0 must be an integer > 0"),
    ("sweep=../../x", "sweep='../../x' must be a plain name"),
    ("quickstart.epochs=0", "quickstart.epochs=0 must be an integer > 0"),
])
def test_every_value_and_key_is_checked_before_any_work(tmp_path: Path, override: str, expected: str) -> None:
    cfg = compose_run(tmp_path, *TINY_LISTOPS, override)
    for dry_run in (False, True):
        cfg.dry_run = dry_run
        with pytest.raises(ConfigError) as error:
            dispatch(cfg)
        assert expected in str(error.value)
    assert not list(tmp_path.iterdir())  # nothing written: no data, no store, no run directory


PRESETS = sorted(p.stem for p in (ROOT / "sweeps" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_dry_runs_without_data(tmp_path: Path, name: str) -> None:
    """`python run.py +experiment=NAME dry_run=true` in-process: its JSON lines, and nothing under paths.data."""
    cfg = compose_run(tmp_path, f"+experiment={name}", "dry_run=true")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert dispatch(cfg) is None
    lines = json_lines(printed.getvalue())
    assert lines and all(line.get("params", 1) > 0 for line in lines)
    assert not (tmp_path / "data").exists() and not (tmp_path / "store").exists()


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
    store.path(records[1]["run_id"]).unlink()  # the store keeps a complete record from being overwritten
    store.write({**records[1], "status": "failed", "error": "boom"})
    kept = store.path(records[0]["run_id"]).stat().st_mtime_ns
    second = run_py(tmp_path, *args)
    assert second.returncode == 0, second.stderr
    assert "1 already complete (skipped), 1 to run" in second.stdout
    assert store.path(records[0]["run_id"]).stat().st_mtime_ns == kept
    assert store.get(records[1]["run_id"])["status"] == "complete"
    # The manifest of the second sweep names both points; status reads the store.
    sweep_dir = manifest.find_sweep(tmp_path / "results")
    rows = status.sweep_status(sweep_dir)
    assert sorted(r["run_id"] for r in rows) == sorted(r["run_id"] for r in records.values())
    assert {r["state"] for r in rows} == {"done"}
    assert status.main(["collect", str(sweep_dir), "--report", str(tmp_path / "report")]) == 0
    assert "| transformer |" in (tmp_path / "report" / "leaderboard.md").read_text()


@pytest.mark.slow  # a sweep and a report, each a process: about 20 s
def test_a_run_that_fails_at_run_time_is_recorded_and_every_view_agrees(tmp_path: Path) -> None:
    """`-m task.root=/empty,null`: the point without data fails after the check (which reads no data). It leaves a
    `failed` record with the cause; the sweep's message, `status`, `collect` and the report all say failed."""
    out = run_py(tmp_path, "-m", *TINY_LISTOPS, "model.d_model=16", "task.root=/empty,null")
    assert out.returncode == 2, out.stderr[-3000:]
    sweep_dir = manifest.find_sweep(tmp_path / "results")
    records = {r["config"]["task"]["root"]: r for r in Store(tmp_path / "results" / "store").records()}
    failed, done = records["/empty"], records[None]
    assert (failed["status"], done["status"]) == ("failed", "complete")
    assert failed["error"].startswith("DataError: ListOps directory /empty does not exist. ")
    # Both carry the sweep's id, its folder's name (a key outside the run id).
    assert {failed["sweep_id"], done["sweep_id"]} == {sweep_dir.name} == {manifest.read_manifest(sweep_dir)["sweep_id"]}
    assert f"seqbench: sweep {sweep_dir.name} of 2 points: 0 already complete (skipped), 2 to run" in out.stdout
    assert (f"1 of 2 runs did not complete (their records say why; `python -m sweeps status {sweep_dir}`):\n  "
            f"{failed['run_id']} (task.root=/empty): failed: DataError: ListOps directory /empty does not exist. "
            in out.stderr), out.stderr
    assert {r["run_id"]: r["state"] for r in status.sweep_status(sweep_dir)} == {failed["run_id"]: "failed",
                                                                                done["run_id"]: "done"}
    assert status.main(["collect", str(sweep_dir), "--report", str(tmp_path / "report")]) == 1
    board = (tmp_path / "report" / "leaderboard.md").read_text()
    assert any(failed["run_id"] in line and "| failed |" in line and "DataError: ListOps directory /empty" in line
               for line in board.splitlines()), board  # among the runs that did not complete


@pytest.mark.slow  # a sweep in a process: about 10 s
def test_points_that_build_the_same_model_run_once(tmp_path: Path) -> None:
    """`model.depth=null,6` at l_max 48 with K 2: the automatic depth is 6 (receptive field 64 >= 48 > 32), so both
    points are one run: trained once, and both read as done."""
    tiny = [a for a in TINY_LISTOPS if not a.startswith("model")]
    out = run_py(tmp_path, "-m", *tiny, "model=multires", "model.d_model=8", "model.n_layers=1", "model.depth=null,6")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "of 2 points: 1 the same run as another, 0 already complete (skipped), 1 to run" in out.stdout
    [record] = Store(tmp_path / "results" / "store").records()
    rows = status.sweep_status(manifest.find_sweep(tmp_path / "results"))
    assert [(r["run_id"], r["state"]) for r in rows] == [(record["run_id"], "done")] * 2


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
    monkeypatch.setattr(status, "sacct", lambda jobs: None)  # no accounting here (with it: tests/test_slurm.py)
    monkeypatch.setattr(status, "squeue", lambda: queue)
    states = {r["run_id"]: r["state"] for r in status.sweep_status(tmp_path)}
    # f's job has left the queue without a record, and accounting does not say how it ended.
    assert states == {"a": "done", "b": "queued", "c": "oom", "d": "running", "e": "queued", "f": "unknown"}
    capsys.readouterr()
    assert status.main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "6 points: 1 done, 1 running, 2 queued, 1 oom, 1 unknown" in out
    assert ("SLURM's accounting (sacct) gave no answer for 2 jobs that left the queue (it can lag behind the queue, "
            "or be down): 1 without a record is unknown (cancelled, out of memory, killed?), the others read as their "
            "records say") in out  # c's oom comes from its record alone
    monkeypatch.setattr(status, "squeue", lambda: None)  # no squeue here: the store alone
    states = {r["run_id"]: r["state"] for r in status.sweep_status(tmp_path)}
    assert states == {"a": "done", "b": "preempted", "c": "oom", "d": "unknown", "e": "unknown", "f": "unknown"}
    assert status.main(["status", str(tmp_path)]) == 0
    assert "squeue did not answer" in capsys.readouterr().out
    assert status.main(["collect", str(tmp_path)]) == 1  # not everything is done
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        status.main(["status", str(tmp_path / "nowhere")])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (f"seqbench: error: {tmp_path / 'nowhere'} is not a seqbench sweep directory "
                                       f"(no {manifest.MANIFEST}); sweeps run with hydra/sweeper=seqbench write one\n")


def test_every_record_status_is_a_state_and_is_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A local sweep (no SLURM jobs): each point reads as its record says; no record is `missing`."""
    store = Store(tmp_path / "store")
    statuses = ["complete", "failed", "oom", "diverged", "preempted", "cancelled"]
    for s in statuses:
        store.write({"kind": "train", "task": "t", "model": "m", "seed": 0, "config": {}, "run_id": s, "status": s})
    entries = [{"run_id": rid, "overrides": [f"x={rid}"], "store": str(store.root), "job_num": None}
               for rid in [*statuses, "never-ran"]]
    (tmp_path / manifest.MANIFEST).write_text(json.dumps({"points": entries}))
    states = {r["run_id"]: r["state"] for r in status.sweep_status(tmp_path)}
    assert states == {**{s: s for s in statuses}, "complete": "done", "never-ran": "missing"}
    assert status.main(["status", str(tmp_path)]) == 0
    assert ("7 points: 1 done, 1 failed, 1 oom, 1 diverged, 1 preempted, 1 cancelled, 1 missing"
            in capsys.readouterr().out)


def test_status_columns_line_up_for_long_run_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(tmp_path / "store")
    ids = ["listops-s4-0123456789ab", "speech_commands-transformer-0123456789ab"]
    store.write({"kind": "train", "task": "t", "model": "m", "seed": 0, "config": {}, "run_id": ids[0],
                 "status": "cancelled"})
    entries = [{"run_id": rid, "overrides": ["a=1", f"seed={i}"], "store": str(store.root), "job_num": None}
               for i, rid in enumerate(ids)]
    (tmp_path / manifest.MANIFEST).write_text(json.dumps({"points": entries}))
    assert status.main(["status", str(tmp_path)]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.endswith("2 points: 1 cancelled, 1 missing")
    assert [line.index("seed=") for line in lines[1:]] == [lines[0].index("overrides")] * 2  # under its header
    assert [line.split() for line in lines[1:]] == [["cancelled", ids[0], "-", "seed=0"],
                                                    ["missing", ids[1], "-", "seed=1"]]


@pytest.mark.parametrize("text", ['{"created": "2026", "points": [{"run_id": "a", "ov', "\x00\x9f garbage",
                                  '{"points": {"a": 1}}', '{"points": [{"run_id": "a"}]}', "[]"])
@pytest.mark.parametrize("command", ["status", "collect"])
def test_a_truncated_or_garbage_manifest_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                                 command: str) -> None:
    (tmp_path / manifest.MANIFEST).write_text(text)
    with pytest.raises(SystemExit) as exited:
        status.main([command, str(tmp_path)])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"seqbench: error: {tmp_path / manifest.MANIFEST} is not a readable sweep manifest (")
    assert "rerun the sweep's command" in line


def test_a_garbage_job_list_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry = {"run_id": "a", "overrides": [], "store": str(tmp_path / "store"), "job_num": 0, "sweep": "s"}
    (tmp_path / manifest.MANIFEST).write_text(json.dumps({"points": [entry]}))
    (tmp_path / manifest.JOBS).write_text('{"0": "7_')
    with pytest.raises(SystemExit) as exited:
        status.main(["status", str(tmp_path)])
    assert exited.value.code == 2
    assert f"{tmp_path / manifest.JOBS} is not a readable list of the sweep's SLURM jobs" in capsys.readouterr().err


def test_the_memory_estimate_counts_tensors_alive_at_once_not_every_allocation() -> None:
    """By hand: a, then b while a lives (2 tensors); a freed, then c while b lives (2): the peak is 2 tensors, where
    the sum of every allocation would be 3 (5 with b's two views). With gradients, sin saves a for its backward,
    so a stays alive: 3."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from harness.preflight import _LiveBytes

    def chain(x: torch.Tensor) -> torch.Tensor:
        a = x + 1
        b = a.sin().view(10, 100).t()  # views share b's memory: not counted again
        del a
        return b + 1

    for needs_grad, tensors in ((False, 2), (True, 3)):
        with FakeTensorMode():
            x = torch.zeros(1000, requires_grad=needs_grad)
            counter = _LiveBytes()
            with counter:
                y = chain(x)
            assert y.shape == (100, 10)
        assert counter.peak == tensors * 1000 * 4, (needs_grad, counter.peak)


def test_the_memory_estimate_counts_attention_as_fused_kernels_hold_it() -> None:
    """Training-mode attention with dropout: the CPU kernel would keep the B x H x L x L dropout mask; the estimate
    counts no more than the same attention without dropout."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from harness.preflight import _FusedAttention, _LiveBytes

    peaks = {}
    for fused in (False, True):
        with FakeTensorMode():
            q = torch.zeros(2, 4, 512, 16, requires_grad=True)
            counter = _LiveBytes()
            with (_FusedAttention() if fused else contextlib.nullcontext()), counter:
                torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
        peaks[fused] = counter.peak
    scores = 2 * 4 * 512 * 512 * 4
    assert peaks[True] < scores <= peaks[False]
