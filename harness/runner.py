"""One run: config -> identity -> (skip | task, model, fit) -> one record in the store."""

from __future__ import annotations

import shutil
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from harness import checkpoint, distributed, env
from harness.errors import UserError, is_oom
from harness.identity import run_id
from harness.registry import MODELS, TASKS
from harness.results import SCHEMA, Store
from harness.train import FitResult, fit, resolve_device


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, without Hydra's own node."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(tree, dict)
    tree.pop("hydra", None)
    return tree


def store_for(cfg: DictConfig) -> Store:
    return Store(Path(cfg.paths.root) / "store")


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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one config and write its record; returns the record.

    A complete record for the same run id is returned as is unless `force=true`. A failure writes a
    `failed` (or `oom`) record before the exception propagates; a stop request writes `preempted`
    after checkpointing and raises checkpoint.Preempted (the entry point hands it to SLURM for a requeue,
    harness.slurm), and rerunning the config resumes.
    """
    check(cfg)
    config = plain_config(cfg)
    rid = run_id(config)
    store = store_for(cfg)
    existing = store.get(rid)
    if existing is not None and existing["status"] == "complete" and not cfg.force:
        print(f"seqbench: {rid} already complete, skipped (force=true reruns it)")
        return existing
    device = resolve_device(cfg.train.device)
    dist = distributed.setup(device)  # several processes (torchrun, SLURM tasks): only rank 0 writes
    device = dist.device(device)
    rdir = run_dir_for(cfg, rid)
    if dist.is_main:
        if cfg.force and rdir.exists():
            shutil.rmtree(rdir)
        rdir.mkdir(parents=True, exist_ok=True)
        (rdir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    dist.barrier()
    base = {"run_id": rid, "kind": "train", "sweep": cfg.sweep, "task": cfg.task.name, "model": cfg.model.name,
            "seed": cfg.seed, "config": config, "env": env.capture(device)}
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
    try:
        result: FitResult = fit(model, task, cfg.train, cfg.optim, cfg.seed, rdir, device, dist)
    except checkpoint.Preempted as exc:
        record("preempted", params=params, error=str(exc))
        raise
    except UserError:
        raise
    except Exception as exc:
        status = "oom" if is_oom(exc) else "failed"
        record(status, params=params, error="".join(traceback.format_exception(exc))[-4000:])
        raise
    rec = record(
        "complete", params=params,
        metrics={"metric": result.metric, "higher_is_better": result.higher_is_better, "val": result.val,
                 "test": result.test, "best_epoch": result.best_epoch, "epochs": result.epochs,
                 "steps": result.steps, "history": result.history},
        throughput={"train_samples_per_s": result.train_samples_per_s,
                    "train_tokens_per_s": result.train_tokens_per_s},
        memory={"peak_bytes": result.peak_bytes, "kind": result.memory_kind},
        data=task.info,
    )
    print(f"seqbench: {rid} {result.metric} val={result.val:.4f} test={result.test:.4f} "
          f"-> {store.path(rid)}")
    return rec
