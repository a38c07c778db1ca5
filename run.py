"""seqbench entry point (a Hydra app).

    python run.py                                   the quickstart: a small leaderboard on generated ListOps
    python run.py task=listops model=transformer    train, evaluate, write one record
    python run.py -m task=listops model=transformer,multires seed=0,1,2     a sweep
    python run.py +experiment=multires_scifar       a paper preset from sweeps/experiment/
    python run.py job=bench ...                     the throughput and memory benchmark
    python -m harness list                          registered tasks and models with their options

A mistake in the command or config ends in one line and exit status 2 (a traceback with SEQBENCH_DEBUG=1 or
HYDRA_FULL_ERROR=1). A stop signal (SIGTERM, SIGINT, SIGUSR1, SIGUSR2) checkpoints the running run and ends the
process with 128 + the signal, a local sweep included; rerunning the same command resumes.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from harness import config as _config  # noqa: F401  (registers the run schema)
from harness.checkpoint import Preempted
from harness.config import closest
from harness.errors import ConfigError, UserError, exit_with
from harness.jobs import Report, dispatch
from harness.registry import MODELS, TASKS

# Registration must happen before Hydra composes the config, so that task=... and model=... resolve.
TASKS.discover()
MODELS.discover()

DEBUG = any(os.environ.get(name) == "1" for name in ("SEQBENCH_DEBUG", "HYDRA_FULL_ERROR"))


def write_report(report: Report) -> None:
    from reports.build import build  # pandas, scipy and matplotlib: only for a job that leaves a report

    path = build(report.store, report.out, sweep=report.sweep)
    print(f"seqbench: leaderboard written to {path}")
    if report.failed:
        raise UserError(f"{report.sweep} runs failed:\n  " + "\n  ".join(report.failed))


@hydra.main(version_base="1.3", config_path="sweeps", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        report = dispatch(cfg)
        if report is not None:
            write_report(report)
    except (UserError, OmegaConfBaseException) as exc:  # OmegaConf's: e.g. an interpolation that names no key
        if HydraConfig.get().mode == RunMode.MULTIRUN or DEBUG:
            raise  # a sweep's job: the launcher records the failure (exiting would leave a SLURM job without result)
        exit_with(exc if isinstance(exc, UserError) else ConfigError(omegaconf_message(exc)))
    except Preempted as exc:
        from harness.slurm import after_preemption

        after_preemption(exc.signum)  # in a submitit job on SLURM: hand over to submitit's requeue; elsewhere returns
        if os.environ.get("SUBMITIT_EXECUTOR"):
            raise  # a submitit job's result, for the launcher
        # One run, the quickstart, or a sweep's point run in this process: the whole process ends here.
        print(f"seqbench: {exc}; checkpoint written, rerun the same command to resume", file=sys.stderr, flush=True)
        sys.exit(128 + (exc.signum or signal.SIGTERM))  # as a process ended by that signal reports it


def hydra_message(exc: CompactHydraException) -> str:
    """Hydra's composition error (and the OmegaConf error under it) as one line that names the key and the fix."""
    cause = exc.__cause__
    if isinstance(exc, OverrideParseException):
        return f"cannot parse {exc.override!r}: {exc.message.splitlines()[0]} (the grammar: " \
               f"https://hydra.cc/docs/advanced/override_grammar/basic)"
    if isinstance(exc, MissingConfigException) and exc.options:
        missing = str(exc).splitlines()[0].removeprefix("In 'config': ")
        return f"{missing}; choose one of {', '.join(exc.options)}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        key, group = cause.full_key, cause.full_key.split(".")[0]
        if cause.object_type is dict and group in ("model", "task"):
            return f"{key} is an option of the {group}, but no {group} is chosen: add {group}=<name> (`python -m " \
                   f"harness list` shows them)"
        if dataclasses.is_dataclass(cause.object_type):
            parent = key.rpartition(".")[0]
            names = [f"{parent}.{f.name}" if parent else f.name for f in dataclasses.fields(cause.object_type)]
            return f"{key} is not an option{closest(key, names)}; `python -m harness list` shows every task and " \
                   f"model option"
    if isinstance(cause, OmegaConfBaseException):
        return omegaconf_message(cause)
    return " ".join(str(exc).split())


def omegaconf_message(exc: OmegaConfBaseException) -> str:
    """`key: what is wrong`, the first line of OmegaConf's message (the others repeat the key and its type)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{exc.full_key}: {first}" if exc.full_key else first


def cli() -> None:
    """`python run.py ARGS`: Hydra's app with every user error, Hydra's own included, as one line and exit 2."""
    if {"-m", "--multirun"} & set(sys.argv[1:]):
        from harness import hydra_plugins  # noqa: F401  (our sweeper and SLURM launcher, for Hydra: sweeps only)
        from harness.sweeper import open_group_keys

        sys.argv = open_group_keys(sys.argv)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises what it would print, and it is printed here as one line
    try:
        main()
    except (CompactHydraException, OmegaConfBaseException) as exc:
        if DEBUG:
            raise
        exit_with(ConfigError(hydra_message(exc) if isinstance(exc, CompactHydraException)
                              else omegaconf_message(exc)))


if __name__ == "__main__":
    cli()
