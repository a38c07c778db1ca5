"""PTB-XL 12-lead ECG classification, as the PTB-XL benchmark builds it.

Data: PTB-XL 1.0.3 as PhysioNet publishes it (Wagner et al., "PTB-XL, a large publicly available
electrocardiography dataset", Scientific Data 2020; https://physionet.org/content/ptb-xl/1.0.3/), unzipped:
`ptbxl_database.csv`, `scp_statements.csv`, `records100/`, `records500/`, read with `wfdb`. Labels follow the
benchmark's published code, github.com/helme/ecg_ptbxl_benchmarking `code/utils/utils.py`
(`compute_label_aggregations`, `select_data` with min_samples 0; Strodthoff et al., IEEE JBHI 2021), for the six
label sets:
  all              every SCP code of the record
  diagnostic       codes whose `diagnostic` flag is 1
  subdiagnostic    their `diagnostic_subclass`
  superdiagnostic  their `diagnostic_class`
  form / rhythm    codes whose `form` / `rhythm` flag is 1
Likelihood values in `scp_codes` are ignored (any listed code counts). Records without a label of the chosen
set are dropped; the classes are every label seen at least once, sorted (as MultiLabelBinarizer orders them).
Folds 1-8 train, 9 validation, 10 test. One global mean/std (over every lead and time step of the training
fold, population std as sklearn's StandardScaler) standardises all splits. Multi-label BCE, macro AUROC.

The decoded signals of all records ([N, 10 * rate, 12] float32) are cached on disk, keyed by the rate and a
fingerprint of the database file and the record files, written to a temporary file and renamed so a crashed
run never leaves a cache that looks complete.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from harness.config import TaskConfig, one_of
from harness.errors import DataError
from harness.files import atomic_write
from harness.registry import TASKS
from harness.task import Task, TaskSpec
from tasks._cache import fill_cached
from tasks._download import fetch_and_extract

VERSION_DIR = "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3"
ZIP_URL = f"https://physionet.org/static/published-projects/ptb-xl/{VERSION_DIR}.zip"
LABEL_SETS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
RATES = {100: "filename_lr", 500: "filename_hr"}
DATABASE_COLUMNS = ("scp_codes", "strat_fold", "filename_lr", "filename_hr")
STATEMENT_COLUMNS = ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")
SECONDS, LEADS = 10, 12
TRAIN_FOLDS, VAL_FOLD, TEST_FOLD = range(1, 9), 9, 10


@dataclass
class PtbxlConfig(TaskConfig):
    name: str = "ptbxl"
    label_set: str = "superdiagnostic"  # all | diagnostic | subdiagnostic | superdiagnostic | form | rhythm
    sampling_rate: int = 100  # 100 (records100, L=1000) | 500 (records500, L=5000)
    cache_dir: str | None = None  # None: <data root>/cache
    download: bool = False  # fetch PhysioNet's zip (about 1.8 GB) when the data is missing

    def __post_init__(self) -> None:
        one_of("task.label_set", self.label_set, LABEL_SETS)
        one_of("task.sampling_rate", self.sampling_rate, RATES)


# ----------------------------------------------------------------------------------------------------------------
# Finding and fetching the release


def fetch_instructions(root: Path) -> str:
    return (
        f"Download PTB-XL 1.0.3 from PhysioNet and unzip it so that {root}/ptbxl_database.csv exists:\n"
        f"  mkdir -p {root} && cd {root} && wget {ZIP_URL} && unzip {VERSION_DIR}.zip && "
        f"mv {VERSION_DIR}/* . \n"
        f"(or set task.download=true on a machine with network; see https://physionet.org/content/ptb-xl/1.0.3/)"
    )


def download_ptbxl(root: Path, url: str = ZIP_URL) -> None:
    """Fetch PhysioNet's zip and put the contents of its versioned folder directly into `root`.

    The database file is moved last: until it is in place the directory does not look like PTB-XL.
    """
    fetch_and_extract(url, root, "ptbxl_database.csv", instructions=fetch_instructions(root))


def find_root(root: Path) -> Path:
    """The directory holding ptbxl_database.csv: `root` itself or the release's versioned folder inside it."""
    for candidate in (root, root / VERSION_DIR, *sorted(root.glob("ptb-xl*"))):
        if (candidate / "ptbxl_database.csv").is_file():
            return candidate
    raise DataError(f"PTB-XL not found: {root / 'ptbxl_database.csv'} does not exist.\n{fetch_instructions(root)}")


# ----------------------------------------------------------------------------------------------------------------
# Tables and labels


def _read_csv(path: Path, columns: tuple[str, ...], index: str | int) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} is missing; it is part of the PTB-XL release.\n{fetch_instructions(path.parent)}")
    try:
        df = pd.read_csv(path, index_col=index)
    except Exception as e:
        raise DataError(f"{path} cannot be parsed as CSV ({type(e).__name__}: {e}); re-extract the release") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {missing} (has {list(df.columns)[:12]}...); it is not the PTB-XL file "
            f"of that name. Replace it with the one from the PhysioNet release."
        )
    return df


def read_tables(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ptbxl_database.csv (index ecg_id, scp_codes parsed to dicts) and scp_statements.csv (index code)."""
    path = root / "ptbxl_database.csv"
    with open(path) as f:
        header = f.readline()
    if "ecg_id" not in header.split(","):
        raise DataError(f"{path} lacks the column ['ecg_id']; replace it with the file of the PhysioNet release")
    db = _read_csv(path, DATABASE_COLUMNS, "ecg_id")
    try:
        db["scp_codes"] = db["scp_codes"].apply(ast.literal_eval)
    except (ValueError, SyntaxError) as e:
        raise DataError(f"{path}: column scp_codes must hold dict literals like {{'NORM': 100.0}}: {e}") from e
    statements = _read_csv(root / "scp_statements.csv", STATEMENT_COLUMNS, 0)
    return db, statements


def label_lists(db: pd.DataFrame, statements: pd.DataFrame, label_set: str) -> pd.Series:
    """Per record, the list of its labels in `label_set` (duplicates removed, as the benchmark's set())."""
    if label_set == "all":
        return db["scp_codes"].apply(lambda codes: sorted(codes))
    flag = "diagnostic" if label_set in ("diagnostic", "subdiagnostic", "superdiagnostic") else label_set
    table = statements[statements[flag] == 1.0]
    column = {"subdiagnostic": "diagnostic_subclass", "superdiagnostic": "diagnostic_class"}.get(label_set)

    def labels(codes: dict) -> list[str]:
        out = set()
        for code in codes:
            if code in table.index:
                value = code if column is None else table.loc[code, column]
                if isinstance(value, str):  # NaN class entries are skipped, as in the benchmark
                    out.add(value)
        return sorted(out)

    return db["scp_codes"].apply(labels)


def multi_hot(lists: pd.Series) -> tuple[np.ndarray, list[str]]:
    classes = sorted({label for labels in lists for label in labels})
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(lists), len(classes)), dtype=np.float32)
    for row, labels in enumerate(lists):
        y[row, [index[label] for label in labels]] = 1.0
    return y, classes


# ----------------------------------------------------------------------------------------------------------------
# Signals and their cache


def fingerprint(root: Path, db: pd.DataFrame, column: str, rate: int) -> str:
    """Hash of the database file, the rate and every record's file sizes and mtimes (cheap to recompute)."""
    h = hashlib.sha256(f"ptbxl-signals-v1 rate={rate}\n".encode())
    h.update((root / "ptbxl_database.csv").read_bytes())
    for name in db[column]:
        for ext in (".hea", ".dat"):
            path = root / f"{name}{ext}"
            st = path.stat() if path.exists() else None
            h.update(f"{name}{ext} {st.st_size if st else -1} {st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:16]


def read_record(root: Path, name: str, rate: int) -> np.ndarray:
    """One record as float32 [10 * rate, 12], or a DataError naming the file."""
    import wfdb

    base = root / name
    for ext in (".hea", ".dat"):
        if not Path(f"{base}{ext}").is_file():
            raise DataError(
                f"PTB-XL record file {base}{ext} is missing (listed in ptbxl_database.csv). Re-extract the "
                f"PhysioNet release into {root}.\n{fetch_instructions(root)}"
            )
    try:
        signal, _ = wfdb.rdsamp(str(base))
    except Exception as e:  # wfdb raises ValueError for short .dat files, others for broken headers
        raise DataError(
            f"PTB-XL record {base} (.hea/.dat) cannot be read ({type(e).__name__}: {e}); the file is probably "
            f"truncated. Re-download it from {ZIP_URL}."
        ) from e
    expected = (SECONDS * rate, LEADS)
    if signal.shape != expected or not np.isfinite(signal).all():
        raise DataError(f"PTB-XL record {base} has shape {signal.shape} (or non-finite values); expected {expected}")
    return signal.astype(np.float32)


def _load_cached(path: Path, shape: tuple[int, ...], meta: dict) -> np.ndarray | None:
    """The cached array if it is complete and describes these inputs; otherwise None."""
    try:
        stored = json.loads(path.with_suffix(".json").read_text())
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    if stored != meta or array.shape != shape or array.dtype != np.float32:
        return None
    return array


def load_signals(root: Path, db: pd.DataFrame, rate: int, cache_dir: Path) -> np.ndarray:
    """float32 [len(db), 10 * rate, 12] in db's order, from the cache or by reading every record."""
    column = RATES[rate]
    key = fingerprint(root, db, column, rate)
    path = cache_dir / f"ptbxl_signals_{rate}hz_{key}.npy"
    meta = {"rate": rate, "fingerprint": key, "ecg_ids": [int(i) for i in db.index]}
    shape = (len(db), SECONDS * rate, LEADS)
    cached = _load_cached(path, shape, meta)
    if cached is not None:
        return cached

    def fill(signals: np.ndarray) -> None:  # 5 GB at 500 Hz: filled as a memory map, not in memory
        for i, name in enumerate(db[column]):
            signals[i] = read_record(root, name, rate)

    # The meta before the array: a visible array always has its meta.
    return fill_cached(path, shape, np.float32, fill,
                       before_publish=lambda: atomic_write(path.with_suffix(".json"), json.dumps(meta)))


# ----------------------------------------------------------------------------------------------------------------
# Task


class EcgDataset(Dataset):
    """Signals [N, L, 12] (possibly memory-mapped) standardised on access -> {"x": [L, 12], "y": multi-hot}."""

    def __init__(self, signals: np.ndarray, rows: np.ndarray, targets: np.ndarray, mean: float, std: float):
        self.signals, self.rows, self.targets, self.mean, self.std = signals, rows, targets, mean, std

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = (np.asarray(self.signals[self.rows[i]], dtype=np.float32) - self.mean) / self.std
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(self.targets[i])}


def global_standardisation(signals: np.ndarray, rows: np.ndarray, chunk: int = 1024) -> tuple[float, float]:
    """Mean and population std over every value of the given records (float64 sums, chunked for mmaps)."""
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(rows), chunk):
        block = np.asarray(signals[np.sort(rows[start:start + chunk])], dtype=np.float64)
        total += block.sum()
        total_sq += np.square(block).sum()
        count += block.size
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    return float(mean), std if std > 0 else 1.0


@TASKS.register("ptbxl", PtbxlConfig)
def build(cfg: PtbxlConfig, data_root: Path) -> Task:
    """PTB-XL multi-label ECG classification (12 leads, 1000 or 5000 steps, macro AUROC)."""
    data_root = Path(data_root)
    if cfg.download and not any((c / "ptbxl_database.csv").is_file() for c in (data_root, data_root / VERSION_DIR)):
        download_ptbxl(data_root)
    root = find_root(data_root)
    db, statements = read_tables(root)
    folds = pd.to_numeric(db["strat_fold"], errors="coerce")
    if folds.isna().any() or not folds.isin(range(1, 11)).all():
        raise DataError(f"{root / 'ptbxl_database.csv'}: strat_fold must hold integers 1..10")
    signals = load_signals(root, db, cfg.sampling_rate, Path(cfg.cache_dir) if cfg.cache_dir else root / "cache")

    labels = label_lists(db, statements, cfg.label_set)
    keep = np.flatnonzero(labels.apply(len).to_numpy() > 0)  # records with no label of this set are dropped
    targets, classes = multi_hot(labels.iloc[keep])
    fold = folds.to_numpy()[keep]
    parts = {"train": np.isin(fold, TRAIN_FOLDS), "val": fold == VAL_FOLD, "test": fold == TEST_FOLD}
    for split, mask in parts.items():
        if not mask.any():
            raise DataError(f"PTB-XL {cfg.label_set}: the {split} fold(s) hold no labelled record; is the "
                            f"database complete? ({root / 'ptbxl_database.csv'})")
    mean, std = global_standardisation(signals, keep[parts["train"]])
    splits = {s: EcgDataset(signals, keep[m], targets[m], mean, std) for s, m in parts.items()}
    spec = TaskSpec(name="ptbxl", input="signal", seq_len=SECONDS * cfg.sampling_rate, n_outputs=len(classes),
                    metric="auroc", d_input=LEADS)
    info = {"source": str(root), "label_set": cfg.label_set, "classes": classes, "rate": cfg.sampling_rate,
            "sizes": {k: len(v) for k, v in splits.items()}, "standardisation": [mean, std]}
    return Task(spec=spec, splits=splits, info=info)
