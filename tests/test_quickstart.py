"""The README's first command, end to end at a tiny size: every registered model, a record each, a leaderboard."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from harness.jobs import dispatch
from harness.registry import MODELS
from tests.helpers import compose_run, run_py

TINY = ["quickstart.n_train=64", "quickstart.n_val=16", "quickstart.n_test=16", "quickstart.min_length=8",
        "quickstart.max_length=70", "quickstart.max_depth=3", "quickstart.epochs=1", "quickstart.d_model=8",
        "quickstart.n_layers=1", "quickstart.batch_size=16"]


@pytest.mark.slow
def test_quickstart_trains_every_model_and_writes_the_leaderboard(tmp_path: Path) -> None:
    out = run_py(tmp_path, *TINY, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    leaderboard = tmp_path / "results" / "reports" / "leaderboard.md"
    assert f"leaderboard written to {leaderboard}" in out.stdout
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "store").glob("*.json")]
    assert sorted(r["model"] for r in records) == MODELS.names()
    assert {r["status"] for r in records} == {"complete"} and {r["sweep"] for r in records} == {"quickstart"}
    text = leaderboard.read_text()
    for name in MODELS.names():
        assert f"| {name} |" in text
    assert re.search(r"\| train [CG]PU-h \| train samples/s \| peak memory \|", text)  # what each row cost
    # Rerunning finds every run complete and trains nothing.
    again = run_py(tmp_path, *TINY, timeout=600)
    assert again.returncode == 0 and again.stdout.count("already complete, skipped") == len(MODELS.names())


def test_the_quickstart_dry_run_checks_every_model_without_data(tmp_path: Path) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert dispatch(compose_run(tmp_path, *TINY, "dry_run=true")) is None
    lines = [json.loads(line) for line in printed.getvalue().splitlines()]
    assert sorted(line["model"] for line in lines) == MODELS.names()
    assert all(line["task"] == "listops" and line["params"] > 0 and line["status"] is None for line in lines)
    assert not list(tmp_path.iterdir())
