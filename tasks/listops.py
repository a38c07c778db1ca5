"""LRA ListOps: nested MIN / MAX / MED / SM expressions over digits, classify the value (0-9).

ListOps is from Nangia & Bowman ("ListOps: A Diagnostic Dataset for Latent Tree Learning", NAACL SRW 2018); its
long version is a task of the Long Range Arena (Tay et al., ICLR 2021), whose release, lra_release.gz, and
generator, google-research/long-range-arena `lra_benchmarks/data/listops.py`, are the published data and code.
Three parts, each usable alone:
- the generator, a reimplementation of that `listops.py`;
- the LRA release format: `basic_{train,val,test}.tsv`, tab-separated, header `Source<TAB>Target`;
- the task: tokenised as the LRA pipeline (`lra_benchmarks/listops/input_pipeline.py`) and S4's
  (state-spaces/s4 `src/dataloaders/lra.py`, class ListOps) do it, padded, with true lengths for pooling.

Files are checked as they are read: a DataError names the file and line of a row that is not an expression, a tab
and an ASCII digit 0-9, of bytes that are not UTF-8, and of a token outside the vocabulary (`task.allow_unk=true`
reads those as <unk>, as S4's vocabulary would). A generated set is cached with a manifest written last (each
file's rows, bytes and sha256); a set whose files do not match it (a crashed generation, a file cut or edited) is
generated again, never read. The record's data fingerprint is the settings and generator version of a generated
set, or the sha256 of the three files read.

Generate a set in the release format:

    python -m tasks.listops generate --out DIR --train 96000 --val 2000 --test 2000 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import random
import statistics
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from harness.config import TaskConfig, positive
from harness.errors import ConfigError, DataError
from harness.files import atomic_write
from harness.registry import TASKS
from harness.task import Batch, Task, TaskSpec
from tasks._fingerprint import combine
from tasks._text import decode

MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)
VALUE_P = 0.25  # probability that a node below the maximum depth is a digit rather than an operator
SPLITS = ("train", "val", "test")
GENERATOR_VERSION = 1  # part of the cache key: bump when generated data would change


@dataclass(frozen=True)
class GeneratorSettings:
    """The LRA generator's settings; their defaults are the LRA release's."""

    n_train: int = 96_000
    n_val: int = 2_000
    n_test: int = 2_000
    # Exclusive bounds on the tokens as the reference counts them: digits, operators and ']', no parentheses.
    min_length: int = 500
    max_length: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    seed: int = 0


@dataclass
class ListOpsConfig(TaskConfig):
    """LRA ListOps: generated with the LRA generator unless `root` points at the official release."""

    name: str = "listops"
    n_train: int = GeneratorSettings.n_train
    n_val: int = GeneratorSettings.n_val
    n_test: int = GeneratorSettings.n_test
    min_length: int = GeneratorSettings.min_length
    max_length: int = GeneratorSettings.max_length
    max_depth: int = GeneratorSettings.max_depth
    max_args: int = GeneratorSettings.max_args
    seed: int = GeneratorSettings.seed  # the generator's seed (the run's seed is separate)
    l_max: int = 2048  # tokens the model sees at most, <eos> included
    append_eos: bool = True  # the S4 pipeline appends <eos>; LRA's own does not
    pad_to_max: bool = False  # pad every batch to l_max (MultiresNet's BatchNorm statistics see that padding)
    allow_unk: bool = False  # map tokens outside the ListOps vocabulary to <unk> instead of refusing the file

    def __post_init__(self) -> None:
        positive("task.l_max", self.l_max, integer=True)
        if self.l_max < 2 and self.append_eos:
            raise ConfigError(f"task.l_max={self.l_max} leaves no room for a token and <eos>; the S4 setting is 2048")
        if not self.root:  # generated: settings under which generation could never finish are refused now
            check_settings(settings_of(self), prefix="task.")


def settings_of(cfg: ListOpsConfig) -> GeneratorSettings:
    """The generator's settings are the config's fields of the same names."""
    return GeneratorSettings(**{f.name: getattr(cfg, f.name) for f in fields(GeneratorSettings)})


# ----------------------------------------------------------------------------------------------------------------
# The generator


# The reference's tree: a digit, or nested pairs ((((op, a1), a2), ...), "]"), built left to right.
Tree = int | str | tuple[Any, Any]


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


def longest_tree(max_depth: int, max_args: int) -> int:
    """The most tokens a tree can have: every node above max_depth an operator with max_args arguments."""
    length = 1  # a node at max_depth is always a digit
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def check_settings(settings: GeneratorSettings, prefix: str = "") -> None:
    """Reject settings under which generation could never finish, before it starts; `prefix` + field names
    the option in messages (e.g. "task.")."""
    s, k = settings, prefix
    if min(s.n_train, s.n_val, s.n_test) < 1:
        raise ConfigError(f"ListOps needs at least one example per split, got {k}n_train/{k}n_val/{k}n_test = "
                          f"{s.n_train}/{s.n_val}/{s.n_test}")
    if s.max_args < 2 or s.max_depth < 1:
        raise ConfigError(f"ListOps {k}max_args must be at least 2 and {k}max_depth at least 1, got "
                          f"{k}max_args={s.max_args}, {k}max_depth={s.max_depth}")
    if s.max_length - s.min_length < 2:
        raise ConfigError(f"no ListOps length lies strictly between {k}min_length={s.min_length} and "
                          f"{k}max_length={s.max_length}; widen the window")
    longest = longest_tree(s.max_depth, s.max_args)
    if longest <= s.min_length:
        raise ConfigError(f"ListOps trees with {k}max_depth={s.max_depth}, {k}max_args={s.max_args} have "
                          f"at most {longest} tokens, not more than {k}min_length={s.min_length}; "
                          f"lower {k}min_length or raise {k}max_depth/{k}max_args")


# Draws in a row without a new example after which the settings are taken to admit too few distinct
# expressions (the default settings accept about one draw in twelve).
STALL_LIMIT = 1_000_000


def generate(settings: GeneratorSettings, progress: bool = False) -> dict[str, list[tuple[str, int]]]:
    """Distinct expressions with min_length < length < max_length, split into train/val/test.

    Seeding: the reference draws from Python's module-level `random`, which it never seeds (so it is
    seeded from the OS at import), and splits in the iteration order of a `set` of trees; its data
    cannot be regenerated. We make the same draws in the same order from `random.Random(seed)` (for
    one seed, `random.seed(seed)` followed by the reference's `generate_tree` gives the same trees) and
    split in the order of first appearance, so a set is a function of its settings. Deduplicating by
    source string is deduplicating by tree: the rendering is one-to-one.
    """
    check_settings(settings)
    rng = random.Random(settings.seed)
    wanted = settings.n_train + settings.n_val + settings.n_test
    seen: dict[str, int] = {}
    stalled = 0
    bar = tqdm(total=wanted, desc="generating ListOps", unit="expr", disable=not progress)
    while len(seen) < wanted:
        tree, length = generate_tree(rng, 1, settings.max_depth, settings.max_args)
        stalled += 1
        if settings.min_length < length < settings.max_length:
            source = to_string(tree)
            if source not in seen:
                seen[source] = to_value(tree)
                stalled = 0
                bar.update(1)
        if stalled >= STALL_LIMIT:
            bar.close()
            raise ConfigError(f"ListOps generation found only {len(seen)} of {wanted} distinct expressions with "
                              f"{settings.min_length} < tokens < {settings.max_length} after {STALL_LIMIT:,} "
                              f"more draws; widen the length window, raise max_depth/max_args or ask for fewer")
    bar.close()
    rows = list(seen.items())
    cut1, cut2 = settings.n_train, settings.n_train + settings.n_val
    return {"train": rows[:cut1], "val": rows[cut1:cut2], "test": rows[cut2:]}


# ----------------------------------------------------------------------------------------------------------------
# The LRA release format


def write_release(rows: dict[str, list[tuple[str, int]]], out: Path) -> dict[str, dict[str, Any]]:
    """`basic_{split}.tsv` as the reference writes them, each atomically; returns each file's rows, bytes and sha256.

    The reference uses `csv.writer(f, delimiter='\\t')` (excel dialect), so rows end in CRLF; so do ours.
    """
    written = {}
    for split in SPLITS:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t")
        writer.writerow(["Source", "Target"])
        writer.writerows(rows[split])
        data = buffer.getvalue().encode()
        atomic_write(out / f"basic_{split}.tsv", data)
        written[f"basic_{split}.tsv"] = {"rows": len(rows[split]), "bytes": len(data),
                                         "sha256": hashlib.sha256(data).hexdigest()}
    return written


LRA_HINT = ("The official data is the `listops-1000` folder of lra_release.gz (linked from the README of "
            "github.com/google-research/long-range-arena); point task.root at it, or leave task.root unset to "
            "generate ListOps with the LRA generator.")
LABELS = frozenset("0123456789")  # not str.isdigit, which also passes other scripts' digits such as '\u0663'


@dataclass
class SplitFile:
    """One `basic_*.tsv` as read: its examples, the line of each (for messages), its size and sha256."""

    path: Path
    rows: list[tuple[str, int]]
    lines: list[int]
    bytes: int
    sha256: str

    def __len__(self) -> int:
        return len(self.rows)


def _short(row: list[str]) -> str:
    """A row for an error message: long expressions cut to their first characters."""
    return repr([cell if len(cell) <= 60 else cell[:60] + "..." for cell in row])


def read_split(path: Path) -> SplitFile:
    """The examples of one `basic_*.tsv`, every row checked; DataErrors name the file and the line."""
    raw = path.read_bytes()
    text = decode(raw, path, f"the LRA release is ASCII text. {LRA_HINT}")
    # csv refuses fields longer than its limit (131,072 characters by default); no field is longer than the file.
    if len(text) > csv.field_size_limit():
        csv.field_size_limit(len(text))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    rows, lines = [], []
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty: expected a header `Source<TAB>Target` and one example per line. "
                            f"{LRA_HINT}")
        if header != ["Source", "Target"]:
            raise DataError(f"{path}: expected the tab-separated columns ['Source', 'Target'], found "
                            f"{_short(header)}. {LRA_HINT}")
        for row in reader:
            if not row:  # a blank line, e.g. at the end of a hand-edited file
                continue
            if len(row) != 2 or row[1].strip() not in LABELS:
                raise DataError(f"{path}, line {reader.line_num}: expected an expression and a label 0-9 (an ASCII "
                                f"digit) separated by a tab, found {_short(row)}")
            rows.append((row[0], int(row[1])))
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: not in the tab-separated LRA format ({e})") from None
    if not rows:
        raise DataError(f"{path} holds a header but no examples. {LRA_HINT}")
    return SplitFile(path, rows, lines, len(raw), hashlib.sha256(raw).hexdigest())


def read_release(root: Path) -> dict[str, SplitFile]:
    """Read `basic_{train,val,test}.tsv` from `root`, checking the format of every row."""
    if not root.is_dir():
        raise DataError(f"ListOps directory {root} does not exist. {LRA_HINT}")
    splits: dict[str, SplitFile] = {}
    for split in SPLITS:
        path = root / f"basic_{split}.tsv"
        if not path.is_file():
            raise DataError(f"{path} is missing: a ListOps directory holds basic_train.tsv, basic_val.tsv and "
                            f"basic_test.tsv. {LRA_HINT}")
        splits[split] = read_split(path)
    return splits


def release_fingerprint(splits: dict[str, SplitFile]) -> dict[str, Any]:
    """The data fingerprint of a release: one sha256 over the three files' names, sizes and sha256."""
    files = sorted((s.path.name, s.bytes, s.sha256) for s in splits.values())
    return {"sha256": combine(files), "files": len(files), "bytes": sum(size for _, size, _ in files)}


# ----------------------------------------------------------------------------------------------------------------
# Tokens


# Fixed ids, so that a model's embedding does not depend on the data it was built from. The S4
# pipeline orders symbols by training frequency; the vocabulary (and every parameter count) is the same.
SPECIALS = ("<pad>", "<unk>", "<eos>")
SYMBOLS = (MIN, MAX, MED, SUM_MOD, "X", *map(str, range(10)))
VOCAB = {token: i for i, token in enumerate(SPECIALS + SYMBOLS)}
PAD, UNK, EOS = 0, 1, 2

# LRA's `rename_close_brackets` and S4's `listops_tokenizer`: ']' -> 'X' (so that the LRA's text encoder keeps it),
# '(' and ')' dropped, then whitespace split. Source tokens are looked up with ']' standing for 'X'; the special
# tokens are not source tokens.
_DROP_PARENTHESES = str.maketrans("", "", "()")
SOURCE_IDS = {**{token: VOCAB[token] for token in SYMBOLS}, END: VOCAB["X"]}


def token_ids(source: str) -> list[int]:
    """Every token of a source expression as its id; tokens outside the vocabulary are <unk>."""
    return [SOURCE_IDS.get(t, UNK) for t in source.translate(_DROP_PARENTHESES).split()]


def fit(ids: list[int], l_max: int, append_eos: bool) -> list[int]:
    """As the S4 pipeline: truncate to l_max - 1, then <eos>; as LRA's: truncate to l_max."""
    return ids[: l_max - 1] + [EOS] if append_eos else ids[:l_max]


def tokenize(source: str, l_max: int, append_eos: bool = True) -> list[int]:
    return fit(token_ids(source), l_max, append_eos)


class ListOpsDataset(Dataset):
    """Token ids kept as uint8 (18 symbols), about 100 MB for the full training split instead of 800 MB.

    A token outside the vocabulary is refused, naming its file and line, unless `allow_unk` reads it as <unk>.
    """

    def __init__(self, split: SplitFile, l_max: int, append_eos: bool, allow_unk: bool = False,
                 desc: str = "tokenising"):
        self.items = []
        bar = tqdm(zip(split.rows, split.lines), total=len(split), desc=desc, unit="expr", disable=len(split) < 10_000)
        for (source, target), line in bar:
            ids = token_ids(source)
            if not allow_unk and UNK in ids:
                token = source.translate(_DROP_PARENTHESES).split()[ids.index(UNK)]
                raise DataError(f"{split.path}, line {line}: unknown token {token!r} (ListOps has {' '.join(SYMBOLS)} "
                                f"and ']'); set task.allow_unk=true to read unknown tokens as <unk>")
            self.items.append((torch.tensor(fit(ids, l_max, append_eos), dtype=torch.uint8), target))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.items[i]


def make_collate(pad_to: int | None) -> Callable[[list[tuple[torch.Tensor, int]]], Batch]:
    """Right-pad with <pad> to the longest sequence of the batch, or to `pad_to`."""

    def collate(items: list[tuple[torch.Tensor, int]]) -> Batch:
        lengths = torch.tensor([len(x) for x, _ in items])
        width = pad_to or int(lengths.max())
        x = torch.full((len(items), width), PAD, dtype=torch.long)
        for i, (ids, _) in enumerate(items):
            x[i, : len(ids)] = ids  # uint8 ids widen to int64 here
        return {"x": x, "y": torch.tensor([t for _, t in items]), "lengths": lengths}

    return collate


# ----------------------------------------------------------------------------------------------------------------
# Generated sets, cached


MANIFEST = "manifest.json"  # written last: the settings, and each file's rows, bytes and sha256


def generated_dir(data_root: Path, settings: GeneratorSettings) -> Path:
    key = json.dumps({**asdict(settings), "version": GENERATOR_VERSION}, sort_keys=True)
    return data_root / f"generated-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _manifest(directory: Path, settings: GeneratorSettings) -> tuple[dict[str, Any] | None, str | None]:
    """The manifest of the generated set in `directory` and why the set cannot be used (None: it can)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return None, "its generation never completed" if directory.exists() else None
    except (OSError, ValueError):
        return None, f"its {MANIFEST} is unreadable"
    if manifest.get("generator_version") != GENERATOR_VERSION or manifest.get("settings") != asdict(settings):
        return None, f"its {MANIFEST} describes other settings"
    for name, want in manifest["files"].items():
        path = directory / name
        size = path.stat().st_size if path.is_file() else None
        if size != want["bytes"]:
            return None, f"{name} has {size} bytes, its {MANIFEST} says {want['bytes']}"
        if hashlib.sha256(path.read_bytes()).hexdigest() != want["sha256"]:
            return None, f"{name} does not match the sha256 in its {MANIFEST}"
    return manifest, None


def ensure_generated(data_root: Path, settings: GeneratorSettings) -> Path:
    """The cached release-format copy of a generated set: generated on first use, and again whenever a file no
    longer matches the sizes and sha256 its manifest recorded (a cut, edited or half-written file is never read)."""
    out = generated_dir(data_root, settings)
    manifest, problem = _manifest(out, settings)
    if manifest is None:
        if problem:
            warnings.warn(f"generated ListOps in {out} is damaged ({problem}); generating it again", stacklevel=2)
        files = write_release(generate(settings, progress=True), out)
        atomic_write(out / MANIFEST, json.dumps({"generator_version": GENERATOR_VERSION, "settings": asdict(settings),
                                                 "files": files}, indent=1) + "\n")
    return out


def generated_fingerprint(directory: Path) -> dict[str, Any]:
    """Generated data is a function of the generator's settings and version; the files' digest is recorded too."""
    manifest = json.loads((directory / MANIFEST).read_text())
    files = sorted((name, f["bytes"], f["sha256"]) for name, f in manifest["files"].items())
    return {"generator_version": manifest["generator_version"], "settings": manifest["settings"],
            "sha256": combine(files), "files": len(files), "bytes": sum(size for _, size, _ in files)}


# ----------------------------------------------------------------------------------------------------------------
# The task


def task_spec(cfg: ListOpsConfig) -> TaskSpec:
    """18 tokens, 10 classes, at most l_max tokens: fixed by the config, whatever the data."""
    return TaskSpec(name="listops", input="tokens", seq_len=cfg.l_max, n_outputs=10, metric="accuracy",
                    vocab_size=len(VOCAB), pad_id=PAD, variable_length=True)


@TASKS.register("listops", ListOpsConfig)
def build(cfg: ListOpsConfig, data_root: Path) -> Task:
    """LRA ListOps: generated with the LRA generator unless `root` points at the official release."""
    if cfg.root:
        # The runner passes the resolved `cfg.root` as data_root.
        files = read_release(Path(data_root))
        source: dict[str, Any] = {"source": "files", "root": str(data_root), "fingerprint": release_fingerprint(files)}
    else:
        settings = settings_of(cfg)
        directory = ensure_generated(data_root, settings)
        files = read_release(directory)
        source = {"source": "generated", "dir": str(directory), **asdict(settings),
                  "fingerprint": generated_fingerprint(directory)}
    splits = {split: ListOpsDataset(files[split], cfg.l_max, cfg.append_eos, cfg.allow_unk, f"tokenising {split}")
              for split in SPLITS}
    info = {**source, "sizes": {split: len(ds) for split, ds in splits.items()}}
    return Task(task_spec(cfg), splits, collate=make_collate(cfg.l_max if cfg.pad_to_max else None), info=info)


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
