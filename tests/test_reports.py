"""Reports from a synthetic store with known numbers: tables, statistics, LaTeX, the HTML page in Chromium."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from harness.errors import ConfigError
from harness.results import Store
from reports import build
from reports.__main__ import main
from reports.ablation import ablations
from reports.leaderboard import boards
from reports.load import load
from reports.references import load_references
from reports.stats import paired, summarize

CHROMIUM = Path("/usr/bin/chromium")
# Test accuracies per model and seed (fractions, as the store holds them).
ACC = {"multires": [0.50, 0.60, 0.70], "s4": [0.40, 0.45, 0.53]}


def config(task: str, model: str, seed: int, d_model: int = 64, lr: float = 1e-3) -> dict:
    return {"task": {"name": task, "root": None}, "model": {"name": model, "d_model": d_model}, "seed": seed,
            "sweep": "x", "train": {"epochs": 2}, "optim": {"lr": lr}, "paths": {"root": "elsewhere"}}


def train_record(run_id: str, model: str, seed: int, test: float | None, status: str = "complete",
                 sweep: str = "main", task: str = "listops", metric: str = "accuracy", **cfg) -> dict:
    record = {"run_id": run_id, "kind": "train", "sweep": sweep, "task": task, "model": model, "seed": seed,
              "status": status, "config": config(task, model, seed, **cfg), "params": 360_000, "error": None}
    if status == "complete":
        record["metrics"] = {"metric": metric, "higher_is_better": metric != "bpd", "val": test + 0.01, "test": test,
                             "best_epoch": 2, "history": [{"epoch": e, "train_loss": 2.0 / e, "val": test * e / 2,
                                                           "test": test, "lr": 1e-3} for e in (1, 2)]}
        record["throughput"] = {"train_samples_per_s": 50.0, "train_tokens_per_s": 1e5}
    else:
        record["error"] = f"{status}: synthetic"
    return record


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    s = Store(root)
    for model, accs in ACC.items():
        for seed, acc in enumerate(accs):
            s.write(train_record(f"{model}-{seed}", model, seed, acc))
    s.write(train_record("s4-3", "s4", 3, None, status="failed"))
    s.write(train_record("transformer-0", "transformer", 0, None, status="oom"))
    s.write(train_record("bpd-0", "multires", 0, 3.1, task="cifar_bpd", metric="bpd"))
    s.write(train_record("bpd-1", "multires", 1, 2.9, task="cifar_bpd", metric="bpd"))
    # An ablation sweep over width and learning rate (two seeds each).
    for d_model, lr, base in ((32, 1e-3, 0.30), (64, 1e-3, 0.35), (64, 3e-3, 0.45)):
        for seed in (0, 1):
            s.write(train_record(f"abl-{d_model}-{lr}-{seed}", "sgconv", seed, base + seed / 100, sweep="abl",
                                 d_model=d_model, lr=lr))
    for model, slow in (("multires", 1.0), ("transformer", 4.0)):
        for length in (1024, 4096, 16384):
            oom = model == "transformer" and length == 16384
            metrics = {"scope": "layer", "pass": "fwd", "dtype": "fp32", "length": length, "batch_size": 2}
            if not oom:
                metrics.update(time_ms=slow * length / 1e3, tokens_per_s=2 * length / (slow * length / 1e6),
                               peak_bytes=slow * length * 2**12)
            s.write({"run_id": f"bench-{model}-{length}", "kind": "bench", "sweep": "bench", "task": None,
                     "model": model, "seed": 0, "status": "oom" if oom else "complete", "metrics": metrics})
    (root / "torn.json").write_text('{"run_id": "half')  # a half-written file from elsewhere: skipped
    return root


@pytest.fixture(scope="module")
def report(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(store, tmp_path_factory.mktemp("report"))


def board_of(store: Path, task: str, sweep: str = "main"):
    runs, _ = load(store, sweep)
    return next(b for b in boards(runs, load_references()) if b.task == task)


def test_summary_matches_independent_computation():
    s = summarize([1.0, 2.0, 4.0, float("nan")])
    assert s.n == 3 and s.mean == pytest.approx(7 / 3, abs=1e-12)
    std = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert s.std == pytest.approx(std, abs=1e-12)
    assert s.ci95 == pytest.approx(4.302652729911275 * std / math.sqrt(3), rel=1e-9)  # t_{0.975, 2}
    assert summarize([]).n == 0 and math.isnan(summarize([5.0]).std)


def test_paired_t_test_by_hand():
    a, b = {0: 0.50, 1: 0.60, 2: 0.70, 9: 0.9}, {0: 0.40, 1: 0.45, 2: 0.53}
    d = np.array([0.10, 0.15, 0.17])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    result = paired(a, b)
    assert result.n == 3 and result.mean_diff == pytest.approx(d.mean(), abs=1e-12)
    assert result.t == pytest.approx(t, rel=1e-9)
    assert result.p == pytest.approx(2 * sps.t.sf(abs(t), 2), rel=1e-9)
    assert math.isnan(paired({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.5}).p)  # equal differences: no spread to test


def test_leaderboard_numbers_exact(store: Path):
    b = board_of(store, "listops")
    rows = b.rows.set_index("label")
    assert list(b.rows["label"]) == ["multires", "s4", "transformer"]  # best first
    assert rows.loc["multires", "mean"] == pytest.approx(60.0, abs=1e-9)
    assert rows.loc["multires", "std"] == pytest.approx(10.0, abs=1e-9)
    assert rows.loc["multires", "n"] == 3
    assert rows.loc["s4", "mean"] == pytest.approx(46.0, abs=1e-9)
    assert rows.loc["s4", "std"] == pytest.approx(math.sqrt(((6**2) + 1 + 7**2) / 2), abs=1e-9)
    # Published MultiresNet ListOps (62.75) and S4 (59.60) from references.yaml: Δ = ours − published.
    assert rows.loc["multires", "ref_value"] == 62.75
    assert rows.loc["multires", "delta"] == pytest.approx(-2.75, abs=1e-9)
    assert rows.loc["s4", "delta"] == pytest.approx(46.0 - 59.60, abs=1e-9)
    assert rows.loc["multires", "params"] == 360_000
    table = b.table.set_index("model")
    assert table.loc["multires", "test acc (%) ↑"] == "60.00 ± 10.00"
    assert table.loc["multires", "Δ vs published"] == "-2.75"
    assert table.loc["multires", "95% CI"] == f"[{60 - 24.84:.2f}, {60 + 24.84:.2f}]"  # t·s/√n = 4.3027·10/√3
    assert "published: MultiresNet" in set(b.table["model"])
    # The comparison multires vs s4 over seeds 0-2: differences 10, 15, 17 points.
    comp = b.comparisons.set_index(["A", "B"]).loc[("multires", "s4")]
    assert comp["shared seeds"] == 3 and comp["mean A - B"] == pytest.approx(14.0, abs=1e-9)


def test_partial_store_statuses(store: Path):
    table = board_of(store, "listops").table.set_index("model")
    assert table.loc["s4", "status"] == "3 complete, failed (1)"
    assert table.loc["transformer", "status"] == "0 complete, oom (1), no record for seed 1, 2, 3"
    assert table.loc["transformer", "test acc (%) ↑"] == "—"


def test_lower_is_better_metric(store: Path):
    b = board_of(store, "cifar_bpd")
    assert not b.higher_is_better and b.metric == "bpd"
    row = b.rows.iloc[0]
    assert row["mean"] == pytest.approx(3.0) and row["delta"] == pytest.approx(3.0 - 2.84)
    assert "test bits/dim ↓" in b.table.columns


def test_ablation_finds_varied_keys(store: Path):
    runs, _ = load(store, sweep="abl")
    (ab,) = ablations(runs)
    assert ab.keys == ["model.d_model", "optim.lr"]
    rows = ab.rows
    assert list(zip(rows["model.d_model"], rows["optim.lr"], strict=True)) == [(32, 1e-3), (64, 1e-3), (64, 3e-3)]
    assert rows["mean"].tolist() == pytest.approx([30.5, 35.5, 45.5], abs=1e-9)
    assert rows["std"].tolist() == pytest.approx([math.sqrt(0.5)] * 3, abs=1e-9)


def test_report_files(report: Path, store: Path, capsys: pytest.CaptureFixture[str]):
    out = report.parent
    text = report.read_text()
    assert report.name == "leaderboard.md"
    assert "| multires | 3 complete, no record for seed 3 | 3 | 60.00 ± 10.00 |" in text
    assert "## Ablation: sweep abl, listops" in text and "oom" in text
    for name in ("report.html", "leaderboard.tex", "summary.csv"):
        assert (out / name).stat().st_size > 0
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "scaling_layer_fwd_fp32.png" in figures and "curves_listops.png" in figures
    assert all(f"figures/{f}" in text for f in figures)


def test_cli_and_sweep_filter(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--store", str(store), "--out", str(tmp_path), "--sweep", "abl"]) == 0
    text = (tmp_path / "leaderboard.md").read_text()
    assert "sgconv" in text and "| multires |" not in text
    assert "skipping unreadable record" in capsys.readouterr().err


def test_empty_or_missing_store(tmp_path: Path):
    path = build(tmp_path / "no-store", tmp_path / "out")
    assert "No records" in path.read_text()


def test_latex_balanced(report: Path):
    tex = (report.parent / "leaderboard.tex").read_text()
    envs = re.findall(r"\\(begin|end)\{(\w+)\}", tex)
    stack = []
    for kind, name in envs:
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name, f"\\end{{{name}}} closes something else"
    assert not stack
    tabulars = re.findall(r"\\begin\{tabular\}\{(\w+)\}(.*?)\\end\{tabular\}", tex, re.S)
    assert len(tabulars) >= 4
    for spec, body in tabulars:
        assert "\\toprule" in body and "\\midrule" in body and "\\bottomrule" in body
        plain = re.sub(r"\\(toprule|midrule|bottomrule)", "", body)
        rows = [r for r in plain.split("\\\\") if r.strip()]
        assert len(rows) >= 2  # header and at least one row
        for row in rows:
            cells = re.split(r"(?<!\\)&", row)
            assert len(cells) == len(spec), f"{len(cells)} cells, {len(spec)} columns: {row!r}"
    assert "60.00 $\\pm$ 10.00" in tex
    engine = shutil.which("pdflatex")
    if engine:
        run = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", "leaderboard.tex"],
                             cwd=report.parent, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout[-2000:]


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    return subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent (apt-get install -y chromium)")
def test_html_in_chromium(report: Path, tmp_path: Path):
    page = report.parent / "report.html"
    n_images = page.read_text().count("<img ")
    assert n_images >= 4
    dom = chromium(["--dump-dom", page.as_uri()], tmp_path / "profile1")
    match = re.search(r'data-images-loaded="(\d+)"', dom.stdout)
    assert match, f"page script did not run: {dom.stderr[-1000:]}"
    assert int(match.group(1)) == n_images
    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()], tmp_path / "profile2")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_references_are_sourced():
    refs = load_references()
    assert {r.model for r in refs} >= {"multires", "s4", "s4d", "sgconv", "wavspa", "transformer"}
    for ref in refs:
        assert ref.source.get("paper") and ref.source.get("table") and ref.source.get("where"), ref.label
    by = {(r.task, r.label): r for r in refs}
    assert by[("listops", "MultiresNet")].value == 62.75 and by[("listops", "MultiresNet")].verified
    assert not by[("cifar_bpd", "MultiresNet")].verified  # not re-checked against the paper


def test_bad_reference_file(tmp_path: Path):
    bad = tmp_path / "refs.yaml"
    bad.write_text("- {task: listops, label: x}\n")
    with pytest.raises(ConfigError, match="lacks"):
        load_references(bad)


def test_references_follow_the_task_setting():
    from reports.references import applicable, primary_for

    refs = load_references()
    gray = {r.label for r in applicable(refs, "scifar", {"task.grayscale": True})}
    rgb = {r.label for r in applicable(refs, "scifar", {"task.grayscale": False})}
    assert "SGConv, LRA Image (grayscale)" in gray and "SGConv, LRA Image (grayscale)" not in rgb
    assert "MultiresNet" in rgb and "MultiresNet" not in gray
    assert primary_for(refs, "s4", "test", "scifar", {"task.grayscale": True}).value == 88.65
    assert primary_for(refs, "multires", "test", "ptbxl", {}) is None  # no sourced PTB-XL numbers yet
