"""Fetching a dataset's published archive (tar or zip) and unpacking it where the task reads it."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from harness.errors import DataError


def _file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_and_extract(url: str, root: Path, marker: str, *, instructions: str, checksum: str | None = None) -> None:
    """Download the archive at `url`, check it, unpack it and move the folder that holds `marker` into `root`.

    `marker` is a path inside the archive that identifies the data (e.g. `cifar-10-batches-py/data_batch_1`); the
    entries of the folder holding it are moved into `root`, the one holding the marker last. `checksum` is
    `"<hashlib algorithm>:<hex digest>"` of the archive, e.g. `"md5:c58f..."`. Download and unpacking happen in
    temporary files inside `root` (one filesystem, so the moves are renames) that are removed whatever happens:
    an interrupted download never leaves anything that looks like data. Errors are DataErrors; `instructions`
    (how to fetch the data by hand) is added to those of the download itself.
    """
    root.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=root, prefix=".download-", suffix=".part")
    archive = Path(name)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        if checksum is not None:
            algorithm, expected = checksum.split(":", 1)
            got = _file_digest(archive, algorithm)
            if got != expected:
                raise DataError(f"download of {url} has {algorithm} {got}, expected {expected}; the file is corrupt, "
                                f"try again")
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(staging)  # zipfile strips absolute paths and '..' from member names
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")  # 'data' refuses absolute paths and links out of staging
        depth = len(Path(marker).parts)
        found = sorted(staging.rglob(marker), key=lambda p: len(p.parts))
        if not found:
            raise DataError(f"{url} does not contain {marker}")
        top = found[0].parents[depth - 1]
        holder = Path(marker).parts[0]
        for item in sorted(top.iterdir(), key=lambda p: p.name == holder):
            os.replace(item, root / item.name)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"downloading {url} failed ({type(e).__name__}: {e}).\n{instructions}") from e
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
