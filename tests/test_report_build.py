"""A report survives anything: a failed build, an error or a kill in the middle of the swap, SIGTERM at random
moments of a rebuild, a full disk, symbolic links in its folder and `$` in names. After each, the folder holds the
previous report or the new one whole, byte for byte, and nothing else of the build."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.results import Store
from reports import build
from reports.__main__ import main
from reports.output import LOCK, MANIFEST, STAGING, ReportFolder
from tests.helpers import ROOT


def record(run_id: str, model: str, seed: int, test: float, d_model: int = 32) -> dict[str, Any]:
    config = {"task": {"name": "listops"}, "model": {"name": model, "d_model": d_model}, "seed": seed,
              "sweep": "s"}
    return {"run_id": run_id, "kind": "train", "sweep": "s", "task": "listops", "model": model, "seed": seed,
            "status": "complete", "config": config, "params": 1000 * d_model,
            "metrics": {"metric": "accuracy", "higher_is_better": True, "val": test, "test": test,
                        "history": [{"epoch": e, "train_loss": 1.0 / e, "val": test} for e in (1, 2)]},
            "throughput": {"train_tokens_per_s": 1e4}}


def make_store(root: Path, models: list[str]) -> Path:
    store = Store(root)
    for i, model in enumerate(models):
        for seed in (0, 1):
            store.write(record(f"{model}-{seed}", model, seed, 0.3 + i / 10 + seed / 100))
    return root


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two stores whose reports differ in every file (and in which files there are: one figure per board)."""
    root = tmp_path_factory.mktemp("stores")
    return make_store(root / "a", ["s4"]), make_store(root / "b", ["s4d", "sgconv", "transformer"])


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder`: a file's bytes, a link's target (as 'link -> target'), a folder as 'dir'."""
    out: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out


def report_of(store: Path, out: Path) -> dict[str, bytes | str]:
    build(store, out)
    return snapshot(out)


def test_a_failed_build_leaves_the_previous_report(stores: tuple[Path, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = stores
    before = report_of(a, tmp_path / "out")
    assert MANIFEST in before and "figures/curves_listops.png" in before

    def broken(*_: Any) -> str:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(sys.modules["reports.build"], "to_html", broken)  # late: figures and tables already staged
    with pytest.raises(RuntimeError, match="broken on purpose"):
        build(b, tmp_path / "out")
    assert snapshot(tmp_path / "out") == before  # no staging folder, no lock, no empty folder left


def test_a_first_build_that_fails_leaves_no_folder_behind(stores: tuple[Path, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules["reports.build"], "to_latex", lambda *_: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        build(stores[0], tmp_path / "out")
    assert snapshot(tmp_path / "out") == {}


def swap_moves(k: int, then: Any) -> tuple[Any, Any]:
    """os.replace and os.rename that call `then(dst)` at the k-th move of a swap: a move into or out of the staging
    folder (the atomic writes that stage the files move within it, and are not counted)."""
    calls = {"n": 0}

    def wrap(real: Any) -> Any:
        def move(src: Any, dst: Any) -> None:
            if STAGING not in str(src) or STAGING not in str(dst):
                calls["n"] += 1
                if calls["n"] == k:
                    then(dst)
            real(src, dst)
        return move

    return wrap(os.replace), wrap(os.rename)


def _io_error(dst: Any) -> None:
    raise OSError(errno.EIO, "injected I/O error", str(dst))


def test_an_error_at_any_move_of_the_swap_is_undone(stores: tuple[Path, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The swap moves the previous report's files aside, then the new ones in, then renames the manifest: an error
    at the first move, in the middle of moving aside, at the first and the last placement, and at the renaming of
    the manifest (the last move) each leaves the previous report."""
    before = report_of(stores[0], tmp_path / "out")
    n_old = sum(1 for k, v in before.items() if v != "dir" and k != MANIFEST)
    for k in (1, n_old // 2, n_old + 1, n_old + len(STAGED), n_old + len(STAGED) + 1):
        with monkeypatch.context() as m:
            replace, rename = swap_moves(k, _io_error)
            m.setattr(os, "replace", replace)
            m.setattr(os, "rename", rename)
            with pytest.raises(OSError, match="injected"):
                with ReportFolder(tmp_path / "out") as folder:
                    _stage(folder, stores[1])
        assert snapshot(tmp_path / "out") == before, f"error at move {k}"


STAGED = ("leaderboard.md", "report.tex", "report.html", "summary.csv", "latex/a.tex", "latex/b.tex",
          "figures/curves_s4d.png", "figures/curves_sgconv.png", "figures/params_x.png")


def _stage(folder: ReportFolder, store: Path) -> None:
    """Stage the report of `store` by hand (the files `build` writes: their content does not matter here) and
    commit it: atomic_write inside counts no move of the swap, so the k-th move is the swap's k-th."""
    for rel in STAGED:
        folder.write(rel, f"{store} {rel}")
    folder.commit()


def _killed_commit(out: str, k: int) -> None:
    """In a child: a report staged and committed, the process killed (SIGKILL) at the k-th move of the swap, or
    (k = 0) right after the swap."""
    def kill(*_: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace, os.rename = swap_moves(k, kill)
    if k == 0:
        ReportFolder._prune = kill  # type: ignore[method-assign]  # what follows the manifest's rename
    with ReportFolder(Path(out)) as folder:
        _stage(folder, Path("new"))


def test_a_build_killed_during_the_swap_is_undone_by_the_next(stores: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGKILL leaves a staging folder with its journal, and the lock: the next build takes the lock over (its holder
    is dead) and undoes the half-made swap; killed after the manifest's rename, the new report stands."""
    out = tmp_path / "out"
    before = report_of(stores[0], out)
    n_old = sum(1 for k, v in before.items() if v != "dir" and k != MANIFEST)
    ctx = mp.get_context("fork")
    n_new = len(STAGED)
    for k, expect_new in ((2, False), (n_old + 3, False), (n_old + n_new + 1, False), (0, True)):
        child = ctx.Process(target=_killed_commit, args=(str(out), k))
        child.start()
        child.join(60)
        assert child.exitcode == -signal.SIGKILL
        assert list(out.glob(f"{STAGING}*")) and (out / LOCK).exists()  # what the kill left
        with ReportFolder(out):  # recovery only: nothing committed
            pass
        after = snapshot(out)
        if expect_new:
            assert after[MANIFEST] != before[MANIFEST] and after["latex/a.tex"] == b"new latex/a.tex"
            build(stores[0], out)  # back to the previous report for the next round
        else:
            assert after == before, f"killed at move {k}"
    assert snapshot(out) == before


CHILD = """
import signal, sys
from reports.__main__ import main
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a signal that comes after a rebuild ended: the rebuild stands
for line in sys.stdin:
    print("ready", flush=True)
    print(f"rc {main(['--store', line.strip(), '--out', sys.argv[1]])}", flush=True)
"""


@pytest.mark.slow  # a child process and seven rebuilds: about 15 s on two busy cores
def test_sigterm_at_random_moments_of_rebuilds_leaves_one_whole_report(stores: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    """One child process rebuilds the report again and again, from one store then the other, and gets SIGTERM at a
    random moment of each rebuild (uniform over its measured duration): the folder then holds the previous report or
    the new one, byte for byte."""
    a, b = stores
    reports = {str(a): report_of(a, tmp_path / "ref-a"), str(b): report_of(b, tmp_path / "ref-b")}
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None

    def rebuild(store: Path, kill_after: float | None) -> tuple[str, float]:
        """(the child's answer, how long the rebuild took)."""
        child.stdin.write(f"{store}\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        if kill_after is not None:
            time.sleep(kill_after)
            child.send_signal(signal.SIGTERM)
        while not (line := child.stdout.readline()).startswith("rc "):  # past "report written to ..."
            assert line, "the child ended"
        return line.rstrip("\n"), time.perf_counter() - started

    try:
        # No file of a report names its folder, so the reference reports built elsewhere are byte for byte alike.
        assert rebuild(a, None)[0] == "rc 0" and snapshot(out) == reports[str(a)]
        line, duration = rebuild(b, None)
        assert line == "rc 0" and snapshot(out) == reports[str(b)]
        rng = random.Random(26)
        current, outcomes = b, []
        for _ in range(5):
            other = a if current == b else b
            line, _ = rebuild(other, rng.uniform(0, duration))
            outcomes.append(line)
            assert line in ("rc 143", "rc 0"), line
            now = snapshot(out)
            assert now in (reports[str(current)], reports[str(other)]), f"a mix after {line!r}"
            if now == reports[str(other)]:
                current = other
        assert any(o.startswith("rc 143") for o in outcomes), outcomes  # at least one stop landed in a build
    finally:
        child.stdin.close()
        child.wait(60)
    err = child.stderr.read() if child.stderr else ""
    assert "Traceback" not in err
    stops = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert stops and all(line.startswith(f"seqbench: stopped by SIGTERM while building the report in {out}: ")
                         for line in stops)


@pytest.mark.parametrize("where", ["to_html", "_prune"])
def test_python_m_reports_stopped_exits_128_plus_the_signal(stores: tuple[Path, Path], tmp_path: Path, where: str,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """SIGTERM while the report is built (in `to_html`): the previous report, one line, 143. While the new one is
    swapped in (in `_prune`, under the deferral): the new report whole, then the same stop."""
    out = tmp_path / "out"
    before, after = report_of(stores[0], out), report_of(stores[1], tmp_path / "ref")
    target = sys.modules["reports.build"] if where == "to_html" else ReportFolder
    real = getattr(target, where)

    def stopped(*args: Any) -> Any:
        signal.raise_signal(signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(target, where, stopped)
    assert main(["--store", str(stores[1]), "--out", str(out)]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"seqbench: stopped by SIGTERM while building the report in {out}: ")
    if where == "to_html":
        assert "the previous report there is unchanged" in err and snapshot(out) == before
    else:
        assert "the new report was written whole before it" in err and snapshot(out) == after
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers as they were


def test_a_symbolic_link_in_the_folder_is_replaced_never_written_through(stores: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.md").write_text("the user's notes")
    (elsewhere / "plots").mkdir()
    out.mkdir()
    (out / "leaderboard.md").symlink_to(elsewhere / "notes.md")
    (out / "figures").symlink_to(elsewhere / "plots")
    (out / "mine.txt").write_text("the user's")
    build(stores[0], out)
    assert (elsewhere / "notes.md").read_text() == "the user's notes" and not list((elsewhere / "plots").iterdir())
    assert not (out / "leaderboard.md").is_symlink() and "Leaderboard" in (out / "leaderboard.md").read_text()
    assert not (out / "figures").is_symlink() and (out / "figures" / "curves_listops.png").is_file()
    assert (out / "mine.txt").read_text() == "the user's"
    # The previous report's manifest cannot send a rebuild outside its folder either.
    (out / MANIFEST).write_text('["../elsewhere/notes.md", "/etc/hostname", "leaderboard.md"]')
    build(stores[1], out)
    assert (elsewhere / "notes.md").read_text() == "the user's notes"


def test_a_folder_where_the_report_writes_a_file_is_refused_not_moved(stores: tuple[Path, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    report_of(stores[0], out)
    (out / "report.html").unlink()
    (out / "report.html").mkdir()
    (out / "report.html" / "mine.txt").write_text("the user's")
    before = snapshot(out)
    with pytest.raises(SystemExit) as stop:
        main(["--store", str(stores[1]), "--out", str(out)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (f"seqbench: error: {out / 'report.html'} is a folder where the report writes a "
                                       "file; move it away and rerun\n")
    assert snapshot(out) == before


def test_names_with_dollars_are_text_in_figures(tmp_path: Path) -> None:
    """Matplotlib would parse `$...$` as mathtext, and `$\\frac$` does not parse: a name is text."""
    store = Store(tmp_path / "st$ore$")
    for seed in (0, 1):
        store.write(record(f"a-{seed}", "s4$\\frac{$", seed, 0.4))
        store.write(record(f"b-{seed}", "$x^2$ model", seed, 0.5, d_model=64))
    path = build(store.root, tmp_path / "out$")
    assert "| s4$\\frac{$ |" in path.read_text()  # text in Markdown too: no backslash escapes it
    assert (tmp_path / "out$" / "figures" / "params_listops.png").stat().st_size > 10_000


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_full_disk_is_one_line_and_keeps_the_previous_report(stores: tuple[Path, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A real full disk: a tmpfs of 320 KiB holds the report of one board (about 175 KB) or of three (about 225 KB), not
    the one and the other staged beside it."""
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "320k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = disk / "out"
        before = report_of(stores[0], out)
        with pytest.raises(SystemExit) as stop:
            main(["--store", str(stores[1]), "--out", str(out)])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err == (f"seqbench: error: no space left for the report in {out} (disk full, quota or file size "
                       "limit): the new report was not kept and the previous one there is unchanged; free some space "
                       "(or write the report elsewhere: --out, or paths.root for a run's report) and rerun\n")
        assert snapshot(out) == before
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_while_drawing(stores: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Where no tmpfs can be mounted: the disk fills while a figure is written (matplotlib's own write)."""
    before = report_of(stores[0], tmp_path / "out")

    def full(path: Path, content: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("reports.plots.atomic_write", full)
    with pytest.raises(SystemExit):
        main(["--store", str(stores[1]), "--out", str(tmp_path / "out")])
    assert capsys.readouterr().err.startswith(f"seqbench: error: no space left for the report in {tmp_path / 'out'}")
    assert snapshot(tmp_path / "out") == before
