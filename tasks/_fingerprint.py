"""Digests of the files a task read: the `fingerprint` of the data in a run's record, and the check of caches.

A fingerprint is one sha256 over the name, size and sha256 of every file read. Hashing a whole dataset (2.4 GB for
Speech Commands) is done once: the digest is cached under a key made of the files' names, sizes and modification
times, which is cheap to recompute at every build, so a changed file (new size or mtime) is hashed again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.files import atomic_write
from harness.progress import bar as progress_bar


def file_digests(path: Path, algorithms: Sequence[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of the file at `path`, one per hashlib algorithm, in one read."""
    hashes = [hashlib.new(a) for a in algorithms]
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            for h in hashes:
                h.update(chunk)
    return {a: h.hexdigest() for a, h in zip(algorithms, hashes)}


def file_sha256(path: Path) -> str:
    return file_digests(path)["sha256"]


def combine(entries: Iterable[tuple[str, int, str]]) -> str:
    """One sha256 over (name, size in bytes, sha256) of each file, in the order given."""
    h = hashlib.sha256(b"seqbench-files-v1\n")
    for name, size, digest in entries:
        h.update(f"{name}\t{size}\t{digest}\n".encode())
    return h.hexdigest()


def files_fingerprint(paths: Sequence[Path], base: Path, cache_dir: Path | None) -> dict[str, Any]:
    """{"sha256", "files", "bytes"} of `paths` (named relative to `base` in the digest), from the cache in `cache_dir`
    when the files' sizes and mtimes are those it was computed from. Where `cache_dir` cannot be written, the digest
    is computed again next time."""
    files = sorted((p.relative_to(base).as_posix(), p) for p in paths)
    stats = {name: path.stat() for name, path in files}
    key = "".join(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n" for name, st in stats.items())
    cached = cache_dir / f"fingerprint_{hashlib.sha256(key.encode()).hexdigest()[:20]}.json" if cache_dir else None
    if cached is not None:
        try:
            return json.loads(cached.read_text())
        except (OSError, ValueError):
            pass  # absent or damaged: computed again
    bar = progress_bar(files, desc="fingerprinting the data", unit="file", disable=len(files) < 2000)
    digests = [(name, stats[name].st_size, file_sha256(path)) for name, path in bar]
    out = {"sha256": combine(digests), "files": len(digests), "bytes": sum(size for _, size, _ in digests)}
    if cached is not None:
        try:
            atomic_write(cached, json.dumps(out) + "\n")
        except OSError:
            pass  # e.g. a read-only data directory: the fingerprint is still recorded, just not kept
    return out
