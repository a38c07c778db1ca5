"""The report's folder: a new report is written aside and swapped in whole, or not at all.

A build writes every file into a hidden staging folder inside `out` (`.seqbench-build-<host>-<pid>-<random>/`, the
same filesystem, so moving a file is a rename). Only when the whole report is there does `commit` swap it in:

  1. every file of the previous report (its manifest, `.seqbench-report.json`), and anything else standing where a
     new file goes (a symbolic link included, and a link standing for one of its folders), is moved aside into the
     staging folder;
  2. the new files are moved into place;
  3. the new manifest is renamed over the old one: the moment the new report becomes the report;
  4. the staging folder, with the previous report in it, is removed.

Each move of steps 1 and 2 is written to a journal in the staging folder before it is made. Any error before step 3
undoes the moves in reverse order, and the previous report stands as it was; stop signals wait until step 3 is
done. A process killed outright (SIGKILL, power) leaves its staging folder: the next build, holding the folder's
lock (`.seqbench-report.lock`), undoes what its journal says was done unless its step 3 had happened, and removes
it. Nothing is ever written through a symbolic link inside `out` (a link is moved aside, its target untouched), and
files outside the previous and the new report are left alone. A full disk (or quota, or file size limit) ends the
build as `NoSpace`, with the previous report intact.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from types import FrameType, TracebackType
from typing import Any

from harness.errors import UserError
from harness.files import HOST_TAG, DiskFull, RunLock, atomic_write, fsync_dir

MANIFEST = ".seqbench-report.json"  # the files the report in this folder consists of
LOCK = ".seqbench-report.lock"
STAGING = ".seqbench-build-"  # prefix of staging folders
ASIDE = ".previous"  # in a staging folder: what its commit moved out of the way
JOURNAL = ".journal"  # in a staging folder: one line per move of its commit, written before the move
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file size limit (ulimit -f) refused the file
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")
                     if hasattr(signal, name))
LOCK_WAIT_S = 600.0


class NoSpace(UserError):
    """The disk (or quota, or file size limit) of the report's folder refused a file of the report."""

    def __init__(self, out: Path):
        super().__init__(f"no space left for the report in {out} (disk full, quota or file size limit): the new "
                         f"report was not kept and the previous one there is unchanged; free some space (or write "
                         f"the report elsewhere: --out, or paths.root for a run's report) and rerun")


class Stopped(BaseException):
    """A stop signal arrived while a report was being built (raised by the handler `python -m reports` installs).
    `written` says whether the new report had already been swapped in whole."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.written = False


def valid_rel(rel: object) -> str | None:
    """`rel` if it names a file inside the folder (relative, no `..`, not one of the folder's own files)."""
    if not isinstance(rel, str) or not rel:
        return None
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts or parts[0] in (MANIFEST, LOCK) \
            or parts[0].startswith(STAGING):
        return None
    return rel


def read_manifest(path: Path) -> list[str]:
    """The report's files a manifest lists; entries that do not name a file inside the folder are ignored."""
    try:
        listed = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in listed if valid_rel(r)] if isinstance(listed, list) else []


def refusal(exc: BaseException, out: Path) -> UserError | None:
    """The user's error for a filesystem that refused the report (full, read-only, not ours), or None."""
    if isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in NO_SPACE):
        return NoSpace(out)
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"cannot write the report in {out}: {exc.strerror} ({exc.filename}); pass a folder you can "
                         f"write to (--out), and rerun")
    return None


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Stop signals that arrive inside the block are handled after it, by whatever handled them before (the
    default action included). Outside the main thread, where handlers cannot be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def defer(signum: int, _frame: FrameType | None) -> None:
        arrived.append(signum)

    previous = {s: signal.signal(s, defer) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        _restore(previous)
        for s in dict.fromkeys(arrived):
            signal.raise_signal(s)


class Journal:
    """The moves of one commit, a line each in its staging folder, written before the move: what `undo` reverses,
    in this process after an error or in the next build after a kill."""

    def __init__(self, staging: Path):
        self.staging = staging
        self.path = staging / JOURNAL

    def note(self, action: str, rel: str) -> None:
        with self.path.open("a") as f:  # unbuffered to the kernel: survives the process being killed
            f.write(json.dumps([action, rel]) + "\n")

    def entries(self) -> list[tuple[str, str]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                action, rel = json.loads(line)
            except ValueError:
                continue  # the last line, cut by a kill: its move did not happen
            if action in ("aside", "place", "mkdir") and valid_rel(rel):
                out.append((action, rel))
        return out


def _is_dir(path: Path) -> bool:
    """A real folder, not a link to one."""
    return path.is_dir() and not path.is_symlink()


def undo(out: Path, staging: Path) -> None:
    """Undo the moves the journal of `staging` lists, newest first: the folder is back as before the commit."""
    aside = staging / ASIDE
    for action, rel in reversed(Journal(staging).entries()):
        if action == "place":
            if (out / rel).exists() and not (staging / rel).exists():
                os.replace(out / rel, staging / rel)
        elif action == "mkdir":
            try:
                (out / rel).rmdir()
            except OSError:
                pass  # not empty, or not there: keep it
        elif os.path.lexists(aside / rel):
            if os.path.lexists(out / rel) and not _is_dir(out / rel):
                (out / rel).unlink()
            os.rename(aside / rel, out / rel)


class ReportFolder:
    """`with ReportFolder(out) as folder:` write the report's files under `folder.staging` (`text`, `write`), then
    `folder.commit()`. Leaving the block without a commit, or with an error, leaves `out` as it was."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.staging = self.out / f"{STAGING}{HOST_TAG}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lock = RunLock(self.out / LOCK)
        self.written: list[str] = []
        self.committed = False
        self.keep_staging = False  # an undo that failed: the previous report is in the staging folder

    # -- the lock, leftovers, the staging folder ------------------------------------------------------------------

    def __enter__(self) -> ReportFolder:
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"the report's folder {self.out} is a file; pass a folder (it is created if missing)")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._acquire()
            try:
                self._recover()
                self.staging.mkdir()
            except BaseException:
                self.lock.release()
                raise
        except OSError as exc:
            error = refusal(exc, self.out)
            if error is None:
                raise
            raise error from None
        return self

    def _acquire(self) -> None:
        waited = 0.0
        while not self.lock.acquire():
            if waited == 0.0:
                print(f"seqbench: waiting for the report being built in {self.out} by {self.lock.holder_text()}",
                      file=sys.stderr, flush=True)
            if waited >= LOCK_WAIT_S:
                raise UserError(f"another report is being built in {self.out} ({self.lock.holder_text()}) for "
                                f"{waited:.0f} s; wait for it to end, or pass another --out")
            time.sleep(0.5)
            waited += 0.5

    def _recover(self) -> None:
        """Finish what a killed build left: its commit undone unless it had swapped its report in, its staging
        folder removed. Under the lock, every staging folder is a dead build's."""
        for left in sorted(self.out.glob(f"{STAGING}*")):
            if not _is_dir(left):
                continue
            if (left / MANIFEST).exists():  # killed before its report became the report
                undo(self.out, left)
            shutil.rmtree(left)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.staging.exists() and not self.keep_staging:
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self.lock.release()
        if isinstance(exc, Stopped):
            exc.written = self.committed
        if exc is not None and (error := refusal(exc, self.out)) is not None:
            raise error from None

    # -- writing the report ---------------------------------------------------------------------------------------

    def write(self, rel: str, content: str | bytes | Callable[[Path], None]) -> Path:
        """Write one file of the report (text, bytes, or a function that writes the path it is given)."""
        check_stop()
        path = self.staging / rel
        atomic_write(path, content)
        return self.add(path)

    def add(self, path: Path) -> Path:
        """Count a file already written under the staging folder as part of the report."""
        check_stop()
        rel = path.relative_to(self.staging).as_posix()
        if rel not in self.written:
            self.written.append(rel)
        return path

    # -- the swap -------------------------------------------------------------------------------------------------

    def commit(self) -> None:
        """Swap the staged report in for the previous one (module docstring); on any error, the previous one
        stays."""
        check_stop()
        atomic_write(self.staging / MANIFEST, json.dumps(sorted(self.written), indent=1) + "\n")
        old = read_manifest(self.out / MANIFEST)
        journal = Journal(self.staging)
        with signals_deferred():
            try:
                self._move_aside(old, journal)
                self._place(journal)
                os.replace(self.staging / MANIFEST, self.out / MANIFEST)  # the new report is the report from here
            except BaseException:
                try:
                    undo(self.out, self.staging)
                except BaseException:
                    self.keep_staging = True  # the next build, under the lock, finishes the undo
                    raise
                raise
            self.committed = True
            fsync_dir(self.out)
        self._prune(old)

    def _move_aside(self, old: list[str], journal: Journal) -> None:
        """Every previous file, and whatever file or link stands where a new file or one of its folders goes, into
        ASIDE. A real folder is never moved (it may hold the user's files): one where a new file goes is an error."""
        new = set(self.written)
        for rel in dict.fromkeys([*old, *self.written]):
            parts = PurePosixPath(rel).parts
            for depth in range(1, len(parts) + 1):
                sub = "/".join(parts[:depth])
                path = self.out / sub
                if not os.path.lexists(path):
                    break
                if _is_dir(path):
                    if depth < len(parts):
                        continue  # a folder on the way: look further in
                    if rel in new:
                        raise UserError(f"{path} is a folder where the report writes a file; move it away and rerun")
                    break
                if depth < len(parts) and rel not in new:
                    break  # a previous file whose folder became a link or a file: not ours to move
                journal.note("aside", sub)
                (self.staging / ASIDE / sub).parent.mkdir(parents=True, exist_ok=True)
                os.rename(path, self.staging / ASIDE / sub)
                break

    def _place(self, journal: Journal) -> None:
        for rel in self.written:
            parts = PurePosixPath(rel).parts
            for depth in range(1, len(parts)):
                sub = "/".join(parts[:depth])
                if not (self.out / sub).exists():
                    journal.note("mkdir", sub)
                    (self.out / sub).mkdir()
            journal.note("place", rel)
            os.replace(self.staging / rel, self.out / rel)

    def _prune(self, old: list[str]) -> None:
        """The folders of the previous report's files that are empty now (its figures/ when the new report has no
        figure) go too."""
        for rel in old:
            parent = (self.out / rel).parent
            while parent != self.out and _is_dir(parent):
                try:
                    parent.rmdir()
                except OSError:
                    break  # not empty
                parent = parent.parent


_requested: list[int] = []  # stop signals that arrived inside `stops_raise`


@contextmanager
def stops_raise() -> Iterator[None]:
    """Inside the block, a stop signal raises `Stopped` (so that a build removes its staging folder on the way out);
    the previous handlers are put back after it.

    A handler's exception can land where Python ignores exceptions (a weakref or garbage-collection callback): such
    a Stopped is kept quiet, and `check_stop` raises it again at the build's next file or at its swap."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: FrameType | None) -> None:
        _requested.append(signum)
        raise Stopped(signum)

    def quiet(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, Stopped):
            hook(unraisable)

    _requested.clear()
    hook, sys.unraisablehook = sys.unraisablehook, quiet
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        _restore(previous)
        sys.unraisablehook = hook
        _requested.clear()


def check_stop() -> None:
    """Raise the stop a callback swallowed, if any (see `stops_raise`)."""
    if _requested:
        raise Stopped(_requested[0])


def _restore(handlers: dict[int, Any]) -> None:
    for s, handler in handlers.items():
        signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
