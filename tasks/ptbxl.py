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
Their numbers are fixed by the release, so the task's spec needs no data: all 71, diagnostic 44, subdiagnostic 23,
superdiagnostic 5, form 19, rhythm 12 (the benchmark's Table 1; they are the flagged rows of scp_statements.csv,
every one of which labels some record), and a database that gives other numbers is refused as not PTB-XL 1.0.3.
Folds 1-8 train, 9 validation, 10 test. One global mean/std (over every lead and time step of the training
fold, population std as sklearn's StandardScaler) standardises all splits. Multi-label BCE, macro AUROC (the
record keeps each label's AUROC and the labels skipped for having one class only in the split).

The decoded signals of all records ([N, 10 * rate, 12] float32) are cached on disk (tasks/_cache.py: keyed by the
rate and the database file and the record files' sizes and mtimes; a damaged cache is rebuilt). The record's data
fingerprint is the sha256 of every file read (the two tables and the records at the chosen rate), and of the
PhysioNet zip when the task downloaded it: PhysioNet publishes no checksum of the zip, so its sha256 is recorded,
not checked.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.config import TaskConfig, one_of
from harness.errors import DataError
from harness.registry import TASKS
from harness.task import MacroAUROC, Objective, Task, TaskSpec, multilabel_bce
from tasks._cache import cached_array
from tasks._download import downloaded, fetch_and_extract
from tasks._fingerprint import files_fingerprint
from tasks._text import read_text

if TYPE_CHECKING:  # pandas is imported where the tables are read: composing configs stays fast
    import pandas as pd

VERSION_DIR = "ptb-xl-a-large-publicly-available-electrocardiography-dataset-1.0.3"
ZIP_URL = f"https://physionet.org/static/published-projects/ptb-xl/{VERSION_DIR}.zip"
ZIP_SHA256: str | None = None  # PhysioNet publishes none for the zip (only SHA256SUMS.txt of the files inside)
# Classes per label set in PTB-XL 1.0.3 (Strodthoff et al. 2021, Table 1; helme/ecg_ptbxl_benchmarking with
# min_samples 0), equal to the rows of scp_statements.csv flagged for each set.
CLASS_COUNTS = {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19, "rhythm": 12}
LABEL_SETS = tuple(CLASS_COUNTS)
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


def fetch_instructions(root: Path, offer_download: bool = False) -> str:
    """How to fetch the release by hand; `offer_download`: also suggest task.download=true, where the data is not
    there at all and the task did not try (the download runs only then)."""
    download = "or set task.download=true on a machine with network; " if offer_download else ""
    return (
        f"Download PTB-XL 1.0.3 from PhysioNet and unzip it so that {root}/ptbxl_database.csv exists:\n"
        f"  mkdir -p {root} && cd {root} && wget {ZIP_URL} && unzip {VERSION_DIR}.zip && "
        f"mv {VERSION_DIR}/* . \n"
        f"({download}see https://physionet.org/content/ptb-xl/1.0.3/)"
    )


def download_ptbxl(root: Path, url: str = ZIP_URL, checksum: str | None = ZIP_SHA256) -> None:
    """Fetch PhysioNet's zip and put the contents of its versioned folder directly into `root`.

    The database file is moved last: until it is in place the directory does not look like PTB-XL.
    """
    fetch_and_extract(url, root, "ptbxl_database.csv", instructions=fetch_instructions(root),
                      checksum=f"sha256:{checksum}" if checksum else None)


def find_root(root: Path) -> Path:
    """The directory holding ptbxl_database.csv: `root` itself or the release's versioned folder inside it."""
    for candidate in (root, root / VERSION_DIR, *sorted(root.glob("ptb-xl*"))):
        if (candidate / "ptbxl_database.csv").is_file():
            return candidate
    raise DataError(f"PTB-XL not found: {root / 'ptbxl_database.csv'} does not exist.\n"
                    f"{fetch_instructions(root, offer_download=True)}")


# ----------------------------------------------------------------------------------------------------------------
# Tables and labels


def _read_csv(path: Path, columns: tuple[str, ...], index: str | int) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path} is missing; it is part of the PTB-XL release.\n{fetch_instructions(path.parent)}")
    text = read_text(path, f"replace it with the file of the PhysioNet release ({ZIP_URL})")
    try:
        df = pd.read_csv(io.StringIO(text), index_col=index)
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
    with open(path, "rb") as f:
        header = f.readline().decode("utf-8", errors="replace")
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


def cache_key(root: Path, db: pd.DataFrame, column: str, rate: int) -> str:
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
            f"truncated: delete {base}.hea and {base}.dat and extract them again from {ZIP_URL}"
        ) from e
    expected = (SECONDS * rate, LEADS)
    if signal.shape != expected or not np.isfinite(signal).all():
        raise DataError(f"PTB-XL record {base} has shape {signal.shape} (or non-finite values); expected {expected}: "
                        f"delete {base}.hea and {base}.dat and extract them again from {ZIP_URL}")
    return signal.astype(np.float32)


def load_signals(root: Path, db: pd.DataFrame, rate: int, cache_dir: Path) -> np.ndarray:
    """float32 [len(db), 10 * rate, 12] in db's order, from the cache or by reading every record."""
    column = RATES[rate]
    key = cache_key(root, db, column, rate)
    meta = {"rate": rate, "key": key, "ecg_ids": [int(i) for i in db.index]}

    def fill(signals: np.ndarray) -> None:  # 5 GB at 500 Hz: filled as a memory map, not in memory
        for i, name in enumerate(db[column]):
            signals[i] = read_record(root, name, rate)

    return cached_array(cache_dir / f"ptbxl_signals_{rate}hz_{key}.npy", (len(db), SECONDS * rate, LEADS),
                        np.float32, fill, meta)


def data_fingerprint(root: Path, db: pd.DataFrame, rate: int, cache_dir: Path) -> dict:
    """The sha256 of every file read (computed once, cached in `cache_dir`), and of the zip if we downloaded it."""
    files = [root / "ptbxl_database.csv", root / "scp_statements.csv"]
    files += [root / f"{name}{ext}" for name in db[RATES[rate]] for ext in (".hea", ".dat")]
    fingerprint = files_fingerprint(files, root, cache_dir)
    archive = downloaded(root)
    return {**fingerprint, "archive": archive} if archive else fingerprint


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


def task_spec(cfg: PtbxlConfig) -> TaskSpec:
    """12 leads, 10 s at the chosen rate, the label set's classes as the release has them (CLASS_COUNTS)."""
    return TaskSpec(name="ptbxl", input="signal", seq_len=SECONDS * cfg.sampling_rate,
                    n_outputs=CLASS_COUNTS[cfg.label_set], metric="auroc", d_input=LEADS)


@TASKS.register("ptbxl", PtbxlConfig)
def build(cfg: PtbxlConfig, data_root: Path) -> Task:
    """PTB-XL multi-label ECG classification (12 leads, 1000 or 5000 steps, macro AUROC)."""
    import pandas as pd

    spec = task_spec(cfg)
    data_root = Path(data_root)
    if cfg.download and not any((c / "ptbxl_database.csv").is_file() for c in (data_root, data_root / VERSION_DIR)):
        download_ptbxl(data_root)
    root = find_root(data_root)
    db, statements = read_tables(root)
    folds = pd.to_numeric(db["strat_fold"], errors="coerce")
    if folds.isna().any() or not folds.isin(range(1, 11)).all():
        raise DataError(f"{root / 'ptbxl_database.csv'}: strat_fold must hold integers 1..10")
    labels = label_lists(db, statements, cfg.label_set)
    keep = np.flatnonzero(labels.apply(len).to_numpy() > 0)  # records with no label of this set are dropped
    targets, classes = multi_hot(labels.iloc[keep])
    if len(classes) != spec.n_outputs:
        raise DataError(f"{root / 'ptbxl_database.csv'} with {root / 'scp_statements.csv'} label the records with "
                        f"{len(classes)} '{cfg.label_set}' classes; PTB-XL 1.0.3 has {spec.n_outputs}. These files "
                        f"are not (all of) the release: delete them and download it again from {ZIP_URL}")
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else root / "cache"
    signals = load_signals(root, db, cfg.sampling_rate, cache_dir)
    fold = folds.to_numpy()[keep]
    parts = {"train": np.isin(fold, TRAIN_FOLDS), "val": fold == VAL_FOLD, "test": fold == TEST_FOLD}
    for split, mask in parts.items():
        if not mask.any():
            raise DataError(f"PTB-XL {cfg.label_set}: the {split} fold(s) hold no labelled record; is the "
                            f"database complete? ({root / 'ptbxl_database.csv'})")
    mean, std = global_standardisation(signals, keep[parts["train"]])
    splits = {s: EcgDataset(signals, keep[m], targets[m], mean, std) for s, m in parts.items()}
    info = {"source": str(root), "label_set": cfg.label_set, "classes": classes, "rate": cfg.sampling_rate,
            "sizes": {k: len(v) for k, v in splits.items()}, "standardisation": [mean, std],
            "fingerprint": data_fingerprint(root, db, cfg.sampling_rate, cache_dir)}
    objective = Objective(multilabel_bce, functools.partial(MacroAUROC, classes))
    return Task(spec=spec, splits=splits, objective=objective, info=info)
