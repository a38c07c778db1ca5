"""Preprocessed arrays cached on disk, never read half-written."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.files import atomic_write


def fill_cached(path: Path, shape: tuple[int, ...], dtype: type, fill: Callable[[np.ndarray], None],
                before_publish: Callable[[], None] | None = None) -> np.ndarray:
    """Run `fill` on a new array of `shape` and keep it as the .npy cache `path`; returns it memory-mapped.

    The array is a memory map in the temporary file of an atomic write (datasets need not fit in memory), made
    visible at `path` only once `fill` returned and `before_publish` (e.g. writing the cache's metadata) ran, so a
    crashed run never leaves a file that looks like a cache. Where the directory cannot be written, the array is
    filled in memory, with a warning, and not cached.
    """
    filling = False

    def write(tmp: Path) -> None:
        nonlocal filling
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        filling = True
        fill(array)
        array.flush()
        del array
        if before_publish is not None:
            before_publish()

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
    return np.load(path, mmap_mode="r")
