"""Sweeps: check every point before anything runs, vary keys together, skip what is done, collect later.

    python run.py -m model=s4,multires seed=0,1,2                        validate all 6 points, then run them
    python run.py -m ... dry_run=true                                    validate only: one JSON line per run
    python run.py -m model=s4,multires optim.lr=0.01,0.003 'hydra.sweeper.zip=[[model,optim.lr]]'
                                                                         2 points (zipped), not 4 (crossed)
    python run.py -m hydra/launcher=slurm hydra.sweeper.wait=false ...   submit and return
    python -m harness.sweep status [SWEEP_DIR]                           done / running / queued / failed / ...
    python -m harness.sweep collect [SWEEP_DIR]                          the results, one JSON line per point

The sweeper (`hydra/sweeper=seqbench`, harness.config.SweeperConfig) is Hydra's basic sweeper with a check in
front: it composes every point, builds its model on the meta device (no memory, no data), counts parameters
and estimates training memory. One bad point refuses the whole sweep before a single job is submitted. Points
whose record in the store is already complete are skipped (unless force=true), so rerunning a sweep runs only
what is missing, failed or interrupted. A manifest (`seqbench_sweep.json` in the sweep directory) names every
point's run id; `status` reads it with the store as the source of truth, plus `squeue` for jobs not yet done
(no `sacct` needed).

The model needs the task's TaskSpec. A task module may define `task_spec(cfg) -> TaskSpec`, computed from the
config alone; otherwise the task is built (its data loaded, or generated and cached as a run would) once per
distinct task config of the sweep.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from harness import runner
from harness.errors import ConfigError, UserError
from harness.identity import run_id
from harness.optim import lr_factor, make_optimizer
from harness.registry import MODELS, TASKS
from harness.results import Store, atomic_write_text
from harness.train import autocast_for
from harness.task import TaskSpec

# Hydra's plugin scan (once per process) executes the plugin modules again, replacing their classes: scan first,
# then import the classes subclassed here, or their own `super(Class, self)` calls would no longer match.
Plugins.instance()
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # noqa: E402
from hydra_plugins.hydra_submitit_launcher import submitit_launcher  # noqa: E402
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf  # noqa: E402

MANIFEST = "seqbench_sweep.json"  # in the sweep directory: every point, its run id and job number
JOBS = "seqbench_jobs.json"  # beside it, written by SlurmLauncher: job number -> SLURM job id

# ----------------------------------------------------------------------------------------------------------------
# Points of a sweep: Cartesian product, except for zipped groups of keys


def _name(key: str) -> str:
    return key.lstrip("+~")


def expand(overrides: Sequence[Override], zipped: Sequence[Sequence[str]] = ()) -> list[list[str]]:
    """Every point's override strings. Keys in one `zipped` group vary together (their i-th values form one
    point, so they need equally many values); everything else is crossed, in the order the keys appear."""
    values: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ConfigError(f"{key}: only lists of values (a,b,c or range(...)) can be swept, "
                                  f"not a {o.value_type.name if o.value_type else 'sweep'}")
            values[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            values[key] = [f"{key}={o.get_value_element_as_str()}"]
    by_name = {_name(k): k for k in values}
    axes: dict[str, list[list[str]]] = {}  # first key of the axis -> alternatives (each a list of overrides)
    zipped_keys: set[str] = set()
    for group in zipped:
        keys = []
        for name in group:
            if name not in by_name:
                raise ConfigError(f"hydra.sweeper.zip names {name!r}, which this sweep does not set; "
                                  f"keys set: {sorted(by_name)}")
            if by_name[name] in zipped_keys:
                raise ConfigError(f"hydra.sweeper.zip names {name!r} in two groups; a key can be zipped once")
            keys.append(by_name[name])
            zipped_keys.add(by_name[name])
        counts = {_name(k): len(values[k]) for k in keys}
        if len(set(counts.values())) > 1:
            raise ConfigError(f"zipped keys need equally many values, got {counts}")
        axes[keys[0]] = [[values[k][i] for k in keys] for i in range(len(values[keys[0]]))]
    ordered = [axes[k] if k in axes else [[v] for v in values[k]] for k in values if k in axes or k not in zipped_keys]
    return [[s for alternative in combo for s in alternative] for combo in itertools.product(*ordered)]


# ----------------------------------------------------------------------------------------------------------------
# Checking one point: compose, build on the meta device, count, estimate


_SPECS: dict[str, tuple[TaskSpec, str]] = {}


def task_spec(cfg: DictConfig) -> tuple[TaskSpec, str]:
    """The task's spec and where it came from: "config" (the task module's `task_spec`) or "data" (built)."""
    entry = TASKS.get(cfg.task.name)
    from_config = getattr(sys.modules[entry.builder.__module__], "task_spec", None)
    if callable(from_config):
        return from_config(cfg.task), "config"
    data_root = runner.data_root_for(cfg)
    key = json.dumps([OmegaConf.to_container(cfg.task, resolve=True), str(data_root)], sort_keys=True)
    if key not in _SPECS:
        _SPECS[key] = (TASKS.build(cfg.task, data_root).spec, "data")
    return _SPECS[key]


class _Allocations(TorchDispatchMode):
    """Bytes of every new tensor an operation returns (views and in-place results are not new memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {id(t) for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view():
                self.bytes += t.numel() * t.element_size()
        return out


def activation_bytes(model: torch.nn.Module, spec: TaskSpec, batch_size: int) -> int:
    """Every tensor one training forward pass of a full-length batch creates, counted on fake tensors: an upper
    bound on what autograd keeps for the backward pass (fp32; bf16 autocast roughly halves it). Call it inside
    the FakeTensorMode the model was built in."""
    shape = (batch_size, spec.seq_len) if spec.input == "tokens" else (batch_size, spec.seq_len, spec.d_input)
    x = torch.zeros(shape, dtype=torch.long if spec.input == "tokens" else torch.float32)
    lengths = torch.full((batch_size,), spec.seq_len, dtype=torch.long)
    model.train()
    counter = _Allocations()
    with counter:
        model(x, lengths=lengths)
    return counter.bytes


def inspect_model(cfg: DictConfig, spec: TaskSpec) -> tuple[int, dict[str, Any]]:
    """Parameter count and a training-memory estimate, from the model built on fake tensors (shapes without
    storage: no memory, no time); on the CPU for real when a layer's initialisation needs real numbers."""
    state = 8 if cfg.optim.optimizer in ("adam", "adamw") else 0  # Adam's two moments, fp32
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            model = MODELS.build(cfg.model, spec)
            make_optimizer(model, cfg.optim)  # the optimizer's name and parameter groups
            params = runner.count_params(model)
            try:
                activations, note = activation_bytes(model, spec, cfg.train.batch_size), None
            except Exception as exc:  # a data-dependent step (e.g. .item()) cannot run on fake tensors
                activations, note = None, f"no estimate: {type(exc).__name__}: {str(exc)[:200]}"
        built_on = "fake"
    except UserError:
        raise
    except Exception:
        model = MODELS.build(cfg.model, spec)
        make_optimizer(model, cfg.optim)
        params, activations, note, built_on = runner.count_params(model), None, "model built on the CPU", "cpu"
    memory: dict[str, Any] = {"params_bytes": 4 * params, "grads_bytes": 4 * params, "optimizer_bytes": state * params,
                              "activations_bytes": activations}
    memory["total_bytes"] = sum(v for v in memory.values() if v is not None)
    memory.update(batch_size=cfg.train.batch_size, seq_len=spec.seq_len, built_on=built_on)
    if note:
        memory["note"] = note
    return params, memory


def describe(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Check one run config as far as possible without training; raises on a config that cannot run."""
    runner.check(cfg)
    rid = run_id(runner.plain_config(cfg))
    spec, spec_from = task_spec(cfg)
    lr_factor(0, 1, 0, cfg.train.schedule)  # schedule name
    autocast_for(torch.device("cpu"), cfg.train.precision)  # precision name
    params, memory = inspect_model(cfg, spec)
    existing = runner.store_for(cfg).get(rid)
    return {"run_id": rid, "task": cfg.task.name, "model": cfg.model.name, "seed": cfg.seed, "params": params,
            "memory": memory, "spec_from": spec_from, "status": existing["status"] if existing else None,
            "overrides": list(overrides)}


def dry_run(cfg: DictConfig) -> dict[str, Any]:
    """`python run.py ... dry_run=true` (one run): print the point's JSON line; nothing is trained."""
    overrides: list[str] = []
    if HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
    info = describe(cfg, overrides)
    print(json.dumps(info), flush=True)
    return info


def job_config(sweep_config: DictConfig) -> DictConfig:
    """What the job's task function will get: the composed config without Hydra's node (as hydra's run_job)."""
    cfg = copy.deepcopy(sweep_config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


@dataclass
class Point:
    num: int
    overrides: list[str]
    cfg: DictConfig | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.info.get("status") == "complete" and not self.cfg.force


# ----------------------------------------------------------------------------------------------------------------
# The sweeper


class Sweeper(BasicSweeper):
    """Hydra's basic sweeper, with zipped keys, a check of every point first, and finished points skipped."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 zip: Sequence[Sequence[str]] | None = None, wait: bool = True) -> None:  # noqa: A002 (Hydra's key)
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.zip = [list(group) for group in (zip or [])]
        self.wait = wait

    def plan(self, arguments: list[str]) -> list[Point]:
        """Every point, composed and checked; raises ConfigError naming every bad point."""
        assert self.hydra_context is not None and self.config is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._parse_config() + list(arguments))
        points = [Point(i, o) for i, o in enumerate(expand(overrides, self.zip))]
        for p in points:
            try:
                p.cfg = job_config(self.hydra_context.config_loader.load_sweep_config(self.config, p.overrides))
                p.info = describe(p.cfg, p.overrides)
            except Exception as exc:  # composition, unknown names, bad values, models that cannot be built
                p.error = f"{type(exc).__name__}: {exc}".strip().replace("\n", "\n      ")
        bad = [p for p in points if p.error]
        if bad:
            lines = [f"#{p.num} {' '.join(p.overrides)}\n      {p.error}" for p in bad]
            raise ConfigError(f"sweep refused: {len(bad)} of {len(points)} points cannot run, nothing was launched:\n  "
                              + "\n  ".join(lines) + "\nFix or drop them; `dry_run=true` checks a sweep without "
                              "running it.")
        return points

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._sweep(arguments)
        except UserError as exc:  # one message, no traceback, as run.py does for a single run
            print(f"seqbench: error: {exc}", file=sys.stderr)
            sys.exit(2)

    def _sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        points = self.plan(arguments)
        if any(p.cfg.dry_run for p in points):
            for p in points:
                print(json.dumps(p.info), flush=True)
            return []
        if not self.wait and not isinstance(self.launcher, SlurmLauncher):
            raise ConfigError("hydra.sweeper.wait=false needs a launcher that can return before its jobs end: "
                              "add hydra/launcher=slurm (or slurm_local)")
        todo = [p for p in points if not p.done]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        write_manifest(sweep_dir, points, todo)
        print(f"seqbench: sweep of {len(points)} points: {len(points) - len(todo)} already complete (skipped), "
              f"{len(todo)} to run; `python -m harness.sweep status {sweep_dir}`", flush=True)
        if isinstance(self.launcher, SlurmLauncher):
            self.launcher.wait = self.wait
        returns: list[Sequence[JobReturn]] = []
        failed = []
        size = self.max_batch_size or len(todo) or 1
        for start in range(0, len(todo), size):
            batch = todo[start:start + size]
            results = self.launcher.launch([p.overrides for p in batch], initial_job_idx=start)
            returns.append(results)
            failed += [(p, r) for p, r in zip(batch, results) if r.status == JobStatus.FAILED]
        if failed:  # after every batch: the others ran, and a rerun of the sweep runs only these
            lines = [f"{p.info['run_id']} ({' '.join(p.overrides)}): {type(r._return_value).__name__}: "
                     f"{str(r._return_value)[:300]}" for p, r in failed]
            raise ConfigError(f"{len(failed)} of {len(todo)} runs failed (their records say why):\n  "
                              + "\n  ".join(lines))
        return returns


def write_manifest(sweep_dir: Path, points: Sequence[Point], todo: Sequence[Point]) -> None:
    nums = {p.num: i for i, p in enumerate(todo)}  # the launcher numbers the launched points 0, 1, ...
    entries = [{"run_id": p.info["run_id"], "task": p.info["task"], "model": p.info["model"], "seed": p.info["seed"],
                "overrides": p.overrides, "store": str(runner.store_for(p.cfg).root.resolve()),
                "runs": str((Path(p.cfg.paths.root) / "runs").resolve()), "job_num": nums.get(p.num),
                "sweep": p.cfg.sweep} for p in points]
    text = json.dumps({"created": datetime.now(UTC).isoformat(timespec="seconds"), "points": entries}, indent=1)
    atomic_write_text(sweep_dir / MANIFEST, text + "\n")


# ----------------------------------------------------------------------------------------------------------------
# The SLURM launcher: the plugin's, recording job ids, optionally returning once submitted


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher (same parameters, same requeue through its `checkpoint`), which
    also writes each job's SLURM id beside the sweep (for `status`) and, with `wait` false, returns as soon as
    the jobs are submitted."""

    wait = True

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster=self._EXECUTOR,
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        from hydra.core.singleton import Singleton

        nums = [initial_job_idx + i for i in range(len(job_overrides))]
        calls = [(list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state())
                 for n, o in zip(nums, job_overrides)]
        jobs = executor.map_array(self, *zip(*calls))
        path = sweep_dir / JOBS
        known = json.loads(path.read_text()) if path.exists() else {}
        known.update({str(n): job.job_id for n, job in zip(nums, jobs)})
        atomic_write_text(path, json.dumps(known, indent=1) + "\n")
        print(f"seqbench: submitted {len(jobs)} SLURM jobs ({jobs[0].job_id.split('_')[0]}), logs in "
              f"{Path(str(self.params['submitit_folder'])).parent}", flush=True)
        if not self.wait:
            return [JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=job.job_id)
                    for o, job in zip(job_overrides, jobs)]
        return [job.results()[0] for job in jobs]


# Hydra instantiates sweepers and launchers only from the `hydra_plugins` namespace (where plugin packages install
# themselves). These two live in the repo instead: register them under that prefix, so that
# `_target_: hydra_plugins.seqbench.Sweeper` finds them (run.py imports this module before Hydra starts). Pickles
# (submitit's) still name them by their real module, harness.sweep.
PLUGIN_PREFIX = "hydra_plugins.seqbench"


def register_with_hydra() -> None:
    plugins = Plugins.instance()
    for cls in (Sweeper, SlurmLauncher):
        plugins.class_name_to_class[f"{PLUGIN_PREFIX}.{cls.__name__}"] = cls


register_with_hydra()


# ----------------------------------------------------------------------------------------------------------------
# Inside a submitit job: after the checkpoint, let submitit requeue


def after_preemption(signum: int | None) -> None:
    """Called once a stopped run has written its checkpoint and its `preempted` record.

    In a submitit job on SLURM: for submitit's signal (USR2, sent before the time limit or by
    `scancel --signal=USR2`) or SIGUSR1, hand over to submitit's handler, which resubmits the same call through
    the launcher's `checkpoint` (`scontrol requeue`, up to `max_num_timeout` times for time-outs) and exits
    without a result, so the sweep keeps waiting; the requeued job resumes from `runs/<run_id>/last.pt`. For
    SIGTERM (`scontrol requeue`, preemption, `scancel`) SLURM itself ends the job after its KillWait: wait for
    that (or for submitit's signal) instead of reporting a failure. Elsewhere, return: the caller raises.
    """
    if signum is None or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return
    import submitit

    usr = submitit.JobEnvironment._usr_sig()
    print(f"seqbench: stopped by signal {signal.Signals(signum).name}, checkpoint written", file=sys.stderr, flush=True)
    if signum in (usr, signal.SIGUSR1):
        handler = signal.getsignal(usr)
        if callable(handler):
            handler(usr, None)  # requeues and exits on rank 0; returns on the other ranks
    print("seqbench: waiting for SLURM to end or requeue the job", file=sys.stderr, flush=True)
    time.sleep(300)  # interrupted by SIGKILL, or by USR2 (submitit's handler requeues and exits)


# ----------------------------------------------------------------------------------------------------------------
# Status and results of a sweep, later


RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "PREEMPTED"}
STATES = ("done", "running", "queued", "failed", "oom", "preempted", "missing")


def squeue() -> dict[str, str] | None:
    """{job id: state} of this user's jobs (array tasks one by one), or None where squeue does not answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", os.environ.get("USER") or str(os.getuid()),
                              "-o", "%i|%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return dict(line.strip().split("|", 1) for line in out.stdout.splitlines() if "|" in line)


def classify(record: dict[str, Any] | None, job_state: str | None) -> str:
    """The store first (a complete record is done whatever the queue says), then the queue, then the record."""
    if record is not None and record["status"] == "complete":
        return "done"
    if job_state in RUNNING:
        return "running"
    if job_state in QUEUED:
        return "queued"
    if record is not None:
        return record["status"]  # failed | oom | preempted (rerun the sweep to resume it)
    return "missing"  # never started, or killed before it wrote anything: rerunning the sweep runs it


def find_sweep(root: Path) -> Path:
    manifests = sorted(root.glob(f"hydra/multirun/*/{MANIFEST}"), key=lambda p: p.stat().st_mtime)
    if not manifests:
        raise UserError(f"no sweep found under {root}/hydra/multirun; give the sweep directory")
    return manifests[-1].parent


def sweep_status(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per point: run id, state (see STATES), SLURM job id and state, record status, overrides."""
    path = sweep_dir / MANIFEST
    if not path.is_file():
        raise UserError(f"{sweep_dir} is not a seqbench sweep directory (no {MANIFEST}); sweeps run with "
                        f"hydra/sweeper=seqbench write one")
    manifest = json.loads(path.read_text())
    jobs_path = sweep_dir / JOBS
    jobs = json.loads(jobs_path.read_text()) if jobs_path.exists() else {}
    queue = squeue() if jobs else {}
    rows = []
    for p in manifest["points"]:
        record = Store(p["store"]).get(p["run_id"])
        job = jobs.get(str(p["job_num"])) if p["job_num"] is not None else None
        job_state = (queue or {}).get(job) if job else None
        rows.append({"run_id": p["run_id"], "state": classify(record, job_state), "job_id": job,
                     "slurm": job_state, "record": record["status"] if record else None, "overrides": p["overrides"],
                     "queue_known": queue is not None, "record_data": record})
    return rows


def _status(args: argparse.Namespace) -> int:
    sweep_dir = args.sweep or find_sweep(Path(args.root))
    rows = sweep_status(sweep_dir)
    counts = Counter(r["state"] for r in rows)
    if args.json:
        for r in rows:
            print(json.dumps({k: v for k, v in r.items() if k != "record_data"}))
        return 0
    print(f"sweep {sweep_dir}: {len(rows)} points: " + ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s]))
    if rows and not rows[0]["queue_known"]:
        print("  (squeue did not answer: states come from the store only)")
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    for r in rows:  # only what differs between the points
        job = f"job {r['job_id']}" if r["job_id"] else "no job"
        varied = " ".join(o for o in r["overrides"] if o not in shared)
        print(f"  {r['state']:<9} {r['run_id']}  {job:<14} {varied}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    sweep_dir = args.sweep or find_sweep(Path(args.root))
    rows = sweep_status(sweep_dir)
    for r in rows:
        rec = r["record_data"]
        if r["state"] != "done":
            print(f"seqbench: {r['run_id']} is {r['state']}, not collected", file=sys.stderr)
            continue
        metrics = rec.get("metrics") or {}
        print(json.dumps({"run_id": r["run_id"], "task": rec["task"], "model": rec["model"], "seed": rec["seed"],
                          "overrides": r["overrides"], "metric": metrics.get("metric"), "val": metrics.get("val"),
                          "test": metrics.get("test"), "params": rec.get("params")}))
    if args.report:
        from reports import build as build_reports

        manifest = json.loads((sweep_dir / MANIFEST).read_text())
        names = {p["sweep"] for p in manifest["points"]}
        stores = {p["store"] for p in manifest["points"]}
        if len(stores) != 1:
            raise UserError("--report needs every point of the sweep in one store (one paths.root)")
        out = build_reports(stores.pop(), args.report, sweep=names.pop() if len(names) == 1 else None)
        print(f"seqbench: report written to {out}", file=sys.stderr)
    return 0 if all(r["state"] == "done" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("status", "state of every point: done, running, queued, failed, oom, preempted, "
                                       "missing"),
                            ("collect", "one JSON line per finished point (exit 1 while some are not done)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("sweep", nargs="?", type=Path, help="the sweep directory (default: the newest under --root)")
        p.add_argument("--root", default="results", help="paths.root of the sweep (default: results)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="one JSON line per point")
        else:
            p.add_argument("--report", type=Path, help="also build the report of the sweep's records into this folder")
    args = parser.parse_args(argv)
    try:
        return _status(args) if args.command == "status" else _collect(args)
    except UserError as exc:
        print(f"seqbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
