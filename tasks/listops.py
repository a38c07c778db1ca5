"""LRA ListOps: nested MIN / MAX / MED / SM expressions over digits, classify the value (0-9).

ListOps is from Nangia & Bowman ("ListOps: A Diagnostic Dataset for Latent Tree Learning", NAACL SRW 2018); its
long version is a task of the Long Range Arena (Tay et al., ICLR 2021), whose release, lra_release.gz, and
generator, google-research/long-range-arena `lra_benchmarks/data/listops.py`, are the published data and code.
Three parts, each usable alone:
- the generator (tasks/listops_generator.py), a reimplementation of that `listops.py`, with its draws;
- the LRA release format: `basic_{train,val,test}.tsv`, tab-separated, header `Source<TAB>Target`;
- the task: tokenised as the LRA pipeline (`lra_benchmarks/listops/input_pipeline.py`) and S4's
  (state-spaces/s4 `src/dataloaders/lra.py`, class ListOps) do it, padded, with true lengths for pooling.

Files are checked as they are read: a DataError names the file and line of a row that is not an expression, a tab
and an ASCII digit 0-9, of bytes that are not UTF-8, of a quote that is never closed (the line where it opens),
and of a token outside the vocabulary (`task.allow_unk=true` reads those as <unk>, as S4's vocabulary would).
Release files are read with the csv module (half a minute for the LRA size); a generated file whose bytes match
its manifest is read with one bytes.translate (`parse_written`, seconds).

A generated set is a cache under `<paths.data>/listops/generated-<key>` (the key: settings and generator version)
with a manifest written last: the settings, and each file's rows, bytes and sha256. It is read only when its
manifest describes these settings (the files of the splits asked for, with their rows) and the bytes read match
it; anything else (a crashed generation, a missing or foreign manifest, a file cut or edited) is generated again,
with a warning, never read. Temporary files of killed writers are removed on the way; generation interrupted
(Ctrl-C, a signal) leaves no file that a later run reads. The record's data fingerprint is the settings and
generator version of a generated set, or the sha256 of the three files read.

Options (task.*): n_train, n_val, n_test; min_length and max_length (exclusive bounds on the tokens, parentheses
not counted); max_depth, max_args; seed (the generator's, not the run's); l_max (the longest input, <eos>
included: a generated set needs max_length - 1 tokens, plus 1 with append_eos, and a smaller l_max is refused, so
that no generated expression is cut); append_eos, pad_to_max, allow_unk; root (the official release instead).

Longer expressions, to test length generalisation: a test-only set (n_train = n_val = 0) of the same generator
with its own seed and a longer window, e.g. for a model trained on 500-2,000 tokens the bins of LENGTH_BINS
(`length_bin_config`):

    task.n_train=0 task.n_val=0 task.n_test=2000 task.min_length=2000 task.max_length=4000 task.seed=1 task.l_max=4000

Its train and val splits are empty; it is for evaluating a model trained elsewhere. Under the same depth and
argument rules, 2,000 expressions of 2-4K tokens take 7 CPU-seconds to generate and of 4-8K about 170 (spread
over the processes); 8-16K would take some 80 CPU-hours and is refused, with the odds: deeper or wider
expressions (max_depth, max_args) make it reachable, from another distribution (`LENGTH_BINS`' comment).

Generate a set in the release format (`--workers`: processes, default every CPU this process may use):

    python -m tasks.listops generate --out DIR --train 96000 --val 2000 --test 2000 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.config import TaskConfig, positive
from harness.errors import ConfigError, DataError
from harness.files import atomic_write, remove_stale_temps
from harness.registry import TASKS
from harness.task import Batch, Task, TaskSpec
from tasks._fingerprint import combine
from tasks._text import decode
from tasks.listops_generator import END, MAX, MED, MIN, SUM_MOD, GeneratorSettings, check_settings, generate

SPLITS = ("train", "val", "test")
GENERATOR_VERSION = 1  # part of the cache key: bump when generated data would change


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
            longest = self.max_length - 1 + self.append_eos  # max_length is exclusive
            if self.l_max < longest:
                raise ConfigError(f"task.l_max={self.l_max} would cut generated expressions of up to "
                                  f"{self.max_length - 1} tokens (task.max_length={self.max_length} is exclusive)"
                                  f"{' plus <eos>' if self.append_eos else ''}; set task.l_max={longest} or more")


def settings_of(cfg: ListOpsConfig) -> GeneratorSettings:
    """The generator's settings are the config's fields of the same names."""
    return GeneratorSettings(**{f.name: getattr(cfg, f.name) for f in fields(GeneratorSettings)})


# Test-only sets for length generalisation: (min_length, max_length), exclusive, in tokens. Under LRA's max_depth 10
# and max_args 10 a draw falls in 500-2,000 tokens with probability 1 in 12, in 2-4K 1 in 92, in 4-8K 1 in 2,736
# and in 8-16K 1 in 8.4 million (listops_generator.acceptance; 3 million draws of seed 5 held 248,292, 32,383,
# 1,110 and 0): 2,000 expressions of 8-16K would take 17 billion draws, about 80 hours of one core, and are refused.
# Deeper or wider expressions make them reachable, from another distribution: 8-16K is 1 draw in 22,596 with
# max_depth 11, 836 with max_depth 12, 13,411 with max_args 11, 387 with max_args 12.
LENGTH_BINS = {"2-4K": (2_000, 4_000), "4-8K": (4_000, 8_000), "8-16K": (8_000, 16_000)}


def length_bin_config(bin_name: str, n_test: int = 2_000, seed: int = 1, **options: Any) -> ListOpsConfig:
    """A test-only generated set of one of LENGTH_BINS, with LRA's depth and argument rules unless `options` (further
    ListOpsConfig fields: append_eos, max_depth, ...) say otherwise, and an l_max that holds its longest
    expression."""
    low, high = LENGTH_BINS[bin_name]
    fields = length_variant({**asdict(ListOpsConfig()), **options}, low, high, seed=seed, n_test=n_test)
    return ListOpsConfig(**{k: v for k, v in fields.items() if k != "name"})


def length_bins(fields: dict[str, Any], doublings: int = 3) -> list[tuple[int, int]]:
    """`job=lengths`' default bins for a run trained on the config `fields`: doublings above its max_length (for LRA's
    500-2,000 tokens 2-4K, 4-8K, 8-16K)."""
    top = int(fields["max_length"])
    return [(top * 2**i, top * 2 ** (i + 1)) for i in range(doublings)]


def length_variant(fields: dict[str, Any], low: int, high: int, seed: int, n_test: int) -> dict[str, Any]:
    """`job=lengths`' test-only set for a run trained on the config `fields`: its generator rules (depth, arguments,
    tokenisation), lengths strictly between `low` and `high`, its own seed, test split only, and an l_max that holds
    the longest expression (plus <eos>): nothing is cut."""
    return {**fields, "root": None, "n_train": 0, "n_val": 0, "n_test": n_test, "min_length": low,
            "max_length": high, "seed": seed, "l_max": high - 1 + bool(fields.get("append_eos", True))}


def redraw(fields: dict[str, Any], seed: int, n_test: int) -> dict[str, Any]:
    """`job=redraw`'s test-only set for a run trained on the config `fields`: another draw of its own generator, at
    its own lengths and tokenisation (l_max, <eos>, padding), `n_test` expressions from `seed`."""
    return {**fields, "root": None, "n_train": 0, "n_val": 0, "n_test": n_test, "seed": seed}


# ----------------------------------------------------------------------------------------------------------------
# The LRA release format

HEADER = "Source\tTarget\r\n"
_WRITE_ROWS = 2_000  # rows rendered at a time


def _render(rows: list[tuple[str, int]]) -> bytes:
    """Rows as the reference's `csv.writer(f, delimiter='\\t')` writes them (excel dialect: CRLF line ends). A
    ListOps source never needs csv's quotes; rows that would are left to the csv module."""
    text = "".join(f"{source}\t{label}\r\n" for source, label in rows)
    n = len(rows)
    if text.count("\t") != n or text.count("\r") != n or text.count("\n") != n or '"' in text:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter="\t").writerows(rows)
        text = buffer.getvalue()
    return text.encode()


def write_split(path: Path, rows: list[tuple[str, int]]) -> dict[str, Any]:
    """One `basic_*.tsv`, written atomically; returns its rows, bytes and sha256."""
    digest, size = hashlib.sha256(), 0

    def write(tmp: Path) -> None:
        nonlocal size
        with open(tmp, "wb") as f:
            chunks = (_render(rows[i: i + _WRITE_ROWS]) for i in range(0, len(rows), _WRITE_ROWS))
            for data in itertools.chain([HEADER.encode()], chunks):
                digest.update(data)
                f.write(data)
                size += len(data)

    atomic_write(path, write)
    return {"rows": len(rows), "bytes": size, "sha256": digest.hexdigest()}


def write_release(rows: dict[str, list[tuple[str, int]]], out: Path) -> dict[str, dict[str, Any]]:
    """`basic_{split}.tsv` of every split with rows, as the reference writes them, each atomically; returns each
    file's rows, bytes and sha256."""
    return {f"basic_{split}.tsv": write_split(out / f"basic_{split}.tsv", rows[split])
            for split in SPLITS if rows.get(split)}


LRA_HINT = ("The official data is the `listops-1000` folder of lra_release.gz (linked from the README of "
            "github.com/google-research/long-range-arena); point task.root at it, or leave task.root unset to "
            "generate ListOps with the LRA generator.")
LABELS = frozenset("0123456789")  # not str.isdigit, which also passes other scripts' digits such as '\u0663'

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


@dataclass
class SplitFile:
    """One `basic_*.tsv` as read: the token ids of its examples one after another (parentheses dropped, unknown
    tokens as <unk>), where each example starts and how long it is, the labels, the line of each example (for
    messages), the first unknown token (its line and text) if any, the file's size and sha256."""

    path: Path
    ids: np.ndarray  # uint8
    starts: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    lines: np.ndarray
    unknown: tuple[int, str] | None
    bytes: int
    sha256: str

    def __len__(self) -> int:
        return len(self.labels)

    def tokens(self, i: int) -> list[int]:
        """The token ids of example i."""
        return self.ids[self.starts[i]: self.starts[i] + self.lengths[i]].tolist()


def _short(row: list[str]) -> str:
    """A row for an error message: long expressions cut to their first characters."""
    return repr([cell if len(cell) <= 60 else cell[:60] + "..." for cell in row])


def _read_bytes(path: Path) -> bytes:
    """The bytes of `path`; a DataError saying why they cannot be read (a directory, no permission, ...)."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a file: a ListOps directory holds the files basic_train.tsv, "
                        f"basic_val.tsv and basic_test.tsv. {LRA_HINT}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or e}); check the file and its permissions") from None


def read_split(path: Path) -> SplitFile:
    """The examples of one `basic_*.tsv`, every row checked; DataErrors name the file and the line."""
    raw = _read_bytes(path)
    return _parse_csv(raw, path, hashlib.sha256(raw).hexdigest())


# A generated file whose sha256 matches its manifest holds what `write_split` wrote: the header, then per line
# tokens separated by single spaces, a tab, a digit and CRLF. One bytes.translate reads it: deleting '[', 'M', 'N',
# 'X', 'D' leaves each operator one letter ([MIN -> I, [MAX -> A, [MED -> E, [SM -> S), and parentheses, spaces and
# CR go too; the same pass maps what is left to token ids (the tab and the line end to markers, any other byte to
# an invalid id). Seconds for the LRA size, where csv takes half a minute.
_WRITTEN_DELETE = b"[MNXD() \r"
_TAB, _NEWLINE, _INVALID = 255, 254, 253


def _written_table() -> bytes:
    table = bytearray([_INVALID] * 256)
    letters = {"I": MIN, "A": MAX, "E": MED, "S": SUM_MOD, "]": "X", **{str(d): str(d) for d in range(10)}}
    for char, token in letters.items():
        table[ord(char)] = VOCAB[token]
    table[ord("\t")], table[ord("\n")] = _TAB, _NEWLINE
    return bytes(table)


_WRITTEN_IDS = _written_table()
_HEADER_IDS = HEADER.encode().translate(_WRITTEN_IDS, _WRITTEN_DELETE)


def parse_written(raw: bytes, path: Path, digest: str) -> SplitFile:
    """The examples of a file as `write_split` writes it, `raw` its bytes and `digest` their sha256 (checked against
    the manifest by the caller); a file in any other form is read by csv."""
    small = raw.translate(_WRITTEN_IDS, _WRITTEN_DELETE) if raw.startswith(HEADER.encode()) else b""
    ids = np.frombuffer(small, np.uint8)[len(_HEADER_IDS):]  # (translated whole: slicing first would copy it)
    tabs, ends = np.flatnonzero(ids == _TAB), np.flatnonzero(ids == _NEWLINE)
    if len(tabs) == 0 or len(tabs) != len(ends) or not np.array_equal(ends - tabs, np.full(len(tabs), 2)) or \
            small.count(_INVALID) != _HEADER_IDS.count(_INVALID):
        return _parse_csv(raw, path, digest)
    labels = ids[tabs + 1].astype(np.int64) - VOCAB["0"]
    if labels.min() < 0 or labels.max() > 9:
        return _parse_csv(raw, path, digest)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lines = np.arange(2, len(labels) + 2)  # the header is line 1, and no line is blank
    return SplitFile(path, ids, starts, tabs - starts, labels, lines, None, len(raw), digest)


def _quoted(first: int, last: int) -> str:
    """What to say of a row read from lines `first` to `last`: only a quote makes csv read on past a line end."""
    if last <= first:
        return ""
    return f" (a quote on line {first} runs on to line {last}: ListOps rows hold no quotes)"


def _parse_csv(raw: bytes, path: Path, digest: str) -> SplitFile:
    """Any file csv reads, every row checked; DataErrors name the line where the offending row begins."""
    text = decode(raw, path, f"the LRA release is ASCII text. {LRA_HINT}")
    # csv refuses fields longer than its limit (131,072 characters by default); no field is longer than the file.
    if len(text) > csv.field_size_limit():
        csv.field_size_limit(len(text))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    ids: list[int] = []
    starts, lengths, labels, lines = [], [], [], []
    unknown: tuple[int, str] | None = None
    line = 1  # where the row being read begins: a quoted field may run over several lines
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty: expected a header `Source<TAB>Target` and one example per line. "
                            f"{LRA_HINT}")
        if header != ["Source", "Target"]:
            raise DataError(f"{path}: expected the tab-separated columns ['Source', 'Target'], found "
                            f"{_short(header)}. {LRA_HINT}")
        line = reader.line_num + 1
        for row in reader:
            if row:  # not a blank line, e.g. at the end of a hand-edited file
                if len(row) != 2 or row[1].strip() not in LABELS:
                    raise DataError(f"{path}, line {line}: expected an expression and a label 0-9 (an ASCII digit) "
                                    f"separated by a tab, found {_short(row)}{_quoted(line, reader.line_num)}")
                tokens = row[0].translate(_DROP_PARENTHESES).split()
                row_ids = [SOURCE_IDS.get(t, UNK) for t in tokens]
                if unknown is None and UNK in row_ids:
                    unknown = (line, tokens[row_ids.index(UNK)])
                starts.append(len(ids))
                lengths.append(len(row_ids))
                ids += row_ids
                labels.append(int(row[1]))
                lines.append(line)
            line = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}, line {line}: not in the tab-separated LRA format ({e})"
                        f"{_quoted(line, reader.line_num)}") from None
    if not labels:
        raise DataError(f"{path} holds a header but no examples. {LRA_HINT}")
    return SplitFile(path, np.array(ids, np.uint8), np.array(starts, np.int64), np.array(lengths, np.int64),
                     np.array(labels, np.int64), np.array(lines, np.int64), unknown, len(raw), digest)


def read_release(root: Path, splits: tuple[str, ...] = SPLITS) -> dict[str, SplitFile]:
    """Read `basic_{split}.tsv` from `root` for each of `splits`, checking the format of every row."""
    if not root.is_dir():
        raise DataError(f"ListOps directory {root} does not exist. {LRA_HINT}")
    files: dict[str, SplitFile] = {}
    for split in splits:
        path = root / f"basic_{split}.tsv"
        if not path.exists():
            raise DataError(f"{path} is missing: a ListOps directory holds basic_train.tsv, basic_val.tsv and "
                            f"basic_test.tsv. {LRA_HINT}")
        files[split] = read_split(path)
    return files


def release_fingerprint(splits: dict[str, SplitFile]) -> dict[str, Any]:
    """The data fingerprint of a release: one sha256 over the three files' names, sizes and sha256."""
    files = sorted((s.path.name, s.bytes, s.sha256) for s in splits.values())
    return {"sha256": combine(files), "files": len(files), "bytes": sum(size for _, size, _ in files)}


# ----------------------------------------------------------------------------------------------------------------
# Tokens


def token_ids(source: str) -> list[int]:
    """Every token of a source expression as its id; tokens outside the vocabulary are <unk>."""
    return [SOURCE_IDS.get(t, UNK) for t in source.translate(_DROP_PARENTHESES).split()]


def fit(ids: list[int], l_max: int, append_eos: bool) -> list[int]:
    """As the S4 pipeline: truncate to l_max - 1, then <eos>; as LRA's: truncate to l_max."""
    return ids[: l_max - 1] + [EOS] if append_eos else ids[:l_max]


def tokenize(source: str, l_max: int, append_eos: bool = True) -> list[int]:
    return fit(token_ids(source), l_max, append_eos)


class ListOpsDataset(Dataset):
    """The examples of a split as `fit` makes them, held as one uint8 tensor (18 symbols): about 100 MB for the
    full training split. A token outside the vocabulary is refused, naming its file and line, unless `allow_unk`
    reads it as <unk>."""

    CHUNK = 4096

    def __init__(self, split: SplitFile, l_max: int, append_eos: bool, allow_unk: bool = False):
        if split.unknown is not None and not allow_unk:
            line, token = split.unknown
            raise DataError(f"{split.path}, line {line}: unknown token {token!r} (ListOps has {' '.join(SYMBOLS)} "
                            f"and ']'); set task.allow_unk=true to read unknown tokens as <unk>")
        kept = np.minimum(split.lengths, l_max - 1 if append_eos else l_max)
        offsets = np.concatenate([[0], np.cumsum(kept + append_eos)])
        tokens = np.full(offsets[-1], EOS, np.uint8)  # each example's last position keeps <eos> if appended
        for i in range(0, len(kept), self.CHUNK):  # in chunks of examples: the index arrays are 8 bytes a token
            j = min(i + self.CHUNK, len(kept))
            n = kept[i:j]
            out = np.repeat(offsets[i:j] - np.cumsum(n) + n, n) + np.arange(n.sum())  # offsets[e] + k, k < n[e]
            tokens[out] = split.ids[np.repeat(split.starts[i:j] - offsets[i:j], n) + out]
        self.tokens = torch.from_numpy(tokens)
        self.offsets = offsets.tolist()
        self.labels = split.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tokens[self.offsets[i]: self.offsets[i + 1]], self.labels[i]


def empty_dataset() -> ListOpsDataset:
    """A split with no examples (train and val of a test-only set)."""
    empty = np.zeros(0, np.int64)
    return ListOpsDataset(SplitFile(Path(), np.zeros(0, np.uint8), empty, empty, empty, empty, None, 0, ""), 2, True)


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
STALE_TEMP_S = 3600.0  # a temporary file this old is a dead writer's, also one of another host (shared filesystem)


def generated_dir(data_root: Path, settings: GeneratorSettings) -> Path:
    key = json.dumps({**asdict(settings), "version": GENERATOR_VERSION}, sort_keys=True)
    return data_root / f"generated-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def expected_files(settings: GeneratorSettings) -> dict[str, int]:
    """The files a generated set of these settings holds, with their rows: no file for a split of no rows."""
    return {f"basic_{split}.tsv": n for split, n in settings.sizes.items() if n}


def _manifest_problem(manifest: Any, settings: GeneratorSettings) -> str | None:
    """Why `manifest` (as parsed from its JSON) does not describe a set of these settings, or None."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return f"its {MANIFEST} lists no files"
    if manifest.get("generator_version") != GENERATOR_VERSION or manifest.get("settings") != asdict(settings):
        return f"its {MANIFEST} describes other settings"
    files = manifest["files"]
    for name, rows in expected_files(settings).items():
        entry = files.get(name)
        if not isinstance(entry, dict) or entry.get("rows") != rows or not isinstance(entry.get("bytes"), int) or \
                not isinstance(entry.get("sha256"), str):
            return f"its {MANIFEST} does not list {name} with {rows} rows"
    if set(files) != set(expected_files(settings)):
        return f"its {MANIFEST} lists other files: {sorted(files)}"
    return None


def _read_generated(directory: Path, settings: GeneratorSettings) -> tuple[dict[str, SplitFile] | None, str | None]:
    """The splits of the generated set in `directory`, each file checked against the manifest on the bytes read,
    or None and why the set cannot be used (None too when it was never generated)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return None, "its generation never completed" if directory.exists() else None
    except (OSError, ValueError):
        return None, f"its {MANIFEST} is unreadable"
    problem = _manifest_problem(manifest, settings)
    if problem:
        return None, problem
    files = {}
    for name, want in manifest["files"].items():
        path = directory / name
        try:
            raw = path.read_bytes()
        except OSError as e:
            return None, f"{name} cannot be read ({e.strerror or e})"
        if len(raw) != want["bytes"]:
            return None, f"{name} has {len(raw)} bytes, its {MANIFEST} says {want['bytes']}"
        digest = hashlib.sha256(raw).hexdigest()
        if digest != want["sha256"]:
            return None, f"{name} does not match the sha256 in its {MANIFEST}"
        split = parse_written(raw, path, digest)
        if len(split) != want["rows"]:
            return None, f"{name} has {len(split)} rows, its {MANIFEST} says {want['rows']}"
        files[name.removeprefix("basic_").removesuffix(".tsv")] = split
    return files, None


def generate_set(out: Path, settings: GeneratorSettings, workers: int | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Generate a set into `out`: its files, then its manifest (written last); returns the manifest."""
    for name in (*expected_files(settings), MANIFEST):
        if (out / name).is_dir():
            raise DataError(f"{out / name} is a directory where a generated file belongs; remove it and rerun")
    rows = generate(settings, progress=progress, workers=workers)
    manifest = {"generator_version": GENERATOR_VERSION, "settings": asdict(settings),
                "files": write_release(rows, out)}
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_generated(data_root: Path, settings: GeneratorSettings) -> tuple[Path, dict[str, SplitFile]]:
    """The cached generated set of these settings, read: generated on first use, and again whenever its manifest
    does not describe these settings or a file does not match it (a cut, edited or half-written file is never
    read). Interrupted (Ctrl-C, a signal), generation leaves no file that a later call would read."""
    out = generated_dir(data_root, settings)
    if out.is_dir():
        remove_stale_temps(out, older_than_s=STALE_TEMP_S)
    files, problem = _read_generated(out, settings)
    if files is None:
        if problem:
            warnings.warn(f"generated ListOps in {out} is damaged ({problem}); generating it again", stacklevel=2)
        (out / MANIFEST).unlink(missing_ok=True)  # the files change before a new manifest is written
        generate_set(out, settings)
        files, problem = _read_generated(out, settings)
        if files is None:
            raise DataError(f"generated ListOps in {out} does not read back as written ({problem}); check the disk "
                            f"of paths.data, delete {out} and rerun")
    return out, files


def ensure_generated(data_root: Path, settings: GeneratorSettings) -> Path:
    """The directory of the cached generated set of these settings (load_generated), generated if need be."""
    return load_generated(data_root, settings)[0]


def generated_fingerprint(settings: GeneratorSettings, splits: dict[str, SplitFile]) -> dict[str, Any]:
    """Generated data is a function of the generator's settings and version; the digest of the files read (each
    checked against the manifest) is recorded too."""
    files = sorted((s.path.name, s.bytes, s.sha256) for s in splits.values())
    return {"generator_version": GENERATOR_VERSION, "settings": asdict(settings), "sha256": combine(files),
            "files": len(files), "bytes": sum(size for _, size, _ in files)}


# ----------------------------------------------------------------------------------------------------------------
# The task


def task_spec(cfg: ListOpsConfig) -> TaskSpec:
    """18 tokens, 10 classes, at most l_max tokens: fixed by the config, whatever the data."""
    return TaskSpec(name="listops", input="tokens", seq_len=cfg.l_max, n_outputs=10, metric="accuracy",
                    vocab_size=len(VOCAB), pad_id=PAD, variable_length=True, padded_to_seq_len=cfg.pad_to_max)


def release_sizes(cfg: ListOpsConfig) -> dict[str, int]:
    """Rows per split, from the config alone: the generated set's, which are the LRA release's by default (96,000 /
    2,000 / 2,000, also the sizes of `task.root`'s listops-1000)."""
    return {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}


@TASKS.register("listops", ListOpsConfig)
def build(cfg: ListOpsConfig, data_root: Path) -> Task:
    """LRA ListOps: generated with the LRA generator unless `root` points at the official release."""
    if cfg.root:
        # The runner passes the resolved `cfg.root` as data_root.
        files = read_release(Path(data_root))
        source: dict[str, Any] = {"source": "files", "root": str(data_root), "fingerprint": release_fingerprint(files)}
    else:
        settings = settings_of(cfg)
        directory, files = load_generated(data_root, settings)
        source = {"source": "generated", "dir": str(directory), **asdict(settings),
                  "fingerprint": generated_fingerprint(settings, files)}
    splits = {split: ListOpsDataset(files[split], cfg.l_max, cfg.append_eos, cfg.allow_unk) if split in files else
              empty_dataset() for split in SPLITS}
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
    gen.add_argument("--workers", type=int, default=None, help="processes (default: every CPU this one may use)")
    args = parser.parse_args(argv)
    settings = GeneratorSettings(**{k: v for k, v in vars(args).items() if k in asdict(defaults)})
    try:
        files = write_release(generate(settings, progress=True, workers=args.workers), args.out)
    except ConfigError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; no file of {args.out} was changed", file=sys.stderr)
        sys.exit(130)  # as a shell reports a process ended by Ctrl-C
    print(f"wrote {', '.join(str(args.out / name) for name in files)}")


if __name__ == "__main__":
    main()
