"""`python -m reports --store DIR --out DIR [--sweep NAME]`: regenerate every table and figure."""

from __future__ import annotations

import argparse
import sys

from harness.errors import UserError, exit_with
from reports.build import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("--store", required=True, help="results store directory (one JSON record per run)")
    parser.add_argument("--out", required=True, help="directory to write the report into")
    parser.add_argument("--sweep", default=None, help="only records of this sweep")
    args = parser.parse_args(argv)
    try:
        path = build(args.store, args.out, args.sweep)
    except UserError as exc:
        exit_with(exc)
    print(f"seqbench: report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
