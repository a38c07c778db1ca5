"""Files safe against killed writers, full disks and a second process: atomic writes and the run lock.

Records, checkpoints, caches and generated data are written to a temporary file in the destination's
directory (the same filesystem, so the rename is atomic), flushed to disk and renamed over the final name, and
the directory is flushed after the rename. A reader, also one on another node of a shared filesystem, sees the
previous file or the new one, never part of one; a writer killed halfway leaves only a hidden
`.<name>.<host>-<pid>.<random>.tmp` file, which no reader looks at and `remove_stale_temps` deletes.

A run directory is used by one process at a time (`RunLock`): a lock file created exclusively, which a later
process takes over only when its holder is gone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import UserError

HOST = socket.gethostname()
# In temporary files' names: a writer's pid means something only on its own host.
HOST_TAG = hashlib.sha1(HOST.encode()).hexdigest()[:8]
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# A folder that cannot be written (permissions, a read-only filesystem), or a file where a folder should be.
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST)


class DiskFull(UserError):
    """The disk (or the user's quota) holding `path` is full; the previous version of the file is intact."""

    def __init__(self, path: Path):
        super().__init__(f"no space left on the disk of {path} (disk full or quota exceeded): it was not written and "
                         f"any previous version of it is intact; free some space (or point paths.root or paths.data "
                         f"to another disk) and rerun the same command to resume")
        self.path = path


class WriteError(UserError, OSError):
    """A write that failed for a reason the user can fix, with the message that says how. Also an OSError (with the
    original errno), so that callers that go on without the file, such as a cache in a read-only folder, still do."""

    def __init__(self, errno_: int | None, strerror: str | None, filename: str | None, message: str):
        super().__init__(errno_, strerror, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # pickled whole (a submitit job hands its exception back)
        return type(self), (self.errno, self.strerror, self.filename, self.message)


def write_error(exc: OSError, path: Path | str | None = None) -> UserError | None:
    """The user error an OSError met writing `path` (default: the file the error names) stands for, or None: a full
    disk, the shell's file-size limit, or a folder that cannot be written."""
    if isinstance(exc, UserError):
        return exc
    where = Path(path if path is not None else exc.filename or "?")
    if exc.errno in DISK_FULL:
        return DiskFull(where)
    if exc.errno == errno.EFBIG:
        return WriteError(exc.errno, exc.strerror, str(where), f"{where} would exceed this shell's file-size limit "
                          f"(`ulimit -f`): it was not written and any previous version of it is intact; raise the "
                          f"limit (`ulimit -f unlimited`) and rerun the same command to resume")
    if exc.errno in NOT_WRITABLE:
        named = exc.filename if exc.filename is not None else where
        return WriteError(exc.errno, exc.strerror, str(named), f"cannot write {named} ({exc.strerror}): point "
                          f"paths.root (results) or paths.data (data and caches) at a folder you can write, then "
                          f"rerun the same command")
    return None


def atomic_write(path: Path, content: str | bytes | Callable[[Path], None]) -> None:
    """Put `content` at `path` atomically: text (UTF-8), bytes, or a function that writes the file it is given.

    The function form is for writers that want a path (`torch.save`, NumPy memory maps); everything it does
    happens before the file becomes visible. The temporary file is removed if anything fails; a full disk raises
    DiskFull, the file-size limit or a folder that cannot be written a WriteError (write_error). The file's mode
    follows the umask, as any created file's does (mkstemp's are private).
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{HOST_TAG}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            if callable(content):
                content(tmp)  # through its own handle; fsync below flushes the file whichever handle wrote it
            else:
                f.write(content.encode() if isinstance(content, str) else content)
                f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)  # the rename itself survives a crash of the machine
    except OSError as exc:
        error = write_error(exc, path)
        if error is None:
            raise
        raise error from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask sets while it reads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: Path) -> None:
    """A folder's entries (its renames) on the disk, so that they survive a crash of the machine."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot flush a directory; the rename has happened all the same
    finally:
        os.close(fd)


def remove_stale_temps(directory: Path, older_than_s: float = 60.0) -> list[Path]:
    """Delete the temporary files of killed writers in `directory`: those whose writer (named in the file) is a
    dead process of this host, and those older than `older_than_s` (0 where the caller is the only writer, as the
    holder of a run's lock is in its run directory). Returns the files deleted."""
    removed = []
    now = time.time()
    for tmp in Path(directory).glob(".*.tmp"):
        try:
            stale = now - tmp.stat().st_mtime >= older_than_s or _writer_is_dead(tmp.name)
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            pass  # renamed or removed by its writer meanwhile
    return removed


def _writer_is_dead(name: str) -> bool:
    parts = name[1:-len(".tmp")].rsplit(".", 2)  # <name>, <host>-<pid>, <random>
    host, _, pid = parts[1].partition("-") if len(parts) == 3 else ("", "", "")
    return host == HOST_TAG and pid.isdigit() and not pid_alive(int(pid))


def pid_alive(pid: int) -> bool:
    """Is process `pid` of this host running (or a zombie not yet reaped)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class RunLock:
    """One process at a time in a run directory: a lock file created exclusively (O_CREAT|O_EXCL, atomic also on
    NFS), holding the holder's host, pid and start time.

    A lock whose holder is a dead process of this host, or which was not refreshed for STALE_AFTER_S (its holder
    on another host is gone), is taken over with a message. The holder refreshes the lock's mtime (`refresh`) at
    every checkpoint and every tenth of an epoch, so the timeout has to exceed only the longest stretch without one
    (an evaluation, preparing a dataset).
    """

    STALE_AFTER_S = 2 * 3600.0
    REFRESH_EVERY_S = 60.0
    UNWRITTEN_GRACE_S = 30.0  # an empty lock younger than this is being written by its holder

    def __init__(self, path: Path):
        self.path = Path(path)
        self.token = uuid.uuid4().hex
        self.holder: dict[str, Any] = {}  # who holds the lock when acquire() failed
        self._refreshed = 0.0

    def acquire(self) -> bool:
        """Take the lock; False when a live process holds it (described by `self.holder`, `holder_text()`)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a results folder that cannot be written
            raise write_error(exc) or exc from None
        for _ in range(5):  # a stale lock can be taken over by a competitor first; then that one holds it
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self._read()
                reason = self._stale(holder)
                if reason is None:
                    self.holder = holder
                    return False
                print(f"seqbench: taking over the lock {self.path}: {reason}", file=sys.stderr, flush=True)
                self._break(holder)
                continue
            except OSError as exc:
                raise write_error(exc) or exc from None
            with os.fdopen(fd, "w") as f:
                json.dump({"host": HOST, "pid": os.getpid(), "started": datetime.now(UTC).isoformat(timespec="seconds"),
                           "token": self.token}, f)
                f.flush()
                os.fsync(f.fileno())
            self._refreshed = time.monotonic()
            return True
        self.holder = self._read()
        return False

    def holder_text(self) -> str:
        h = self.holder
        return f"pid {h.get('pid', '?')} on {h.get('host', '?')} since {h.get('started', '?')}"

    def refresh(self) -> None:
        """Mark the lock as alive (at most once every REFRESH_EVERY_S)."""
        if time.monotonic() - self._refreshed >= self.REFRESH_EVERY_S:
            self._refreshed = time.monotonic()
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass

    def release(self) -> None:
        if self._read().get("token") == self.token:  # not a lock another process took over meanwhile
            self.path.unlink(missing_ok=True)

    def _read(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _stale(self, holder: dict[str, Any]) -> str | None:
        """Why the lock `holder` describes is stale, or None while its holder may be alive."""
        age = self._age()
        if not holder:
            return f"it is unreadable and {age:.0f} s old" if age > self.UNWRITTEN_GRACE_S else None
        pid = holder.get("pid")
        if holder.get("host") == HOST and isinstance(pid, int) and not pid_alive(pid):
            return f"its holder, pid {pid} on this host, is no longer running"
        if age > self.STALE_AFTER_S:
            return f"its holder, pid {pid} on {holder.get('host')}, has not refreshed it for {age / 3600:.1f} h"
        return None

    def _break(self, seen: dict[str, Any]) -> None:
        """Remove the stale lock `seen`, unless another process replaced it since: a second lock file serialises
        the processes breaking it, so that none removes the fresh lock of one that came first."""
        guard = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > self.UNWRITTEN_GRACE_S:
                    guard.unlink(missing_ok=True)  # its owner was killed while breaking
            except FileNotFoundError:
                pass
            time.sleep(0.05)
            return
        os.close(fd)
        try:
            if self._read() == seen:
                self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)
