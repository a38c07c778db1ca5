"""`python -m harness list`: every option a command line can set, with its default and what it is for: the run's
own (job, seed, sweep, ...), each group of the run configuration (train, optim, paths, bench, quickstart), the
sweeper's (`hydra.sweeper.*`), and every registered task and model."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from pathlib import Path
from typing import get_type_hints

import yaml

from harness.config import RunConfig
from harness.registry import MODELS, TASKS, Entry

SWEEPER_YAML = Path(__file__).resolve().parent.parent / "sweeps" / "hydra" / "sweeper" / "seqbench.yaml"
LAUNCHERS = "sweeps/hydra/launcher/"


def described(lines: list[str], pattern: str) -> dict[str, str]:
    """{key: what it is for} for each line matching `pattern` (group 1: the key): its own comment, else the comment
    lines right above it."""
    found, above = {}, []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        match = re.match(pattern, line)
        if match:
            inline = line.split("#", 1)[1].strip() if "#" in line else ""
            if inline or above:
                found[match.group(1)] = inline or " ".join(above)
        above = []
    return found


def comments(cls: type) -> dict[str, str]:
    """{field: what it is for} from the dataclass's source comments."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    return described(source.splitlines(), r"\s+(\w+): ")


def option_lines(cls: type, prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    """`prefix.field: type = default  # comment` for each field of a config dataclass."""
    notes = comments(cls)
    rows = Entry(cls.__name__, cls, None, "").options()  # (field, type, default), as for a registered entry
    return [f"      {prefix}{field}: {type_name} = {default!r}" + (f"  # {notes[field]}" if field in notes else "")
            for field, type_name, default in rows if field not in skip]


def sweeper_lines() -> list[str]:
    """The sweeper's options from its YAML (sweeps/ configures it; the harness does not import sweeps/)."""
    text = SWEEPER_YAML.read_text()
    values = yaml.safe_load(text)
    notes = described(text.splitlines(), r"(\w+):")
    return [f"      hydra.sweeper.{key}: {value!r}" + (f"  # {notes[key]}" if key in notes else "")
            for key, value in values.items() if not key.startswith("_")]


def list_registered() -> str:
    sections = {name: cls for name, cls in get_type_hints(RunConfig).items() if dataclasses.is_dataclass(cls)}
    lines = ["run (top-level keys):"]
    lines += option_lines(RunConfig, "", skip=("task", "model", *sections))
    for name, cls in sections.items():
        lines.append(f"{name}:")
        lines += option_lines(cls, f"{name}.")
    lines.append("sweeper (python run.py -m ...):")
    lines += sweeper_lines()
    lines.append(f"      launchers: hydra/launcher=local | slurm | slurm_local, their options in {LAUNCHERS}")
    for registry in (TASKS, MODELS):
        lines.append(f"{registry.kind}s:")
        for name in registry.names():
            entry = registry.get(name)
            lines.append(f"  {name}: {entry.doc}")
            lines += option_lines(entry.config_cls, f"{registry.kind}.", skip=("name",))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m harness")
    parser.add_argument("command", choices=["list"], help="list every option: the run's, the sweeper's, and those of "
                                                          "every registered task and model")
    parser.parse_args()
    print(list_registered())


if __name__ == "__main__":
    main()
