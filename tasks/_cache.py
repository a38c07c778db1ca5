"""Preprocessed arrays cached on disk, never read half-written."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np


def fill_cached(path: Path, shape: tuple[int, ...], dtype: type, fill: Callable[[np.ndarray], None],
                before_publish: Callable[[], None] | None = None) -> np.ndarray:
    """Run `fill` on a new array of `shape` and keep it as the .npy cache `path`; returns it memory-mapped.

    The array is a memory map in a temporary file beside `path` (datasets need not fit in memory) and is
    renamed to `path` only once `fill` returned and `before_publish` (e.g. writing the cache's metadata) ran,
    so a crashed run never leaves a file that looks like a cache. Where the directory cannot be written, the
    array is filled in memory, with a warning, and not cached.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a cache in a shared data directory serves everyone
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    except OSError as e:
        warnings.warn(f"cannot cache {path.name} in {path.parent} ({e}); it will be computed again next time",
                      stacklevel=3)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        tmp, array = None, np.zeros(shape, dtype=dtype)
    try:
        fill(array)
        if tmp is None:
            return array
        array.flush()
        del array
        if before_publish is not None:
            before_publish()
        os.replace(tmp, path)
        return np.load(path, mmap_mode="r")
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
