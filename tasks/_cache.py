"""Preprocessed arrays cached on disk: never read half-written, damaged or stale.

A cache is an .npy file and its sidecar `<name>.json`, written LAST: the inputs it was made from (`meta`), the
array's shape, dtype, size in bytes, sha256 and modification time. A cache is used only when its sidecar describes
the same inputs and the file has the recorded size; its sha256 is checked again whenever its mtime changed (a copy,
or a write that kept the size). Anything else (no sidecar: a crash between the two writes; a cut or altered file)
is rebuilt from the source, with a warning naming the file.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.files import atomic_write
from tasks._fingerprint import file_sha256


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _record(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    array = np.load(path, mmap_mode="r")
    st = path.stat()
    return {"meta": meta, "shape": list(array.shape), "dtype": array.dtype.name, "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}


def load_cached(path: Path, shape: tuple[int, ...], dtype: type, meta: dict[str, Any]) -> np.ndarray | None:
    """The cache at `path`, memory-mapped, if it is complete, intact and made from the inputs `meta`; else None."""
    try:
        record = json.loads(sidecar(path).read_text())
        st = path.stat()
    except (OSError, ValueError):
        return None  # never completed (or its sidecar is unreadable): rebuilt
    if record.get("meta") != meta:
        return None
    if record.get("shape") != list(shape) or record.get("dtype") != np.dtype(dtype).name:
        return None
    if st.st_size != record.get("bytes"):
        warnings.warn(f"cache {path} has {st.st_size} bytes, its sidecar says {record.get('bytes')}: it is damaged "
                      f"and is built again", stacklevel=3)
        return None
    if st.st_mtime_ns != record.get("mtime_ns"):
        if file_sha256(path) != record.get("sha256"):
            warnings.warn(f"cache {path} does not match the sha256 of its sidecar: it was altered and is built again",
                          stacklevel=3)
            return None
        try:  # intact, only touched: remember the new mtime so that it is not hashed again
            atomic_write(sidecar(path), json.dumps({**record, "mtime_ns": st.st_mtime_ns}))
        except OSError:
            pass
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return array if array.shape == tuple(shape) and array.dtype == np.dtype(dtype) else None


def fill_cached(path: Path, shape: tuple[int, ...], dtype: type, fill: Callable[[np.ndarray], None],
                meta: dict[str, Any]) -> np.ndarray:
    """Run `fill` on a new array of `shape` and keep it as the cache `path` made from the inputs `meta`; returns it
    memory-mapped.

    The array is a memory map in the temporary file of an atomic write (datasets need not fit in memory), renamed to
    `path` once `fill` returned; the sidecar follows. Where the directory cannot be written, the array is filled in
    memory, with a warning, and not cached.
    """
    filling = False

    def write(tmp: Path) -> None:
        nonlocal filling
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        filling = True
        fill(array)
        array.flush()
        del array

    try:
        atomic_write(path, write)
    except OSError as e:
        if filling:
            raise
        warnings.warn(f"cannot cache {path.name} in {path.parent} ({e}); it will be computed again next time",
                      stacklevel=3)
        array = np.zeros(shape, dtype=dtype)
        fill(array)
        return array
    atomic_write(sidecar(path), json.dumps(_record(path, meta)))
    return np.load(path, mmap_mode="r")


def cached_array(path: Path, shape: tuple[int, ...], dtype: type, fill: Callable[[np.ndarray], None],
                 meta: dict[str, Any]) -> np.ndarray:
    """The cache at `path` if it is intact and made from `meta`, else built by `fill` and kept there."""
    cached = load_cached(path, shape, dtype, meta)
    return cached if cached is not None else fill_cached(path, shape, dtype, fill, meta)
