"""seqbench entry point (a Hydra app).

    python run.py                                   the quickstart: a small leaderboard on generated ListOps
    python run.py task=listops model=transformer    train, evaluate, write one record
    python run.py -m task=listops model=transformer,multires seed=0,1,2     a sweep
    python run.py +experiment=multires_scifar       a paper preset from sweeps/experiment/
    python run.py job=bench ...                     the throughput and memory benchmark
    python -m harness list                          registered tasks and models with their options

A mistake in the command or config, or a folder that cannot be written, ends in one line and exit status 2 (a
traceback with SEQBENCH_DEBUG=1 or HYDRA_FULL_ERROR=1). A stop signal (SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP)
checkpoints the running run and ends the process with 128 + the signal, a local sweep included; rerunning the same
command resumes.
"""

from __future__ import annotations

import os
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from harness.checkpoint import Preempted
from harness.config import composition_error  # importing harness.config registers the run schema
from harness.errors import ConfigError, UserError, exit_with
from harness.files import write_error
from harness.jobs import Report, dispatch
from harness.registry import MODELS, TASKS
from sweeps import manifest  # noqa: F401  (the resolver that names each sweep's folder: sweeps/config.yaml)

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
        exit_with(exc if isinstance(exc, UserError) else ConfigError(composition_error(exc)))
    except Preempted as exc:
        from sweeps.slurm import after_preemption

        after_preemption(exc.signum)  # in a submitit job on SLURM: hand over to submitit's requeue; elsewhere returns
        if os.environ.get("SUBMITIT_EXECUTOR"):
            raise  # a submitit job's result, for the launcher
        # One run, the quickstart, or a sweep's point run in this process: the whole process ends here.
        written = "checkpoint written, " if exc.checkpointed else ""
        say(f"seqbench: {exc}; {written}rerun the same command to resume")
        sys.exit(128 + (exc.signum or signal.SIGTERM))  # as a process ended by that signal reports it


def say(line: str) -> None:
    """A last line on stderr, which may be a terminal that was closed (SIGHUP): then it is lost, not an error."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def cli() -> None:
    """`python run.py ARGS`: Hydra's app with every user error, Hydra's own included, as one line and exit 2."""
    if sys.argv[1:] in (["--help"], ["-h"]):
        # Our own help: Hydra's renders the whole config store (most of a second) to say less than this.
        print(__doc__.strip())
        print(f"\ntasks:  {', '.join(TASKS.names())}\nmodels: {', '.join(MODELS.names())}")
        print("presets: sweeps/experiment/*.yaml; every option: python -m harness list; Hydra's help: --hydra-help")
        return
    if {"-m", "--multirun"} & set(sys.argv[1:]):
        from sweeps import hydra_plugins  # noqa: F401  (our sweeper and SLURM launcher, for Hydra: sweeps only)
        from sweeps.sweeper import open_group_keys

        sys.argv = open_group_keys(sys.argv)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises what it would print, and it is printed here as one line
    try:
        main()
    except (CompactHydraException, OmegaConfBaseException) as exc:
        if DEBUG:
            raise
        exit_with(ConfigError(composition_error(exc)))
    except OSError as exc:  # e.g. Hydra creating its output folder under a paths.root that cannot be written
        error = write_error(exc)
        if error is None or DEBUG:
            raise
        exit_with(error)
    except KeyboardInterrupt:  # a second Ctrl-C during training, or one before any run started
        if DEBUG:
            raise
        say("seqbench: interrupted at once (Ctrl-C): no checkpoint written for the step it was in; rerun the same "
            "command to resume from the last one")
        sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
    cli()
