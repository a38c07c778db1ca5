"""Files written whole or not at all.

Records, checkpoints, caches and generated data are written to a temporary file in the destination's
directory (the same filesystem, so the rename is atomic), flushed to disk and renamed over the final name. A
reader, also one on another node of a shared filesystem, sees the previous file or the new one, never part of
one; a writer killed halfway leaves only a hidden `.<name>.*.tmp` file, which no reader looks at.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# mkstemp makes files private to their owner; these are meant for whoever reads the results or data directory.
MODE = 0o644


def atomic_write(path: Path, content: str | bytes | Callable[[Path], None]) -> None:
    """Put `content` at `path` atomically: text (UTF-8), bytes, or a function that writes the file it is given.

    The function form is for writers that want a path (`torch.save`, NumPy memory maps); everything it does
    happens before the file becomes visible. The temporary file is removed if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), MODE)
            if callable(content):
                content(tmp)  # through its own handle; fsync below flushes the file whichever handle wrote it
            else:
                f.write(content.encode() if isinstance(content, str) else content)
                f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
