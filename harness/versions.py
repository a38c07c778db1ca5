"""Code versions: a number for every registered model and task, and one for the harness, that goes up whenever the
results of a run could change. They enter the run id (harness.identity) and every record.

The lock, harness/versions.lock.json, holds each entry's version and the digest of the source its results depend
on: for a model or task its own module and the modules of its package that it imports, transitively; for
"harness" the files that shape every run (HARNESS_FILES). A file's digest is taken over its syntax tree without
docstrings, so comments, docstrings and formatting do not count and any change to the code does.
tests/test_provenance.py fails while the lock and the tree disagree, naming each changed file and the entries it
affects. Then, if results can change, raise their versions in the lock by hand and record the new digests:

    python -m harness.versions update                  # refuses a changed entry left at its committed version
    python -m harness.versions update --same-results   # you assert that no changed entry's results change
    python -m harness.versions check                   # what the test checks

`update` compares with the lock committed at HEAD, so one bump covers every edit until the next commit.
One lock for models, tasks and the harness: one file to review and commit, written whole by one command.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError, exit_with
from harness.files import atomic_write
from harness.registry import MODELS, TASKS, Registry

REPO = Path(__file__).resolve().parent.parent
LOCK_FILE = "harness/versions.lock.json"
LOCK = REPO / LOCK_FILE
# The training loop, the optimizer and its schedule, the task contract (metrics, objectives), seeding and resume.
HARNESS_FILES = ("harness/batches.py", "harness/checkpoint.py", "harness/device.py", "harness/optim.py",
                 "harness/task.py", "harness/train.py")
HARNESS = "harness"
UPDATE = "python -m harness.versions update"
Key = tuple[str, str]  # (lock section, name): ("models", "s4"), ("tasks", "listops"), ("harness", "harness")


def source_digest(source: str) -> str:
    """sha256 of the module's syntax tree without docstrings (comments and layout never reach the tree)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and \
                ast.get_docstring(node, clean=False) is not None:
            node.body = node.body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def _module_file(module: str) -> str | None:
    """'models.s4' -> 'models/s4.py' when that file exists (a package's __init__, only its registry, is not)."""
    rel = module.replace(".", "/") + ".py"
    return rel if (REPO / rel).is_file() else None


def package_imports(rel: str) -> set[str]:
    """The files of rel's own package that rel imports (absolute or relative, at any depth of the code)."""
    here = tuple(Path(rel).with_suffix("").parts)
    package = here[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse((REPO / rel).read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = (*here[: len(here) - node.level], node.module) if node.level else (node.module,)
            base = ".".join(p for p in parts if p)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from models import s4`
    files = {_module_file(n) for n in names if n.split(".")[0] == package}
    return {f for f in files if f is not None and f != rel}


def dependencies(rel: str) -> tuple[str, ...]:
    """rel and every file of its package that it imports, transitively; sorted."""
    seen, todo = {rel}, [rel]
    while todo:
        for dep in package_imports(todo.pop()) - seen:
            seen.add(dep)
            todo.append(dep)
    return tuple(sorted(seen))


@dataclass(frozen=True)
class Tree:
    """The digests of the working tree: one per file, and each entry's files."""

    files: dict[str, str]
    deps: dict[Key, tuple[str, ...]]

    def digest(self, key: Key) -> str:
        return hashlib.sha256("".join(f"{f} {self.files[f]}\n" for f in self.deps[key]).encode()).hexdigest()

    def affected(self, path: str) -> list[Key]:
        return [key for key, files in self.deps.items() if path in files]


def _registered(registry: Registry) -> dict[Key, str]:
    """(section, name) -> the file of its builder, for the entries the package itself registers (not tests' toys)."""
    out = {}
    for name in registry.names():
        module = registry.get(name).builder.__module__
        rel = _module_file(module)
        if module.split(".")[0] == registry.package and rel is not None:
            out[(registry.package, name)] = rel
    return out


def scan() -> Tree:
    """The entries registered now and the digests of their files as they are on disk."""
    deps: dict[Key, tuple[str, ...]] = {(HARNESS, HARNESS): HARNESS_FILES}
    for registry in (MODELS, TASKS):
        deps.update({key: dependencies(rel) for key, rel in _registered(registry).items()})
    paths = sorted({f for files in deps.values() for f in files})
    return Tree({f: source_digest((REPO / f).read_text()) for f in paths}, deps)


# ----------------------------------------------------------------------------------------------------------
# The lock


def read_lock(path: Path | None = None) -> dict[str, Any]:
    """The lock at `path` (default LOCK)."""
    path = path or LOCK
    if not path.is_file():
        raise UserError(f"{path} is missing: run `{UPDATE}` to write it")
    return json.loads(path.read_text())


def _entry(lock: dict[str, Any] | None, key: Key) -> dict[str, Any] | None:
    if lock is None:
        return None
    section, name = key
    return lock.get(HARNESS) if section == HARNESS else lock.get(section, {}).get(name)


def of_config(config: dict[str, Any]) -> dict[str, int | None]:
    """The versions of a run's model, task and harness; None for a name the lock does not know (a test's toy)."""
    lock = read_lock()

    def version(section: str, node: Any) -> int | None:
        entry = _entry(lock, (section, (node or {}).get("name")))
        return None if entry is None else entry["version"]

    return {"model": version("models", config.get("model")), "task": version("tasks", config.get("task")),
            "harness": lock[HARNESS]["version"]}


def _names(keys: list[Key]) -> str:
    return ", ".join(name for _, name in sorted(keys))


def check(tree: Tree, lock: dict[str, Any]) -> list[str]:
    """What differs between the lock and the tree, each with what to do; empty when they agree."""
    bump = (f"if results can change, bump their version in {LOCK_FILE}; then run `{UPDATE}` to record "
            f"the new digests")
    problems, explained = [], set()
    for path, digest in tree.files.items():
        old = lock.get("files", {}).get(path)
        if old != digest:
            keys = tree.affected(path)
            explained.update(keys)
            problems.append(f"{path} {'changed' if old else 'is new'} (affects {_names(keys)}): {bump}")
    for key in tree.deps:
        entry = _entry(lock, key)
        if entry is None:
            problems.append(f"{key[0]} {key[1]!r} is not in the lock: run `{UPDATE}` to add it")
        elif entry["digest"] != tree.digest(key) and key not in explained:
            problems.append(f"the files {key[1]} depends on changed (now {', '.join(tree.deps[key])}): {bump}")
    for section in ("models", "tasks"):
        for name in sorted(set(lock.get(section, {})) - {n for s, n in tree.deps if s == section}):
            problems.append(f"{section} {name!r} is in the lock but no longer registered: run `{UPDATE}` to drop it")
    return problems


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"`git {' '.join(args)}` failed ({exc}): run `{UPDATE}` in the git checkout") from exc
    if out.returncode:
        raise UserError(f"`git {' '.join(args)}` failed ({out.stderr.strip()}): run `{UPDATE}` in the git checkout")
    return out.stdout


def committed_lock() -> dict[str, Any] | None:
    """The lock as committed at HEAD; None when HEAD has none (then no version has been committed yet)."""
    if not _git("ls-tree", "HEAD", "--", LOCK_FILE).strip():
        return None
    return json.loads(_git("show", f"HEAD:{LOCK_FILE}"))


def update(tree: Tree, committed: dict[str, Any] | None, same_results: bool = False,
           path: Path | None = None) -> list[str]:
    """Write the lock with the tree's digests and the versions on disk (1 for a new entry); returns what changed.

    An entry whose digest differs from the committed lock must have a higher version than committed (raised by
    hand in the lock) unless `same_results`; versions never go down.
    """
    path = path or LOCK
    on_disk = read_lock(path) if path.is_file() else None
    lock: dict[str, Any] = {"files": tree.files, "models": {}, "tasks": {}}
    unbumped, lowered, changes = [], [], []
    for key in sorted(tree.deps):
        digest = tree.digest(key)
        mine, base = _entry(on_disk, key), _entry(committed, key)
        version = (mine or base or {"version": 1})["version"]
        if base is not None and version < base["version"]:
            lowered.append(f"{key[1]} ({version} < {base['version']})")
        elif base is not None and base["digest"] != digest and version == base["version"] and not same_results:
            unbumped.append(key)
        entry = {"version": version, "digest": digest}
        if mine != entry:
            changes.append(f"{key[1]}: {'new, ' if mine is None else ''}version {version}, digest {digest[:12]}")
        if key[0] == HARNESS:
            lock[HARNESS] = entry
        else:
            lock[key[0]][key[1]] = entry
    if lowered:
        raise UserError(f"versions never go down: {', '.join(lowered)} in {path}; put them back")
    if unbumped:
        raise UserError(f"{_names(unbumped)} changed since the lock committed at HEAD but keep their version: if "
                        f"results can change, bump it in {path}; if you are sure they cannot, rerun with "
                        f"--same-results")
    atomic_write(path, json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.versions", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="compare the lock with the tree (exit 1 when they differ)")
    up = sub.add_parser("update", help="record the tree's digests in the lock")
    up.add_argument("--same-results", action="store_true",
                    help="keep the committed version of changed entries: you assert their results do not change")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            problems = check(scan(), read_lock())
            print("\n".join(problems) or f"{LOCK_FILE} matches the tree")
            return 1 if problems else 0
        changes = update(scan(), committed_lock(), args.same_results)
        print("\n".join(changes) or f"{LOCK_FILE} was up to date")
        return 0
    except UserError as exc:
        exit_with(exc)


if __name__ == "__main__":
    sys.exit(main())
