"""How hard each ListOps split is for a model that has learnt only the label priors: the majority label of the
training split, and the majority label of each outermost operator (`[MAX` -> 9, `[SM` -> ...), scored on val,
test and a fresh draw of 10,000 from the same generator (seed 7). No weights needed: the Transformer's run left
none (its 36 MB checkpoint could not be carried back), and a model near 36% is close to such a prior.

    PYTHONPATH=. python reports/measured/h100-2026-12-07e/listops/checks/label_prior.py DATA

DATA is `paths.data`/listops: the task finds the run's generated LRA-size set there (seed 0), or makes it, and
makes the fresh draw beside it. Seconds on two cores.
"""

import csv
import sys
from collections import Counter
from pathlib import Path

from tasks import listops


def rows(path: Path) -> list[tuple[str, int]]:
    """(outermost operator, label) of each example of an LRA TSV."""
    with open(path, newline="") as f:
        return [(src.replace("(", "").split()[0], int(label)) for src, label in list(csv.reader(f, delimiter="\t"))[1:]]


def split_files(data: Path, **settings: int) -> Path:
    return Path(listops.build(listops.ListOpsConfig(**settings), data).info["dir"])


def main(data: Path) -> None:
    release = split_files(data)
    fresh = split_files(data, seed=7, n_train=0, n_val=0, n_test=10_000)
    train = rows(release / "basic_train.tsv")
    overall = Counter(y for _, y in train).most_common(1)[0][0]
    by_op: dict[str, Counter] = {}
    for op, y in train:
        by_op.setdefault(op, Counter())[y] += 1
    prior = {op: c.most_common(1)[0][0] for op, c in by_op.items()}
    print(f"train ({len(train)}): majority label {overall}; per outermost operator "
          + ", ".join(f"{op} -> {y}" for op, y in sorted(prior.items())))
    for name, path in (("train", release / "basic_train.tsv"), ("val", release / "basic_val.tsv"),
                       ("test", release / "basic_test.tsv"), ("fresh 10,000 (seed 7)", fresh / "basic_test.tsv")):
        split = rows(path)
        n = len(split)
        labels = Counter(y for _, y in split)
        ops = Counter(op for op, _ in split)
        majority = sum(y == overall for _, y in split) / n
        per_op = sum(y == prior[op] for op, y in split) / n
        se = (per_op * (1 - per_op) / n) ** 0.5
        print(f"{name} ({n}): majority-label accuracy {100 * majority:.2f}%, per-operator prior "
              f"{100 * per_op:.2f}% (SE {100 * se:.2f})")
        print("  labels " + ", ".join(f"{y} {100 * labels[y] / n:.1f}%" for y in range(10)))
        print("  outermost " + ", ".join(f"{op} {100 * ops[op] / n:.1f}%" for op in sorted(ops)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
