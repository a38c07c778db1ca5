"""The sweeper (`hydra/sweeper=seqbench`, harness.config.SweeperConfig): check every point before anything runs,
vary keys together, skip what is done.

    python run.py -m model=s4,multires seed=0,1,2                        check all 6 points, then run them
    python run.py -m ... dry_run=true                                    check only: one JSON line per run
    python run.py -m model=s4,multires optim.lr=0.01,0.003 'hydra.sweeper.zip=[[model,optim.lr]]'
                                                                         2 points (zipped), not 4 (crossed)
    python run.py -m hydra/launcher=slurm hydra.sweeper.wait=false ...   submit and return

It is Hydra's basic sweeper with a check in front: it composes every point and checks it as `dry_run=true` does
(harness.preflight: every key and value, the model built on fake tensors, parameters counted, training memory
estimated). One bad point refuses the whole sweep before a single job is submitted. Points whose record in the store
is already complete are skipped (unless force=true), so rerunning a sweep runs only what is missing, failed or
interrupted; points with the same run id (the same model written two ways, harness.identity) run once. Every
launched run gets `sweep_id=<the sweep folder's name>` (a key outside the run id), which its record carries. The
manifest it writes in the sweep directory (sweeps.manifest) is what `python -m sweeps status` reads. A sweep that
waits for its runs ends by naming each that did not complete, in the state its record gives.

Options of a swept group (`model=s4,multires model.d_model=64`): Hydra composes a sweep's primary config once, before
any point has chosen its model, so run.py hands it `model.x=v` as `++model.x=v` (likewise `task.x=v`), and each
point here gets the plain `model.x=v` where its model has option x. An option none of the swept models has is
refused; one that only some have is refused unless `hydra.sweeper.partial_keys=skip` (set where it exists).

A stop signal during a sweep on this machine (the basic launcher) ends the sweep: the running point checkpoints
(harness.checkpoint) and run.py exits with 128 + the signal, as a process ended by it reports; rerunning the sweep
resumes it. On SLURM each job is requeued instead (sweeps.slurm).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from harness import runner
from harness.checkpoint import stop_signals_handled
from harness.config import closest, composition_error, one_of
from harness.errors import ConfigError, UserError, exit_with
from harness.preflight import describe
from harness.progress import plural
from harness.registry import MODELS, TASKS, Registry
from sweeps import manifest, status

Plugins.instance()  # before importing the plugin's classes: sweeps/hydra_plugins.py says why
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # noqa: E402


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


GROUPS: dict[str, Registry] = {"model": MODELS, "task": TASKS}
OPEN_KEY = re.compile(r"\+\+(model|task)\.(\w+)[^=]*=")  # `++model.x=v`, as run.py hands on a sweep's `model.x=v`
PARTIAL_KEYS = ("refuse", "skip")


OPENED: set[str] = set()  # the keys open_group_keys prefixed, so that messages show them as the user wrote them


def open_group_keys(argv: Sequence[str]) -> list[str]:
    """A multirun's command line with `model.x=v` and `task.x=v` as `++model.x=v` (see the module's docstring)."""
    opened = [f"++{a}" if re.match(r"(model|task)\.[^=]+=", a) else a for a in argv]
    OPENED.update(a.split("=", 1)[0] for a, o in zip(argv, opened) if a != o)
    return opened


def as_written(overrides: Sequence[str]) -> str:
    """A point's overrides as the user wrote them: without the `++` open_group_keys added."""
    return " ".join(o[2:] if o.startswith("++") and o[2:].split("=", 1)[0] in OPENED else o for o in overrides)


def settle(cfg: DictConfig, overrides: Sequence[str]) -> tuple[list[str], dict[str, tuple[str, bool]]]:
    """The point's overrides with each `++group.x=v` plain where the point's group entry has option x, and left out
    where it has not; and for each such key (`model.x`): the entry's name and whether it has x."""
    settled, seen = [], {}
    for o in overrides:
        m = OPEN_KEY.match(o)
        node = cfg.get(m.group(1)) if m else None
        if m is None or node is None or "name" not in node:
            settled.append(o)  # not a group option, or no entry chosen (the check says so)
            continue
        group, option = m.groups()
        has = any(f.name == option for f in dataclasses.fields(GROUPS[group].get(node.name).config_cls))
        seen[o[2:].split("=", 1)[0]] = (node.name, has)
        if has:
            settled.append(o[2:])
    return settled, seen


def check_open_keys(seen: dict[str, dict[str, bool]], partial: str) -> None:
    """ConfigError for a group option that none of the swept entries has, or only some (unless `partial` is skip);
    `seen`: key -> {entry name: has it}."""
    problems = []
    for key, entries in seen.items():
        group, option = key.split(".", 1)
        have = sorted(name for name, has in entries.items() if has)
        lack = sorted(name for name, has in entries.items() if not has)
        if not have:
            classes = [GROUPS[group].get(name).config_cls for name in lack]
            options = {f"{group}.{f.name}" for cls in classes for f in dataclasses.fields(cls)}
            problems.append(f"{key} is an option of none of the swept {group}s ({', '.join(lack)})"
                            f"{closest(key, options)}")
        elif lack and partial != "skip":
            problems.append(f"{key} is an option of {', '.join(have)} but not of {', '.join(lack)}: add "
                            f"hydra.sweeper.partial_keys=skip to set it only where it exists")
        elif lack:
            print(f"seqbench: {key} set for {', '.join(have)} only (not an option of {', '.join(lack)})", flush=True)
    if problems:
        raise ConfigError("sweep refused, nothing was launched: " + "; ".join(problems)
                          + " (`python -m harness list` shows every option)")


def one_line(exc: Exception) -> str:
    """Why a point cannot run, as one line: a composition error as run.py prints it, others with their type."""
    if isinstance(exc, (CompactHydraException, OmegaConfBaseException)):
        return f"ConfigError: {composition_error(exc)}"
    return " ".join(f"{type(exc).__name__}: {exc}".split())


@contextlib.contextmanager
def stop_ends_sweep() -> Iterator[None]:
    """While points run in this process: a stop signal between trainings ends the sweep at once (during one, the
    trainer checkpoints first and run.py ends it), with 128 + the signal as the exit status."""
    def stop(signum: int) -> None:
        print(f"seqbench: stopped by {signal.Signals(signum).name}; rerun the same command to go on (points "
              f"already complete are skipped)", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    with stop_signals_handled(stop):
        yield


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
    info: dict[str, Any] = field(default_factory=dict)  # harness.preflight.describe's
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.info.get("status") == "complete" and not self.cfg.force

    def manifest_entry(self, job_num: int | None, sweep_id: str) -> dict[str, Any]:
        return {"run_id": self.info["run_id"], "task": self.info["task"], "model": self.info["model"],
                "seed": self.info["seed"], "overrides": self.overrides,
                "store": str(runner.store_for(self.cfg).root.resolve()),
                "runs": str((Path(self.cfg.paths.root) / "runs").resolve()), "job_num": job_num,
                "sweep": self.cfg.sweep, "sweep_id": sweep_id, "config": runner.plain_config(self.cfg)}


class Sweeper(BasicSweeper):
    """Hydra's basic sweeper, with zipped keys, a check of every point first, and finished points skipped."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 zip: Sequence[Sequence[str]] | None = None, wait: bool = True,  # noqa: A002 (Hydra's key)
                 partial_keys: str = "refuse") -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        # Its config is YAML (sweeps/hydra/sweeper/seqbench.yaml, found by path so that composing a config needs no
        # import of the sweep runner), so the types are checked here.
        if not isinstance(wait, bool):
            raise ConfigError(f"hydra.sweeper.wait={wait!r} must be true or false")
        if not all(isinstance(g, Sequence) and not isinstance(g, str) and all(isinstance(k, str) for k in g)
                   for g in (zip or [])):
            raise ConfigError(f"hydra.sweeper.zip={zip!r} must be a list of lists of keys, e.g. [[model,optim.lr]]")
        one_of("hydra.sweeper.partial_keys", partial_keys, PARTIAL_KEYS)
        self.zip = [list(group) for group in (zip or [])]
        self.wait = wait
        self.partial_keys = partial_keys

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        return job_config(self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides)))

    def plan(self, arguments: list[str]) -> list[Point]:
        """Every point, composed and checked; raises ConfigError naming every bad point."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._parse_config() + list(arguments))
        points = [Point(i, o) for i, o in enumerate(expand(overrides, self.zip))]
        seen: dict[str, dict[str, bool]] = {}
        for p in points:
            try:
                p.cfg = self.compose(p.overrides)
                settled, keys = settle(p.cfg, p.overrides)
                for key, (name, has) in keys.items():
                    seen.setdefault(key, {})[name] = has
                if len(settled) < len(p.overrides):
                    p.cfg = self.compose(settled)
                p.overrides = settled
            except Exception as exc:  # composition: unknown names, values of the wrong type
                p.error = one_line(exc)
        check_open_keys(seen, self.partial_keys)
        for p in points:
            if p.error is None:
                try:
                    p.info = describe(p.cfg, p.overrides)
                except Exception as exc:  # unknown keys, bad values, models that cannot be built
                    p.error = one_line(exc)
        bad = [p for p in points if p.error]
        if bad:
            lines = [f"#{p.num} {as_written(p.overrides)}: {p.error}" for p in bad]
            raise ConfigError(f"sweep refused: {len(bad)} of {plural(len(points), 'point')} cannot run, nothing was "
                              f"launched:\n  "
                              + "\n  ".join(lines) + "\nFix or drop them; `dry_run=true` checks a sweep without "
                              "running it.")
        return points

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._sweep(arguments)
        except UserError as exc:  # one message, no traceback, as run.py does for a single run
            exit_with(exc)

    def _sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        assert self.config is not None and self.launcher is not None
        points = self.plan(arguments)
        if any(p.cfg.dry_run for p in points):
            for p in points:
                print(json.dumps(p.info), flush=True)
            return []
        from sweeps.slurm import SlurmLauncher  # submitit: only for a sweep that launches

        if not self.wait and not isinstance(self.launcher, SlurmLauncher):
            raise ConfigError("hydra.sweeper.wait=false needs a launcher that can return before its jobs end: "
                              "add hydra/launcher=slurm (or slurm_local)")
        # Points that build the same run (the same run id: harness.identity) run once, e.g. an ablation axis's
        # value that is the baseline's.
        first = {}
        for p in points:
            first.setdefault(p.info["run_id"], p)
        todo = [p for p in first.values() if not p.done]
        # A stop signal from the moment the manifest exists ends the sweep cleanly (128 + the signal), also before
        # the first point starts; under SLURM the jobs are the scheduler's to stop.
        local = not isinstance(self.launcher, SlurmLauncher)
        with stop_ends_sweep() if local else contextlib.nullcontext():
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
            sweep_id = manifest.sweep_id(sweep_dir)
            job_nums = {p.info["run_id"]: i for i, p in enumerate(todo)}  # the launcher numbers them 0, 1, ...
            entries = [p.manifest_entry(job_nums.get(p.info["run_id"]), sweep_id) for p in points]
            manifest.write_points(sweep_dir, entries)
            same = len(points) - len(first)
            print(f"seqbench: sweep {sweep_id} of {plural(len(points), 'point')}: "
                  + (f"{same} the same run as another, " if same else "")
                  + f"{len(first) - len(todo)} already complete (skipped), {len(todo)} to run; "
                  f"`python -m sweeps status {sweep_dir}`", flush=True)
            if not local:
                self.launcher.wait = self.wait
            returns: list[Sequence[JobReturn]] = []
            size = self.max_batch_size or len(todo) or 1
            for start in range(0, len(todo), size):
                batch = todo[start:start + size]
                # Every record of the sweep carries its id: a key outside the run id (harness.config), so a point's
                # run id is the one checked above.
                launched = [[*p.overrides, f"sweep_id='{sweep_id}'"] for p in batch]
                returns.append(self.launcher.launch(launched, initial_job_idx=start))
        if self.wait:
            self.report_unfinished(sweep_dir, todo, [r for batch in returns for r in batch])
        return returns

    @staticmethod
    def report_unfinished(sweep_dir: Path, todo: Sequence[Point], results: Sequence[JobReturn]) -> None:
        """After every batch ran: UserError naming each run that did not complete, in the state its record (or,
        without one, `status`) gives, with what its job handed back; a rerun of the sweep runs only these."""
        rows = {r["run_id"]: r for r in status.sweep_status(sweep_dir)}
        failed = [(p, r) for p, r in zip(todo, results) if r.status == JobStatus.FAILED]
        if not failed:
            return
        shared = set.intersection(*(set(p.overrides) for p in todo)) if len(todo) > 1 else set()
        # Each job has ended: its record (or, without one, what SLURM said) is how.
        state = {rid: row["record"] or row["state"] for rid, row in rows.items()}
        lines = [f"{p.info['run_id']} ({as_written([o for o in p.overrides if o not in shared]) or 'no overrides'}): "
                 f"{state[p.info['run_id']]}: {type(r._return_value).__name__}: "
                 f"{' '.join(str(r._return_value).split())[:300]}" for p, r in failed]
        note = status.unconfirmed(list(rows.values()))
        raise UserError(f"{len(failed)} of {plural(len(todo), 'run')} did not complete (their records say why; "
                        f"`python -m sweeps status {sweep_dir}`):\n  " + "\n  ".join(lines)
                        + (f"\n({note})" if note else ""))
