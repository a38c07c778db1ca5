"""One run: config -> identity -> (skip | task, model, fit) -> one record in the store."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from harness import checkpoint, distributed, env, versions
from harness.config import check_rates
from harness.device import resolve_device
from harness.errors import ConfigError, UserError, is_oom
from harness.files import RunLock, atomic_write, remove_stale_temps
from harness.identity import run_id, semantic_config
from harness.loggers import Loggers, log_config
from harness.registry import MODELS, TASKS
from harness.results import SCHEMA, Store
from harness.task import Task
from harness.train import Diverged, FitResult, fit

LOCK = "run.lock"  # in the run directory: held by the process running it
FINAL = ("complete", "diverged")  # rerunning either would compute the same again


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, without Hydra's own node."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(tree, dict)
    tree.pop("hydra", None)
    return tree


def store_for(cfg: DictConfig) -> Store:
    return Store(Path(cfg.paths.root) / "store", force=cfg.force)


def run_dir_for(cfg: DictConfig, rid: str) -> Path:
    return Path(cfg.paths.root) / "runs" / rid


def data_root_for(cfg: DictConfig) -> Path:
    return Path(cfg.task.root) if cfg.task.root else Path(cfg.paths.data) / cfg.task.name


def check(cfg: DictConfig) -> None:
    """Fail before any work on a config that cannot run."""
    for key, registry in (("task", TASKS), ("model", MODELS)):
        node = cfg.get(key)
        if node is None or "name" not in node:
            raise UserError(f"no {key} chosen: add {key}=<name> (see `python -m harness list`), "
                            f"or give neither task nor model to run the quickstart")
        registry.get(node.name)
    check_rates(plain_config(cfg))  # the model's own rates too: S4's ssm_lr, SGConv's kernel_lr


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Train and evaluate one config and write its record; returns the record.

    A complete (or diverged) record for the same run id is returned as is unless `force=true`. One process at a time
    runs a run id: while another holds the run directory's lock this one says so and returns the store's record, if
    any, without changing it. A failure writes a `failed` (or `oom`) record before the exception propagates, a
    non-finite loss or metric a `diverged` one; a stop request writes `preempted` after checkpointing (at once, with
    nothing to checkpoint, outside training: while the data is prepared) and raises checkpoint.Preempted (the entry
    point hands it to SLURM for a requeue, sweeps.slurm), and rerunning the config resumes. A checkpoint made for
    another run or other data is refused (checkpoint.CheckpointError), never resumed.
    """
    check(cfg)
    config = plain_config(cfg)
    rid = run_id(config)
    store = store_for(cfg)
    finished = _finished(store, rid, cfg.force)
    if finished is not None:
        return finished
    device = resolve_device(cfg.train.device)
    dist = distributed.setup(device)  # several processes (torchrun, SLURM tasks): only rank 0 writes
    device = dist.device(device)
    rdir = run_dir_for(cfg, rid)
    lock = RunLock(rdir / LOCK) if dist.is_main else None
    held = lock.acquire() if lock is not None else True
    _, refused = dist.reduce_step(0.0, not held)  # every rank learns whether rank 0 has the lock
    if refused:
        if lock is not None:
            print(f"seqbench: {rid} is already running ({lock.holder_text()}; lock {lock.path}), skipped: "
                  f"its record will say how it ended")
        return store.get(rid)
    try:
        # Until fit installs its own stop flag, which checkpoints: preparing the data can take minutes, with nothing
        # to checkpoint, and a stop signal then ends the run at once, releasing its lock (checkpoint.Preempted).
        with checkpoint.stopping_at_once():
            finished = _finished(store, rid, cfg.force)  # the previous holder may have completed it meanwhile
            if finished is not None:
                return finished
            if dist.is_main:
                if cfg.force:
                    _clear(rdir)
                # Left by writers killed halfway: here this process is the only writer, in the store one of many.
                remove_stale_temps(rdir, older_than_s=0)
                remove_stale_temps(store.root)
                atomic_write(rdir / "config.yaml", OmegaConf.to_yaml(config))
            dist.barrier()
            return _train(cfg, config, rid, store, rdir, device, dist, lock)
    finally:
        if lock is not None:
            lock.release()


def identity_of(rid: str, config: dict[str, Any], data_info: dict[str, Any]) -> checkpoint.Identity:
    """What this run's checkpoints are made for: its id, what the id hashes (the semantic config and the code
    versions) and its data: the digest of the files read where the task gives one, else all it says of its data."""
    fingerprint = data_info.get("fingerprint", data_info)
    data = fingerprint.get("sha256", fingerprint) if isinstance(fingerprint, dict) else fingerprint
    return checkpoint.Identity.of(rid, {**semantic_config(config), "versions": versions.of_config(config)}, data)


def use_compile_cache(root: Path) -> None:
    """torch.compile's caches (Inductor's graphs and kernels, AOT autograd's) under paths.root: a resumed run, or one
    requeued on another node of a cluster with a shared filesystem, reads what was compiled instead of compiling it
    all again. A TORCHINDUCTOR_CACHE_DIR set by the user wins; torch reads it at its first compile."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str((root / "cache" / "torchinductor").resolve()))


def build_task(cfg: DictConfig, dist: distributed.Dist) -> Task:
    """The task; with several processes rank 0 first (it prepares the data), the others after it (they read what it
    wrote), and none waits for a rank 0 that failed."""
    if dist.is_main:
        try:
            task = TASKS.build(cfg.task, data_root_for(cfg))
        except BaseException:
            dist.reduce_step(0.0, True)
            raise
        dist.reduce_step(0.0, False)
        return task
    _, failed = dist.reduce_step(0.0, False)
    if failed:
        raise UserError("rank 0 could not prepare the task's data: its message says why")
    return TASKS.build(cfg.task, data_root_for(cfg))


def failure_text(exc: BaseException) -> str:
    """What a failed record says: a user's error (missing data, a bad value) as its one line, with its type; any
    other as the end of its traceback, whose last line is the cause."""
    if isinstance(exc, UserError):
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return "".join(traceback.format_exception(exc))[-4000:]


def _finished(store: Store, rid: str, force: bool) -> dict[str, Any] | None:
    """The record of `rid` if it is complete or diverged (both final unless forced), else None."""
    existing = store.get(rid)
    if existing is None or existing["status"] not in FINAL or force:
        return None
    print(f"seqbench: {rid} already {existing['status']}, skipped (force=true reruns it)")
    return existing


def _clear(rdir: Path) -> None:
    """Everything in the run directory but its lock: a forced rerun starts over."""
    for child in rdir.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        elif child.name != LOCK:
            child.unlink()


def _train(cfg: DictConfig, config: dict[str, Any], rid: str, store: Store, rdir: Path, device: torch.device,
           dist: distributed.Dist, lock: RunLock | None) -> dict[str, Any]:
    """Build the task and model, fit, write the record. Every run that starts leaves one, whatever ends it: a
    failure from reading the data on `failed` (or `oom`) with its cause, a stop `preempted` (`cancelled` where SLURM
    cancelled the job); only a refusal (a ConfigError, an unreadable checkpoint) leaves the store as it was."""
    base = {"run_id": rid, "kind": "train", "sweep": cfg.sweep, "sweep_id": cfg.get("sweep_id"), "task": cfg.task.name,
            "model": cfg.model.name, "seed": cfg.seed, "config": config, "versions": env.code_versions(config),
            "env": env.capture(device, cfg.train.precision)}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()

    def record(status: str, **fields: Any) -> dict[str, Any]:
        rec = {"schema": SCHEMA, **base, "status": status, "error": None, **fields,
               "timing": {"started": started, "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                          "wall_s": time.perf_counter() - t0}}
        if dist.is_main:
            store.write(rec)
        return rec

    params = None
    if cfg.train.compile:
        use_compile_cache(Path(cfg.paths.root))
    try:
        checkpoint.seed_everything(cfg.seed)
        task = build_task(cfg, dist)
        model = MODELS.build(cfg.model, task.spec)
        params = count_params(model)
        loggers = Loggers.open(cfg.get("logger") if dist.is_main else None, log_config(cfg), rdir, rid, config,
                               cfg.sweep)
        piece = {"commit": base["env"].get("git_commit"), "dirty": base["env"].get("git_dirty"),
                 "device": base["env"].get("device"), "compile": cfg.train.compile,
                 "compile_mode": cfg.train.compile_mode, "started": started}
        result: FitResult = fit(model, task, cfg.train, cfg.optim, cfg.seed, rdir, device, dist, lock,
                                identity=identity_of(rid, config, task.info), loggers=loggers, piece=piece)
    except checkpoint.Preempted as exc:
        # How far it got, so that a report can draw the curve of a run still under way (never ranked).
        progress = {} if exc.progress is None else {"progress": exc.progress}
        if exc.signum == signal.SIGTERM and env.slurm_cancelled():  # scancel: nothing will requeue it
            record("cancelled", params=params, error=f"cancelled by SLURM (scancel); {exc}; rerunning the sweep "
                                                     f"resumes it from its checkpoint", **progress)
        else:
            record("preempted", params=params, error=str(exc), **progress)
        raise
    except Diverged as exc:
        rec = record("diverged", params=params, error=str(exc),
                     diverged={"epoch": exc.epoch, "step": exc.step, "history": exc.history})
        print(f"seqbench: {rid} diverged: {exc} -> {store.path(rid)}", file=sys.stderr)
        return rec
    except (ConfigError, checkpoint.CheckpointError):
        raise  # a refusal of the config or of the run's files as they are: nothing ran, the store keeps its record
    except (KeyboardInterrupt, SystemExit) as exc:  # a second Ctrl-C; a stop signal before training began
        record("preempted", params=params, error=f"stopped at once ({type(exc).__name__}); rerunning resumes from "
                                                 f"the last checkpoint, if any")
        raise
    except Exception as exc:
        record("oom" if is_oom(exc) else "failed", params=params, error=failure_text(exc))
        raise
    rec = record(
        "complete", params=params,
        metrics={"metric": result.metric, "higher_is_better": result.higher_is_better, "val": result.val,
                 "test": result.test, "test_details": result.test_details, "best_epoch": result.best_epoch,
                 "epochs": result.epochs,
                 "steps": result.steps, "tested": result.tested, "stopped_early": result.stopped_early,
                 "history": result.history},
        throughput={"train_samples_per_s": result.train_samples_per_s,
                    "train_tokens_per_s": result.train_tokens_per_s},
        memory={"peak_bytes": result.peak_bytes, "kind": result.memory_kind},
        cost=result.cost,
        data=task.info,
    )
    print(f"seqbench: {rid} {result.metric} val={result.val:.4f} test={result.test:.4f} "
          f"-> {store.path(rid)}")
    return rec
