"""The entry points as a user meets them: listing, and one clear message on every bad input."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.errors import CompactHydraException

from harness.__main__ import list_registered
from harness.config import composition_error
from harness.errors import DataError, UserError
from harness.jobs import dispatch
from harness.registry import MODELS, TASKS
from tests.helpers import ROOT, compose_run, run_py


def clean_env(home: Path) -> dict[str, str]:
    """What a fresh login shell has: nothing of this session's environment."""
    return {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(home)}


def test_list_shows_every_option_group_and_every_registered_task_and_model() -> None:
    text = list_registered()
    for name in TASKS.names() + MODELS.names():
        assert f"  {name}:" in text
    assert "model.d_model: int = 128" in text  # the transformer's option, with its default
    for group in ("train", "optim", "paths", "bench", "quickstart"):
        assert f"\n{group}:\n" in text
    for option in ("seed: int = 0", "sweep: str = 'default'", "sweep_id: str | None = None",
                   "train.epochs: int | None = 10", "optim.lr: float = 0.001", "paths.root: str = 'results'",
                   "bench.lengths: list[int] | None = None",
                   "quickstart.epochs: int = 5", "hydra.sweeper.wait: True", "hydra.sweeper.partial_keys: 'refuse'"):
        assert f"      {option}" in text, option
    assert "train.schedule: str = 'cosine'  # cosine | constant | rsqrt" in text  # what an option is for
    assert {"listops", "scifar", "ptbxl", "cifar_bpd", "speech_commands"} <= set(TASKS.names())
    assert {"transformer", "multires", "s4", "s4d", "sgconv", "wavspa"} <= set(MODELS.names())


def test_a_bad_input_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    """The whole path through run.py, once; the cases below check each message in-process."""
    out = run_py(tmp_path, "task=listops", env=clean_env(tmp_path))
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["seqbench: error: no model chosen: add model=<name> (see `python -m harness "
                                       "list`), or give neither task nor model to run the quickstart"]
    assert "Traceback" not in out.stdout


@pytest.mark.parametrize(("args", "expected", "line"), [
    (["task=nosuch", "model=transformer"], "Could not find 'task/nosuch'",
     "Could not find 'task/nosuch'; choose one of cifar_bpd, listops, ptbxl, scifar, speech_commands"),
    (["task=listops", "model=nosuch"], "Could not find 'model/nosuch'", "Could not find 'model/nosuch'; choose one of"),
    (["task=listops", "model=transformer", "train.nosuch=1"], "Key 'nosuch' not in 'TrainConfig'",
     "train.nosuch is not an option; `python -m harness list` shows every task and model option"),
    (["task=listops", "model=transformer", "train.epoch=1"], "Key 'epoch' not in 'TrainConfig'",
     "train.epoch is not an option (did you mean train.epochs?)"),
    (["task=listops", "model=transformer", "model.n_head=1"], "Key 'n_head' not in 'TransformerConfig'",
     "model.n_head is not an option (did you mean model.n_heads?)"),
    (["task=listops", "model.d_model=8"], "Key 'd_model' is not in struct",
     "model.d_model is an option of the model, but no model is chosen: add model=<name>"),
    (["task=listops", "model=transformer", "train.epochs=abc"], "could not be converted to Integer",
     "train.epochs: Value 'abc' of type 'str' could not be converted to Integer"),
    (["task=listops", "model=transformer", "train.epochs=[1"], "no viable alternative",
     "cannot parse 'train.epochs=[1': no viable alternative at input '[1'"),
])
def test_a_bad_override_is_refused_while_composing(tmp_path: Path, args: list[str], expected: str, line: str) -> None:
    # Hydra raises a CompactHydraException (with the OmegaConf error that caused it); run.py prints it as one line.
    with pytest.raises(CompactHydraException) as error:
        compose_run(tmp_path, *args)
    assert expected in f"{error.value}\n{error.value.__cause__}"
    message = composition_error(error.value)
    assert line in message and "\n" not in message


def test_hydra_errors_are_one_line_and_exit_status_2_unless_debugging(tmp_path: Path) -> None:
    args = ["task=listops", "model=transformer", "train.epoch=1"]
    out = run_py(tmp_path, *args, env=clean_env(tmp_path))
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["seqbench: error: train.epoch is not an option (did you mean train.epochs?); "
                                       "`python -m harness list` shows every task and model option"]
    debug = run_py(tmp_path, *args, env={**clean_env(tmp_path), "SEQBENCH_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigCompositionException" in debug.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["task=listops"], "no model chosen"),
    (["task=listops", "model=transformer", "dry_run=maybe"], "dry_run='maybe' must be true, false or memory"),
])
def test_a_config_that_cannot_run_is_a_user_error(tmp_path: Path, args: list[str], expected: str) -> None:
    with pytest.raises(UserError, match=re.escape(expected)):
        dispatch(compose_run(tmp_path, *args))
    assert not list(tmp_path.glob("store/*"))


@pytest.mark.parametrize(("args", "cause"), [
    (["task=listops", "model=transformer", "task.root=/nonexistent/listops"],
     "DataError: ListOps directory /nonexistent/listops does not exist."),
    (["task=scifar", "model=transformer", "task.download=false"], "DataError: CIFAR-10 (auto) not found in "),
])
def test_a_run_whose_data_is_missing_records_why(tmp_path: Path, args: list[str], cause: str) -> None:
    """The run started (its config is fine), so it leaves a `failed` record whose error is the cause on one line;
    a hint never suggests what was just tried."""
    with pytest.raises(UserError) as error:
        dispatch(compose_run(tmp_path, *args))
    [record] = [json.loads(p.read_text()) for p in tmp_path.glob("store/*.json")]
    assert record["status"] == "failed" and record["params"] is None and record["sweep_id"] is None
    assert record["error"].startswith(cause) and "\n" not in record["error"]
    assert " ".join(str(error.value).split()) == record["error"].split(": ", 1)[1]


def test_no_hint_suggests_what_was_just_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR-10's download is on by default: after it failed the hint offers the manual routes, not the download;
    with it off, it offers the download."""
    from tasks._cifar import download_cifar, load_cifar10

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # no cached copy of the Parquet release either

    for download in (True, False):
        with pytest.raises(DataError) as error:
            load_cifar10([tmp_path / "nowhere"], "parquet", download=download)
        assert ("task.download=true" in str(error.value)) == (not download)
    unreachable = (tmp_path / "missing.tar.gz").as_uri()  # a download that fails at once, without network
    with pytest.raises(DataError) as error:
        download_cifar(tmp_path / "cifar", url=unreachable)
    assert "downloading" in str(error.value) and "task.download=true" not in str(error.value)


def test_a_tsv_with_the_wrong_columns_is_named(tmp_path: Path) -> None:
    root = tmp_path / "lra"
    root.mkdir()
    for split in ("train", "val", "test"):
        (root / f"basic_{split}.tsv").write_text("Input\tLabel\n( [MAX 1 2 ] )\t2\n")
    with pytest.raises(DataError, match="basic_train.tsv") as error:
        dispatch(compose_run(tmp_path, "task=listops", "model=transformer", f"task.root={root}"))
    assert "Source" in str(error.value)


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_rerun_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    """The user's view of resume: stop a run with SIGTERM after its first epoch, rerun the same command."""
    args = ["task=listops", "task.n_train=320", "task.n_val=50", "task.n_test=50", "task.min_length=20",
            "task.max_length=80", "task.max_depth=4", "task.l_max=80", "model=s4d", "model.d_model=32",
            "model.n_layers=2", "train.epochs=4", "train.batch_size=8", "seed=3"]
    reference = run_py(tmp_path / "reference", *args, env=clean_env(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr[-2000:]

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), f"paths.root={interrupted / 'results'}",
                             f"paths.data={interrupted / 'data'}", "train.progress=false", *args],
                            cwd=interrupted, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(interrupted))
    deadline = time.monotonic() + 300
    while not list((interrupted / "results" / "runs").glob("*/metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "rerun the same command to resume" in err
    assert "Traceback" not in err
    record = json.loads(next((interrupted / "results" / "store").glob("*.json")).read_text())
    assert record["status"] == "preempted"
    # How far it got, for the report's curves: the validations its metrics.jsonl holds.
    logged = [json.loads(line) for line in next((interrupted / "results" / "runs").glob("*/metrics.jsonl"))
              .read_text().splitlines()]
    assert record["progress"]["history"] == logged and record["progress"]["epoch"] == len(logged) >= 1
    assert record["progress"]["metric"] == "accuracy"

    resumed = run_py(interrupted, *args, env=clean_env(interrupted))  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    stores = [next((d / "results" / "store").glob("*.json")) for d in (tmp_path / "reference", interrupted)]
    a, b = (json.loads(p.read_text()) for p in stores)
    assert a["run_id"] == b["run_id"] and b["status"] == "complete"
    assert a["metrics"]["history"] == b["metrics"]["history"]
    assert b["metrics"]["history"][: len(logged)] == logged and "progress" not in b
    # Two pieces, each with what it ran on; the uninterrupted run is one.
    stopped_at = record["progress"]["step"]
    assert [s["from_step"] for s in b["cost"]["segments"]] == [0, stopped_at] and len(a["cost"]["segments"]) == 1
    assert all(s["commit"] == b["env"]["git_commit"] and s["compile"] is False for s in b["cost"]["segments"])
    assert record["progress"]["segments"] == b["cost"]["segments"][:1]
    assert (a["metrics"]["val"], a["metrics"]["test"]) == (b["metrics"]["val"], b["metrics"]["test"])
