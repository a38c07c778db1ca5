"""`python -m reports --store DIR --out DIR [--sweep NAME] [--pool]`: regenerate every table and figure.

A mistake (a missing store, a full disk) ends in one line and exit status 2; a stop signal (SIGTERM, SIGINT,
SIGHUP, SIGUSR1, SIGUSR2) in one line and 128 + the signal. Either way the folder holds the previous report or the
new one whole, never part of one.
"""

from __future__ import annotations

import argparse
import sys

from harness.errors import UserError, exit_with
from reports.build import build
from reports.output import Stopped, stops_raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="results store directory (one JSON record per run)")
    parser.add_argument("--out", required=True, help="directory to write the report into")
    parser.add_argument("--sweep", default=None, help="only records of this sweep (by name)")
    parser.add_argument("--pool", action="store_true", help="one ablation per sweep name, pooling every invocation "
                        "of it (default: one per invocation, told apart by their sweep ids)")
    args = parser.parse_args(argv)
    try:
        with stops_raise():
            path = build(args.store, args.out, args.sweep, pool=args.pool)
    except UserError as exc:
        exit_with(exc)
    except Stopped as exc:
        state = "the new report was written whole before it" if exc.written else \
            "the previous report there is unchanged; rerun the same command to build it"
        print(f"seqbench: {exc} while building the report in {args.out}: {state}", file=sys.stderr)
        return 128 + exc.signum
    print(f"seqbench: report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
