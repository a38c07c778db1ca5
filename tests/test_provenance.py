"""Provenance: code versions in the lock (harness.versions), in the run id and in every record, with the software
and git state of the run (harness.env)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
import torch

import tests.toy  # noqa: F401  (registers the toy task)
from harness import env, runner, versions
from harness.errors import UserError
from harness.identity import run_id
from tests.helpers import ROOT, compose_run


def test_the_lock_matches_the_tree() -> None:
    problems = versions.check(versions.scan(), versions.read_lock())
    assert not problems, "\n".join(problems)


def test_digest_ignores_comments_docstrings_and_layout_but_not_code() -> None:
    src = 'def f(x):\n    """Double."""\n    return 2 * x\n'
    same = '# a comment\ndef f(x):\n    """Twice x, reworded."""\n\n    return (2 *\n            x)  # why\n'
    assert versions.source_digest(src) == versions.source_digest(same)
    assert versions.source_digest(src) == versions.source_digest("def f(x):\n    return 2 * x\n")
    assert versions.source_digest(src) != versions.source_digest(src.replace("2 * x", "x * 2"))
    assert versions.source_digest(src) != versions.source_digest(src + "EPS = 1e-6\n")


def test_an_entry_depends_on_the_modules_of_its_package_it_imports_transitively() -> None:
    assert versions.dependencies("models/s4d.py") == (
        "models/_validate.py", "models/backbone.py", "models/fft_kernels.py", "models/longconv.py", "models/s4.py",
        "models/s4block.py", "models/s4d.py")
    tree = versions.scan()
    assert tree.deps[("harness", "harness")] == versions.HARNESS_FILES
    assert ("models", "s4") in tree.affected("models/s4.py") and ("models", "s4d") in tree.affected("models/s4.py")
    assert ("tasks", "toy") not in tree.deps  # registered by the tests, not by the tasks package


def test_relative_and_submodule_imports_are_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from harness.registry import MODELS\n")
    (pkg / "a.py").write_text("from pkg import MODELS\nfrom .b import f\n\ndef g():\n    from pkg import c\n")
    (pkg / "b.py").write_text("import pkg.d\nimport torch\n")
    (pkg / "c.py").write_text("")
    (pkg / "d.py").write_text("from . import b\n")
    (pkg / "unused.py").write_text("")
    monkeypatch.setattr(versions, "REPO", tmp_path)
    assert versions.dependencies("pkg/a.py") == ("pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/d.py")


def changed(tree: versions.Tree, path: str, digest: str = "0" * 64) -> versions.Tree:
    """The tree as if `path` had been edited."""
    return dataclasses.replace(tree, files={**tree.files, path: digest})


def test_check_names_each_changed_file_what_it_affects_and_what_to_do(tmp_path: Path) -> None:
    tree = versions.scan()
    versions.update(tree, None, path=tmp_path / "lock.json")
    lock = versions.read_lock(tmp_path / "lock.json")
    assert versions.check(tree, lock) == []
    affected = ", ".join(sorted(name for _, name in tree.affected("models/s4.py")))
    assert versions.check(changed(tree, "models/s4.py"), lock) == [
        f"models/s4.py changed (affects {affected}): if results can change, bump their version in "
        "harness/versions.lock.json; then run `python -m harness.versions update` to record the new digests"]
    assert "harness/train.py changed (affects harness)" in versions.check(changed(tree, "harness/train.py"), lock)[0]
    del lock["models"]["s4d"]
    lock["tasks"]["gone"] = {"version": 1, "digest": "x"}
    problems = versions.check(tree, lock)
    assert any("models 's4d' is not in the lock" in p for p in problems)
    assert any("tasks 'gone' is in the lock but no longer registered" in p for p in problems)


def test_update_refuses_a_changed_entry_left_at_its_committed_version(tmp_path: Path) -> None:
    path = tmp_path / "lock.json"
    tree = versions.scan()
    versions.update(tree, None, path=path)
    committed = versions.read_lock(path)
    edited = changed(tree, "models/s4.py")
    with pytest.raises(UserError, match=r"s4, s4d changed since the lock committed at HEAD but keep their version"):
        versions.update(edited, committed, path=path)
    assert versions.read_lock(path) == committed  # untouched

    versions.update(edited, committed, same_results=True, path=path)  # the developer asserts nothing changes
    lock = versions.read_lock(path)
    assert lock["models"]["s4"] == {"version": 1, "digest": edited.digest(("models", "s4"))}

    lock["models"]["s4"]["version"] = lock["models"]["s4d"]["version"] = 2  # bumped by hand
    path.write_text(json.dumps(lock))
    versions.update(edited, committed, path=path)
    after = versions.read_lock(path)
    assert after["models"]["s4"]["version"] == after["models"]["s4d"]["version"] == 2
    assert versions.check(edited, after) == [] and after["models"]["multires"] == committed["models"]["multires"]
    versions.update(changed(edited, "models/s4.py", "1" * 64), committed, path=path)  # one bump until the commit

    after["models"]["multires"]["version"] = 0
    path.write_text(json.dumps(after))
    with pytest.raises(UserError, match="versions never go down: multires"):
        versions.update(edited, committed, path=path)


def with_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **bumps: int) -> None:
    """Use a copy of the lock with the given model versions."""
    lock = versions.read_lock()
    for name, version in bumps.items():
        lock["models"][name]["version"] = version
    path = tmp_path / "versions.lock.json"
    path.write_text(json.dumps(lock))
    monkeypatch.setattr(versions, "LOCK", path)


def test_run_id_changes_with_the_version_of_the_config_model_only(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    s4 = {"task": {"name": "listops"}, "model": {"name": "s4", "d_model": 8}, "seed": 0}
    multires = {**s4, "model": {"name": "multires", "d_model": 8}}
    before = run_id(s4), run_id(multires)
    with_lock(tmp_path, monkeypatch, s4=versions.read_lock()["models"]["s4"]["version"] + 1)
    assert run_id(s4) != before[0] and run_id(multires) == before[1]
    assert run_id(s4).startswith("listops-s4-")


def test_a_record_carries_versions_packages_and_git_and_a_bump_reruns_the_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ("task=toy", "model=s4d", "model.d_model=8", "model.d_state=4", "model.n_layers=1", "train.epochs=1",
                 "train.batch_size=32")
    first = runner.run(compose_run(tmp_path, *overrides))
    lock = versions.read_lock()
    assert first["status"] == "complete"
    assert first["versions"] == {"model": lock["models"]["s4d"]["version"], "task": None,  # toy: not in the lock
                                 "harness": lock["harness"]["version"]}
    packages = first["env"]["packages"]
    assert packages["torch"] == torch.__version__.split("+")[0] and packages["numpy"] and packages["hydra-core"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert first["env"]["git_commit"] == head and isinstance(first["env"]["git_dirty"], bool)
    assert runner.run(compose_run(tmp_path, *overrides))["run_id"] == first["run_id"]  # skipped: complete

    with_lock(tmp_path, monkeypatch, s4d=lock["models"]["s4d"]["version"] + 1)
    second = runner.run(compose_run(tmp_path, *overrides))
    assert second["run_id"] != first["run_id"] and second["status"] == "complete"
    assert second["versions"]["model"] == first["versions"]["model"] + 1
    assert {r["run_id"] for r in runner.store_for(compose_run(tmp_path)).records()} == {first["run_id"],
                                                                                          second["run_id"]}


def test_packages_are_requirements() -> None:
    """Every recorded distribution is one the project requires (catches a misspelt name, which reads as absent)."""
    required = {line.split(";")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
                for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")}
    assert {p.lower() for p in env.PACKAGES} <= required
    assert all(env.packages()[p] is not None for p in ("torch", "numpy", "omegaconf"))

