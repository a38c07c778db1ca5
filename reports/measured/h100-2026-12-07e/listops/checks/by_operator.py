"""A ListOps run's best weights on the val and test splits, example by example, broken down by the expression's
outermost operator, its label and its length (why test is 4.8 points below val for S4D, 3.5 for MultiresNet).

    PYTHONPATH=. python reports/measured/h100-2026-12-07e/listops/checks/by_operator.py ROOT DATA [RUN]

ROOT holds store/ and runs/ (this folder's ../store and ../runs); DATA is `paths.data`/listops, where the task
finds the generated LRA-size set of the run, or makes it (30 s on two cores); RUN is the run's id (default: the
S4D run, whose output is by_operator.log; by_operator_multires.log is the MultiresNet run's). Runs on the CPU in
about 5 minutes (S4D).
"""

import csv
import dataclasses
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from harness.batches import EpochBatches, loader
from harness.config import TrainConfig
from harness.evaluate import load_tested, spec_of
from harness.registry import MODELS, TASKS

S4D_RUN = "listops-s4d-687f90846923"


def main(root: Path, data: Path, run: str = S4D_RUN) -> None:
    rec = json.loads((root / "store" / f"{run}.json").read_text())
    cfg = rec["config"]
    task = TASKS.build(OmegaConf.create({**cfg["task"], "root": None}), data)
    model = MODELS.build(OmegaConf.create(cfg["model"]), spec_of(cfg["task"]))
    model.load_state_dict(load_tested(rec, root))
    model.eval()
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    train = TrainConfig(**{**{k: v for k, v in cfg["train"].items() if k in known}, "device": "cpu"})
    with open(Path(task.info["dir"]) / "basic_train.tsv", newline="") as f:
        tops = [row[0].replace("(", "").split()[0] for row in list(csv.reader(f, delimiter="\t"))[1:]]
    print("train: outermost operator " + ", ".join(f"{op} {100 * tops.count(op) / len(tops):.1f}%"
                                                  for op in sorted(set(tops))) + f" of {len(tops)}")
    for split in ("val", "test"):
        right: list[bool] = []
        with torch.no_grad():
            for batch in loader(task, split, train, EpochBatches(len(task.splits[split]), 50, shuffle=False),
                                torch.device("cpu")):
                right += (model(batch["x"], lengths=batch["lengths"]).argmax(-1) == batch["y"]).tolist()
        with open(Path(task.info["dir"]) / f"basic_{split}.tsv", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))[1:]
        groups: dict[str, dict] = {"operator": {}, "label": {}, "tokens": {}}
        for (source, label), ok in zip(rows, right, strict=True):
            tokens = source.replace("(", "").replace(")", "").split()
            for name, key in (("operator", tokens[0]), ("label", int(label)), ("tokens", len(tokens) // 500 * 500)):
                groups[name].setdefault(key, []).append(ok)
        print(f"{split}: accuracy {sum(right) / len(right):.4f} of {len(right)}")
        for name, by in groups.items():
            cells = [f"{f'{k}-{k + 499}' if name == 'tokens' else k} {100 * sum(v) / len(v):.1f}% of {len(v)}"
                     for k, v in sorted(by.items())]
            print(f"  by {name}: " + ", ".join(cells))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4])
