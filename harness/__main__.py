"""`python -m harness list`: every registered task and model with its options and defaults."""

from __future__ import annotations

import argparse

from harness.registry import MODELS, TASKS


def list_registered() -> str:
    lines = []
    for registry in (TASKS, MODELS):
        lines.append(f"{registry.kind}s:")
        for name in registry.names():
            entry = registry.get(name)
            lines.append(f"  {name}: {entry.doc}")
            for field, type_name, default in entry.options():
                if field != "name":
                    lines.append(f"      {registry.kind}.{field}: {type_name} = {default!r}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m harness")
    parser.add_argument("command", choices=["list"], help="list registered tasks and models with their options")
    parser.parse_args()
    print(list_registered())


if __name__ == "__main__":
    main()
