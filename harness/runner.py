"""One run: config -> identity -> (skip | task, model, fit) -> one record in the store."""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from harness import checkpoint, distributed, env
from harness.device import resolve_device
from harness.errors import UserError, is_oom
from harness.files import RunLock, atomic_write, remove_stale_temps
from harness.identity import run_id
from harness.loggers import Loggers, log_config
from harness.registry import MODELS, TASKS
from harness.results import SCHEMA, Store
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


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Train and evaluate one config and write its record; returns the record.

    A complete (or diverged) record for the same run id is returned as is unless `force=true`. One process at a time
    runs a run id: while another holds the run directory's lock this one says so and returns the store's record, if
    any, without changing it. A failure writes a `failed` (or `oom`) record before the exception propagates, a
    non-finite loss or metric a `diverged` one; a stop request writes `preempted` after checkpointing and raises
    checkpoint.Preempted (the entry point hands it to SLURM for a requeue, sweeps.slurm), and rerunning the config
    resumes.
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
    base = {"run_id": rid, "kind": "train", "sweep": cfg.sweep, "task": cfg.task.name, "model": cfg.model.name,
            "seed": cfg.seed, "config": config, "versions": env.code_versions(config), "env": env.capture(device)}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()

    def record(status: str, **fields: Any) -> dict[str, Any]:
        rec = {"schema": SCHEMA, **base, "status": status, "error": None, **fields,
               "timing": {"started": started, "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                          "wall_s": time.perf_counter() - t0}}
        if dist.is_main:
            store.write(rec)
        return rec

    checkpoint.seed_everything(cfg.seed)
    task = TASKS.build(cfg.task, data_root_for(cfg))
    model = MODELS.build(cfg.model, task.spec)
    params = count_params(model)
    loggers = Loggers.open(cfg.get("logger") if dist.is_main else None, log_config(cfg), rdir, rid, config, cfg.sweep)
    try:
        result: FitResult = fit(model, task, cfg.train, cfg.optim, cfg.seed, rdir, device, dist, lock, loggers)
    except checkpoint.Preempted as exc:
        record("preempted", params=params, error=str(exc))
        raise
    except Diverged as exc:
        rec = record("diverged", params=params, error=str(exc),
                     diverged={"epoch": exc.epoch, "step": exc.step, "history": exc.history})
        print(f"seqbench: {rid} diverged: {exc} -> {store.path(rid)}", file=sys.stderr)
        return rec
    except UserError:
        raise
    except Exception as exc:
        status = "oom" if is_oom(exc) else "failed"
        record(status, params=params, error="".join(traceback.format_exception(exc))[-4000:])
        raise
    rec = record(
        "complete", params=params,
        metrics={"metric": result.metric, "higher_is_better": result.higher_is_better, "val": result.val,
                 "test": result.test, "test_details": result.test_details, "best_epoch": result.best_epoch,
                 "epochs": result.epochs,
                 "steps": result.steps, "history": result.history},
        throughput={"train_samples_per_s": result.train_samples_per_s,
                    "train_tokens_per_s": result.train_tokens_per_s},
        memory={"peak_bytes": result.peak_bytes, "kind": result.memory_kind},
        cost=result.cost,
        data=task.info,
    )
    print(f"seqbench: {rid} {result.metric} val={result.val:.4f} test={result.test:.4f} "
          f"-> {store.path(rid)}")
    return rec
