"""Fetching a dataset's published archive (tar or zip) and unpacking it where the task reads it.

Only https:// URLs are fetched (file:// reads a local copy of the archive). Every archive's sha256 is computed
while it is checked, and recorded beside the data in `download.json` ({url, sha256, bytes, checked}), which the
tasks put in the data fingerprint of their records: where the publisher gives no checksum, that is what says which
archive a run's data came from.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from harness.errors import DataError
from harness.files import atomic_write
from tasks._fingerprint import file_digests

SCHEMES = ("https", "file")
RECORD = "download.json"


def downloaded(root: Path) -> dict[str, Any] | None:
    """What `fetch_and_extract` recorded about the archive the data in `root` came from (None: not downloaded by us)."""
    try:
        return json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        return None


def fetch_and_extract(url: str, root: Path, marker: str, *, instructions: str, checksum: str | None) -> dict[str, Any]:
    """Download the archive at `url`, check it, unpack it and move the folder that holds `marker` into `root`.

    `marker` is a path inside the archive that identifies the data (e.g. `cifar-10-batches-py/data_batch_1`); the
    entries of the folder holding it are moved into `root`, the one holding the marker last. `checksum` is
    `"<hashlib algorithm>:<hex digest>"` of the archive as its publisher gives it, e.g. `"md5:c58f..."`, or None
    where none is published. Download and unpacking happen in temporary files inside `root` (one filesystem, so the
    moves are renames) that are removed whatever happens: an interrupted download never leaves anything that looks
    like data. Errors are DataErrors; `instructions` (how to fetch the data by hand) is added to those of the
    download itself. Returns what is recorded in `root/download.json`.
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in SCHEMES:
        raise DataError(f"refusing to download {url}: only https:// URLs (or file:// for a local copy) are fetched.\n"
                        f"{instructions}")
    root.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=root, prefix=".download-", suffix=".part")
    archive = Path(name)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        algorithm, expected = checksum.split(":", 1) if checksum else ("sha256", None)
        digests = file_digests(archive, sorted({"sha256", algorithm}))
        if expected is not None and digests[algorithm] != expected.lower():
            raise DataError(f"download of {url} has {algorithm} {digests[algorithm]}, expected {expected}; the file "
                            f"is corrupt or not the published one, try again")
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
        record = {"url": url, "sha256": digests["sha256"], "bytes": archive.stat().st_size,
                  "checked": checksum if expected is not None else None}
        top = found[0].parents[depth - 1]
        holder = Path(marker).parts[0]
        for item in sorted(top.iterdir(), key=lambda p: p.name == holder):
            os.replace(item, root / item.name)
        atomic_write(root / RECORD, json.dumps(record, indent=1) + "\n")
        return record
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"downloading {url} failed ({type(e).__name__}: {e}).\n{instructions}") from e
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
