"""Reading CIFAR-10 from its published formats, shared by `scifar` and `cifar_bpd`.

CIFAR-10 is published by Alex Krizhevsky (University of Toronto) at https://www.cs.toronto.edu/~kriz/cifar.html
(Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009). Two formats are read, both to the
same arrays (images uint8 [N, 32, 32, 3] in HWC order, labels int64 [N]):

* the official Python release `cifar-10-batches-py/` (pickled dicts `data_batch_1..5`, `test_batch` with
  b'data' uint8 [N, 3072] laid out as 1024 R, 1024 G, 1024 B values in raster order, and b'labels');
* the Hugging Face dataset `uoft-cs/cifar10` (Parquet files, columns `img` = {bytes: PNG, path} and `label`),
  either as Parquet files under the data directory or from the Hugging Face hub cache, read through
  `datasets.load_dataset("parquet", ...)` so nothing touches the network.

If neither is found and downloading is allowed, the official tarball is fetched with urllib, its md5 checked
and extracted; otherwise a `DataError` says exactly what to fetch and where to put it. The data fingerprint of a
run's record is the sha256 of the files read (and of the tarball when it was downloaded here).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import ConfigError, DataError
from tasks._download import downloaded, fetch_and_extract
from tasks._fingerprint import files_fingerprint

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
PYTHON_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
HF_REPO = "uoft-cs/cifar10"
SOURCES = ("auto", "python", "parquet")


def fetch_instructions(root: Path, offer_download: bool = True) -> str:
    """How to fetch CIFAR-10 by hand; `offer_download`: also suggest task.download=true (not after it failed)."""
    download = ", or set task.download=true on a machine with network" if offer_download else ""
    return (
        f"Fetch CIFAR-10 in one of these forms:\n"
        f"  (a) the official Python release: download {CIFAR_URL} (md5 {CIFAR_MD5}) and extract it so that\n"
        f"      {root / PYTHON_DIR}/data_batch_1 exists (e.g. `mkdir -p {root} && "
        f"curl -L {CIFAR_URL} | tar xz -C {root}`){download};\n"
        f"  (b) the Hugging Face dataset {HF_REPO}: put its Parquet files (plain_text/train-*.parquet and "
        f"plain_text/test-*.parquet) under {root}, or download it once with "
        f"`huggingface-cli download {HF_REPO} --repo-type dataset` so it is in the hub cache."
    )


# ----------------------------------------------------------------------------------------------------------------
# Official Python release


def _unpickle(path: Path) -> dict:
    """One pickled batch. The files were written by Python 2, so keys are bytes (encoding='bytes')."""
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise DataError(
            f"CIFAR-10 batch file {path} is missing; re-extract {CIFAR_URL} into {path.parent.parent}"
        ) from None
    except Exception as e:  # truncated or not a pickle: pickle raises several kinds
        raise DataError(
            f"CIFAR-10 batch file {path} cannot be read ({type(e).__name__}: {e}); it is probably truncated. "
            f"Delete {path.parent} and extract {CIFAR_URL} (md5 {CIFAR_MD5}) again."
        ) from e
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        raise DataError(f"{path} is not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    return obj


def read_python_split(directory: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 32, 32, 3] and labels int64 [N] from `cifar-10-batches-py`."""
    images, labels = [], []
    for name in TRAIN_BATCHES if train else ["test_batch"]:
        path = directory / name
        batch = _unpickle(path)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        lab = np.asarray(batch[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DataError(f"{path}: b'data' has shape {data.shape} for {len(lab)} labels; expected [N, 3072]")
        # Each row is 1024 red, 1024 green, 1024 blue values, rows of 32 pixels top to bottom.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


# ----------------------------------------------------------------------------------------------------------------
# Hugging Face Parquet (uoft-cs/cifar10)


def _parquet_files(directory: Path) -> dict[str, list[str]]:
    """Train/test Parquet files under `directory`, by the hub's naming (`train-*.parquet`, `test-*.parquet`)."""
    files: dict[str, list[str]] = {"train": [], "test": []}
    for path in sorted(directory.rglob("*.parquet")):
        for split in files:
            if path.name.startswith(f"{split}-") or path.parent.name == split:
                files[split].append(str(path))
    return files if files["train"] and files["test"] else {}


def hub_snapshot() -> Path:
    """The current snapshot of `uoft-cs/cifar10` in the Hugging Face hub cache (may not exist).

    `huggingface-cli download` (and `load_dataset` online) store it as
    `<hub cache>/datasets--uoft-cs--cifar10/snapshots/<commit>/plain_text/*.parquet`, with `refs/main`
    naming the current commit; older snapshots must not be read too or images would repeat.
    """
    default = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    cache = Path(os.environ.get("HF_HUB_CACHE", os.environ.get("HUGGINGFACE_HUB_CACHE", default)))
    repo = cache / ("datasets--" + HF_REPO.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        return repo / "snapshots" / ref.read_text().strip()
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else repo / "snapshots" / "none"


def read_parquet_split(files: list[str], cache_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode a split of the HF dataset: PNG bytes -> uint8 [N, 32, 32, 3], labels int64."""
    import datasets
    from PIL import Image

    try:
        ds = datasets.load_dataset("parquet", data_files={"split": files}, split="split", cache_dir=cache_dir)
    except Exception as e:
        raise DataError(f"cannot read the CIFAR-10 Parquet files {files}: {type(e).__name__}: {e}") from e
    missing = {"img", "label"} - set(ds.column_names)
    if missing:
        raise DataError(
            f"{files[0]} lacks the column(s) {sorted(missing)} of {HF_REPO} (found {ds.column_names}); "
            f"these are not CIFAR-10 files of the Hugging Face dataset {HF_REPO}."
        )
    # Undecoded {bytes, path} dicts: we decode with PIL ourselves, which is faster than Image features.
    if isinstance(ds.features["img"], datasets.Image):
        ds = ds.cast_column("img", datasets.Image(decode=False))
    images = np.empty((len(ds), 32, 32, 3), dtype=np.uint8)
    for i, cell in enumerate(ds["img"]):
        raw = cell["bytes"] if isinstance(cell, dict) else cell
        try:
            images[i] = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
        except Exception as e:
            raise DataError(f"{files}: image {i} is not a 32x32 image ({type(e).__name__}: {e})") from e
    return images, np.asarray(ds["label"], dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Download


def download_cifar(root: Path, url: str = CIFAR_URL, md5: str = CIFAR_MD5) -> Path:
    """Download the official tarball, check its md5 and put `cifar-10-batches-py` (renamed whole) into `root`."""
    fetch_and_extract(url, root, f"{PYTHON_DIR}/data_batch_1", checksum=f"md5:{md5}",
                      instructions=fetch_instructions(root, offer_download=False))
    return root / PYTHON_DIR


# ----------------------------------------------------------------------------------------------------------------
# Entry point


def _python_dir(directory: Path) -> Path | None:
    for candidate in (directory / PYTHON_DIR, directory):
        if (candidate / "data_batch_1").exists() or (candidate / "test_batch").exists():
            return candidate
    return None


Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def _from_python(directory: Path, cache_dir: Path | None) -> tuple[Splits, str, dict[str, Any]]:
    data = {s: read_python_split(directory, s == "train") for s in ("train", "test")}
    fingerprint = files_fingerprint([directory / n for n in [*TRAIN_BATCHES, "test_batch"]], directory, cache_dir)
    archive = downloaded(directory.parent)
    return data, str(directory), {**fingerprint, "archive": archive} if archive else fingerprint


def load_cifar10(roots: list[Path], source: str = "auto", download: bool = False, hf_cache_dir: str | None = None,
                 cache_dir: Path | None = None) -> tuple[Splits, str, dict[str, Any]]:
    """{'train': (images, labels), 'test': (...)}, a description of where they came from, and their fingerprint.

    `roots` are searched in order (the task's data directory first). `source` restricts the format (one of
    SOURCES): auto | python | parquet. `download` fetches the official tarball into roots[0] when nothing is found.
    The fingerprint's digest is cached in `cache_dir` (None: computed every time).
    """
    existing = [r for r in roots if r.is_dir()]
    if source in ("auto", "python"):
        for root in existing:
            directory = _python_dir(root)
            if directory is not None:
                return _from_python(directory, cache_dir)
    if source in ("auto", "parquet"):
        search = existing + [hub_snapshot()]
        for root in search:
            files = _parquet_files(root) if root.is_dir() else {}
            if files:
                data = {s: read_parquet_split(files[s], hf_cache_dir) for s in ("train", "test")}
                fingerprint = files_fingerprint([Path(f) for f in files["train"] + files["test"]], root, cache_dir)
                return data, f"{HF_REPO} parquet under {root}", fingerprint
    if download and source in ("auto", "python"):
        return _from_python(download_cifar(roots[0]), cache_dir)
    looked = ", ".join(str(r) for r in roots)
    hint = fetch_instructions(roots[0], offer_download=not download)
    if download:  # only the Parquet form was looked for, which task.download does not fetch
        hint += "\n(task.download fetches the official Python release, with task.source=auto or python)"
    raise DataError(f"CIFAR-10 ({source}) not found in {looked}.\n{hint}")


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train/val indices exactly as `torch.utils.data.random_split(range(n), [n - val_size, val_size],
    generator=torch.Generator().manual_seed(seed))`, the split both published pipelines use."""
    if not 0 < val_size < n:
        raise ConfigError(f"task.val_size={val_size} must be between 1 and {n - 1} (the training images - 1)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n - val_size], perm[n - val_size:]
