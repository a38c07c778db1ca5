"""LRA ListOps: nested MIN / MAX / MED / SM expressions over digits, classify the value (0-9).

Three parts, each usable alone:
- the generator, a reimplementation of `lra_benchmarks/data/listops.py` of the LRA release;
- the LRA release format: `basic_{train,val,test}.tsv`, tab-separated, header `Source  Target`;
- the task: tokenised as the LRA and S4 pipelines do it, padded, with true lengths for pooling.

Generate a set in the release format:

    python -m tasks.listops generate --out DIR --train 96000 --val 2000 --test 2000 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from harness.config import TaskConfig
from harness.errors import ConfigError, DataError
from harness.registry import TASKS
from harness.results import atomic_write_text
from tasks.base import Batch, Task, TaskSpec

MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)
VALUE_P = 0.25  # probability that a node below the maximum depth is a digit rather than an operator
SPLITS = ("train", "val", "test")
GENERATOR_VERSION = 1  # part of the cache key: bump when generated data would change

# The reference's tree: a digit, or nested pairs ((((op, a1), a2), ...), "]"), built left to right.
Tree = int | str | tuple[Any, Any]


@dataclass(frozen=True)
class GeneratorSettings:
    n_train: int = 96_000
    n_val: int = 2_000
    n_test: int = 2_000
    min_length: int = 500  # exclusive bounds on the number of tokens (digits, operators, brackets)
    max_length: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    seed: int = 0


def generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int) -> tuple[Tree, int]:
    """A random expression and its length in tokens, drawn exactly as the reference draws them."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.choice(range(10)), 1
    length = 2  # the operator and the closing bracket
    values = []
    for _ in range(rng.randint(2, max_args)):
        sub, sub_length = generate_tree(rng, depth + 1, max_depth, max_args)
        values.append(sub)
        length += sub_length
    tree: Tree = (rng.choice(OPERATORS), values[0])
    for value in values[1:]:
        tree = (tree, value)
    return (tree, END), length


def to_string(tree: Tree) -> str:
    """The reference's source string: every pair in parentheses, e.g. `( ( ( [MAX 2 ) 9 ) ] )`."""
    if isinstance(tree, tuple):
        return f"( {to_string(tree[0])} {to_string(tree[1])} )"
    return str(tree)


def apply(op: str, args: list[int]) -> int:
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == MED:
        return int(statistics.median(args))  # the reference's int(np.median(...)): halves round down
    if op == SUM_MOD:
        return sum(args) % 10
    raise ValueError(f"unknown operator {op!r}")


def to_value(tree: Tree) -> int:
    """The value of an expression tree."""
    if isinstance(tree, int):
        return tree
    args: list[int] = []
    node = tree[0]  # (((op, a1), a2), ...): peel the arguments off from the right
    while isinstance(node, tuple) and not (isinstance(node[0], str) and node[0] in OPERATORS):
        args.append(to_value(node[1]))
        node = node[0]
    op, first = node
    return apply(op, [to_value(first), *reversed(args)])


def generate(settings: GeneratorSettings, progress: bool = False) -> dict[str, list[tuple[str, int]]]:
    """Distinct expressions with min_length < length < max_length, split into train/val/test.

    The reference draws from Python's unseeded global `random` and splits in the iteration order of
    a set, so its splits are not reproducible; we draw from `random.Random(seed)` and split in the
    order of first appearance, which makes a set a function of its settings.
    """
    if settings.max_length - settings.min_length < 2:
        raise ConfigError(f"no length lies strictly between {settings.min_length} and {settings.max_length}")
    if settings.max_args < 2 or settings.max_depth < 1:
        raise ConfigError("max_args must be at least 2 and max_depth at least 1")
    rng = random.Random(settings.seed)
    wanted = settings.n_train + settings.n_val + settings.n_test
    seen: dict[str, int] = {}
    bar = tqdm(total=wanted, desc="generating ListOps", disable=not progress)
    while len(seen) < wanted:
        tree, length = generate_tree(rng, 1, settings.max_depth, settings.max_args)
        if settings.min_length < length < settings.max_length:
            source = to_string(tree)
            if source not in seen:
                seen[source] = to_value(tree)
                bar.update(1)
    bar.close()
    rows = list(seen.items())
    cut1, cut2 = settings.n_train, settings.n_train + settings.n_val
    return {"train": rows[:cut1], "val": rows[cut1:cut2], "test": rows[cut2:]}


def write_release(rows: dict[str, list[tuple[str, int]]], out: Path) -> None:
    """`basic_{split}.tsv` as the LRA release has them, each written atomically."""
    for split in SPLITS:
        lines = ["Source\tTarget"] + [f"{source}\t{target}" for source, target in rows[split]]
        atomic_write_text(out / f"basic_{split}.tsv", "\n".join(lines) + "\n")


LRA_HINT = ("The official data is the `listops-1000` folder of lra_release.gz (linked from the README of "
            "github.com/google-research/long-range-arena); point task.root at it, or leave task.root unset to "
            "generate ListOps with the LRA generator.")


def read_release(root: Path) -> dict[str, list[tuple[str, int]]]:
    """Read `basic_{train,val,test}.tsv` from `root`, checking the format of every row."""
    if not root.is_dir():
        raise DataError(f"ListOps directory {root} does not exist. {LRA_HINT}")
    rows: dict[str, list[tuple[str, int]]] = {}
    for split in SPLITS:
        path = root / f"basic_{split}.tsv"
        if not path.is_file():
            raise DataError(f"{path} is missing: a ListOps directory holds basic_train.tsv, basic_val.tsv and "
                            f"basic_test.tsv. {LRA_HINT}")
        with path.open(newline="") as f:
            reader = csv.reader(f, delimiter="\t")
            header = next(reader, None)
            if header != ["Source", "Target"]:
                raise DataError(f"{path}: expected the tab-separated columns ['Source', 'Target'], found {header}. "
                                f"{LRA_HINT}")
            split_rows = []
            for line, row in enumerate(reader, start=2):
                if len(row) != 2 or not row[1].strip().isdigit() or not 0 <= int(row[1]) <= 9:
                    raise DataError(f"{path}, line {line}: expected an expression and a label 0-9, found {row}")
                split_rows.append((row[0], int(row[1])))
        if not split_rows:
            raise DataError(f"{path} holds no examples. {LRA_HINT}")
        rows[split] = split_rows
    return rows


# Fixed ids, so that a model's embedding does not depend on the data it was built from. The S4
# pipeline orders symbols by training frequency; the vocabulary (and every parameter count) is the same.
SPECIALS = ("<pad>", "<unk>", "<eos>")
SYMBOLS = (MIN, MAX, MED, SUM_MOD, "X", *map(str, range(10)))
VOCAB = {token: i for i, token in enumerate(SPECIALS + SYMBOLS)}
PAD, UNK, EOS = 0, 1, 2


def tokenize(source: str, l_max: int, append_eos: bool = True) -> list[int]:
    """As the LRA and S4 pipelines: ']' becomes 'X', parentheses are dropped, truncate, then <eos>."""
    tokens = source.replace("]", "X").replace("(", "").replace(")", "").split()
    ids = [VOCAB.get(t, UNK) for t in tokens]
    if append_eos:
        return ids[: l_max - 1] + [EOS]
    return ids[:l_max]


class ListOpsDataset(Dataset):
    def __init__(self, rows: list[tuple[str, int]], l_max: int, append_eos: bool):
        self.items = [(torch.tensor(tokenize(s, l_max, append_eos)), t) for s, t in rows]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.items[i]


def make_collate(pad_to: int | None):  # noqa: ANN201
    """Right-pad with <pad> to the longest sequence of the batch, or to `pad_to`."""

    def collate(items: list[tuple[torch.Tensor, int]]) -> Batch:
        lengths = torch.tensor([len(x) for x, _ in items])
        width = pad_to or int(lengths.max())
        x = torch.full((len(items), width), PAD, dtype=torch.long)
        for i, (ids, _) in enumerate(items):
            x[i, : len(ids)] = ids
        return {"x": x, "y": torch.tensor([t for _, t in items]), "lengths": lengths}

    return collate


@dataclass
class ListOpsConfig(TaskConfig):
    """LRA ListOps: generated with the LRA generator unless `root` points at the official release."""

    name: str = "listops"
    n_train: int = 96_000
    n_val: int = 2_000
    n_test: int = 2_000
    min_length: int = 500
    max_length: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    seed: int = 0  # the generator's seed (the run's seed is separate)
    l_max: int = 2048  # tokens the model sees at most, <eos> included
    append_eos: bool = True  # the S4 pipeline appends <eos>; LRA's own does not
    pad_to_max: bool = False  # pad every batch to l_max (MultiresNet's BatchNorm statistics see that padding)


def settings_of(cfg: ListOpsConfig) -> GeneratorSettings:
    return GeneratorSettings(cfg.n_train, cfg.n_val, cfg.n_test, cfg.min_length, cfg.max_length, cfg.max_depth,
                             cfg.max_args, cfg.seed)


def generated_dir(data_root: Path, settings: GeneratorSettings) -> Path:
    key = json.dumps({**asdict(settings), "version": GENERATOR_VERSION}, sort_keys=True)
    return data_root / f"generated-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def ensure_generated(data_root: Path, settings: GeneratorSettings) -> Path:
    """The cached release-format copy of a generated set, generated on first use."""
    out = generated_dir(data_root, settings)
    # settings.json is written last: a directory without it is an interrupted generation.
    if not (out / "settings.json").is_file():
        write_release(generate(settings, progress=True), out)
        atomic_write_text(out / "settings.json", json.dumps(asdict(settings), indent=1) + "\n")
    return out


@TASKS.register("listops", ListOpsConfig)
def build(cfg: ListOpsConfig, data_root: Path) -> Task:
    """LRA ListOps: generated with the LRA generator unless `root` points at the official release."""
    if cfg.root:
        source: dict[str, Any] = {"source": "files", "root": str(cfg.root)}
        rows = read_release(Path(cfg.root))
    else:
        settings = settings_of(cfg)
        directory = ensure_generated(data_root, settings)
        source = {"source": "generated", "dir": str(directory), **asdict(settings)}
        rows = read_release(directory)
    splits = {split: ListOpsDataset(rows[split], cfg.l_max, cfg.append_eos) for split in SPLITS}
    spec = TaskSpec(name="listops", input="tokens", seq_len=cfg.l_max, n_outputs=10, metric="accuracy",
                    vocab_size=len(VOCAB), pad_id=PAD, variable_length=True)
    info = {**source, "sizes": {split: len(ds) for split, ds in splits.items()}}
    return Task(spec, splits, collate=make_collate(cfg.l_max if cfg.pad_to_max else None), info=info)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.listops")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write basic_{train,val,test}.tsv in the LRA release format")
    gen.add_argument("--out", type=Path, required=True)
    defaults = GeneratorSettings()
    for flag, field in (("--train", "n_train"), ("--val", "n_val"), ("--test", "n_test"), ("--seed", "seed"),
                        ("--min-length", "min_length"), ("--max-length", "max_length"),
                        ("--max-depth", "max_depth"), ("--max-args", "max_args")):
        gen.add_argument(flag, dest=field, type=int, default=getattr(defaults, field))
    args = parser.parse_args(argv)
    settings = GeneratorSettings(**{k: v for k, v in vars(args).items() if k in asdict(defaults)})
    try:
        write_release(generate(settings, progress=True), args.out)
    except ConfigError as exc:
        parser.error(str(exc))
    print(f"wrote {args.out}/basic_{{train,val,test}}.tsv")


if __name__ == "__main__":
    main()
