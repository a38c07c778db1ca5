"""Reports from stores with known numbers: statistics, which published number a run gets, paper settings against
reduced ones, runs that did not complete, code versions, escaping, the LaTeX document (compiled when pdflatex is
present), the HTML page in Chromium, the benchmark's tables and the output folder's rebuild."""

from __future__ import annotations

import csv
import html
import math
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.ticker import FuncFormatter
from omegaconf import OmegaConf
from scipy import stats as sps

from harness.errors import ConfigError, DataError
from harness.results import Store
from reports import build, plots
from reports.__main__ import main
from reports.ablation import ablations
from reports.bench import bench_tables
from reports.bench import frame as bench_frame
from reports.leaderboard import NOT_COMPARABLE, boards, candidate_pairs, comparisons
from reports.load import RUN_COLUMNS, load, run_row
from reports.output import MANIFEST
from reports.plots import clipped_error, count_axis, count_labels, log_axis
from reports.references import load_references, published_for
from reports.render import markdown as render_markdown
from reports.render import md_escape
from reports.stats import paired, summarize
from sweeps.status import classify
from tests.helpers import ROOT, compose_run, run_py

CHROMIUM = Path("/usr/bin/chromium")
# Test accuracies per model and seed (fractions, as the store holds them), all at the papers' settings.
ACC = {"multires": [0.50, 0.60, 0.70], "s4": [0.40, 0.45, 0.53]}
PRESET = {"multires": "multires_listops", "s4": "s4_listops", "transformer": "transformer_lra_listops",
          "s4d": "s4d_listops"}
LISTOPS_SIZES = {"train": 96_000, "val": 2_000, "test": 2_000}  # the LRA release


@cache
def composed(*overrides: str) -> dict[str, Any]:
    """The config run.py composes for these overrides, as a record holds it (no Hydra node)."""
    tree = OmegaConf.to_container(compose_run(Path("/nonexistent/results"), *overrides), resolve=True)
    tree.pop("hydra", None)
    return tree


def flat(*overrides: str) -> dict[str, Any]:
    """The flat config (task.* and model.* keys among them) a leaderboard row of these overrides has."""
    return run_row({"config": composed(*overrides)})["flat_config"]


def record(run_id: str, config: dict[str, Any], seed: Any, test: float | None, status: str = "complete",
           sweep: str = "main", metric: str = "accuracy", sizes: dict[str, int] | None = None,
           versions: dict[str, int] | None = None, params: int = 360_000, error: str | None = None) -> dict:
    config = {**config, "seed": seed, "sweep": sweep}
    rec = {"run_id": run_id, "kind": "train", "sweep": sweep, "task": config["task"]["name"],
           "model": config["model"]["name"], "seed": seed, "status": status, "config": config, "params": params,
           "error": error, "data": {"sizes": sizes} if sizes else {}}
    if versions is not None:
        rec["versions"] = versions
    if status == "complete":
        rec["metrics"] = {"metric": metric, "higher_is_better": metric != "bpd", "val": test + 0.01, "test": test,
                          "best_epoch": 2, "history": [{"epoch": e, "train_loss": 2.0 / e, "val": test * e / 2,
                                                        "test": test, "lr": 1e-3} for e in (1, 2)]}
        rec["throughput"] = {"train_samples_per_s": 50.0, "train_tokens_per_s": 1e5}
    else:
        rec["error"] = error or f"Traceback (most recent call last):\n  ...\nRuntimeError: {status}: synthetic"
    return rec


def synthetic(task: str, model: str, d_model: int = 64, lr: float = 1e-3) -> dict:
    """A hand-written config, unlike any preset (for the ablation tables)."""
    return {"task": {"name": task, "root": None}, "model": {"name": model, "d_model": d_model},
            "train": {"epochs": 2}, "optim": {"lr": lr}, "paths": {"root": "elsewhere"}}


def bench_record(model: str, length: int, status: str = "complete", slow: float = 1.0) -> dict:
    metrics: dict[str, Any] = {"scope": "layer", "pass": "fwd", "dtype": "fp32", "length": length, "batch_size": 2}
    if status == "complete":
        metrics.update(time_ms=slow * length / 1e3, tokens_per_s=2 * length / (slow * length / 1e6),
                       peak_bytes=slow * length * 2**12)
    return {"run_id": f"bench-{model}-{length}", "kind": "bench", "sweep": "bench", "task": None, "model": model,
            "seed": 0, "status": status, "metrics": metrics,
            "config": {"bench": {"d_model": 256, "tokens_per_batch": 2**18, "batch_size": None, "warmup": 2,
                                 "repeats": 10, "point_budget_s": 1.0, "max_call_s": 0.5, "max_total_s": 500,
                                 "device": "cuda", "model_overrides": None}},
            "env": {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11", "cuda": "13.0", "host": "vm"}}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    s = Store(root)
    for model, accs in ACC.items():
        for seed, acc in enumerate(accs):
            # multires: code version 2 for its last seed, the others 1; s4's records predate versions.
            versions = {"model": 2 if seed == 2 else 1, "task": 1, "harness": 1} if model == "multires" else None
            s.write(record(f"{model}-{seed}", composed(f"+experiment={PRESET[model]}"), seed, acc,
                           sizes=LISTOPS_SIZES, versions=versions))
    s.write(record("s4-3", composed("+experiment=s4_listops"), 3, None, status="failed", sizes=LISTOPS_SIZES))
    s.write(record("transformer-0", composed("+experiment=transformer_lra_listops"), 0, None, status="oom"))
    s.write(record("s4d-0", composed("+experiment=s4d_listops"), 0, None, status="diverged",
                   error="non-finite train loss (nan) at epoch 3, step 5000"))
    bpd = composed("+experiment=multires_cifar_bpd")
    for seed, value in ((0, 3.1), (1, 2.9)):
        s.write(record(f"bpd-{seed}", bpd, seed, value, metric="bpd", sizes={"train": 48_000, "val": 2_000,
                                                                             "test": 10_000}))
    # An ablation sweep over width and learning rate (two seeds each).
    for d_model, lr, base in ((32, 1e-3, 0.30), (64, 1e-3, 0.35), (64, 3e-3, 0.45)):
        for seed in (0, 1):
            s.write(record(f"abl-{d_model}-{lr}-{seed}", synthetic("listops", "sgconv", d_model, lr), seed,
                           base + seed / 100, sweep="abl"))
    for model, slow in (("multires", 1.0), ("transformer", 4.0)):
        for length in (1024, 4096, 16384):
            oom = model == "transformer" and length == 16384
            s.write(bench_record(model, length, "oom" if oom else "complete", slow))
    s.write(bench_record("s4", 1024))
    s.write(bench_record("s4", 4096, "failed"))
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
    assert list(b.rows["label"]) == ["multires", "s4"]  # best first; the oom and diverged runs are not ranked
    assert rows.loc["multires", "mean"] == pytest.approx(60.0, abs=1e-9)
    assert rows.loc["multires", "std"] == pytest.approx(10.0, abs=1e-9)
    assert rows.loc["multires", "n"] == 3
    assert rows.loc["s4", "mean"] == pytest.approx(46.0, abs=1e-9)
    assert rows.loc["s4", "std"] == pytest.approx(math.sqrt(((6**2) + 1 + 7**2) / 2), abs=1e-9)
    # At the papers' settings, so Δ = ours − published (MultiresNet 62.75, updated S4 59.60).
    assert rows.loc["multires", "settings"].at_paper and rows.loc["s4", "settings"].at_paper
    assert rows.loc["multires", "ref_value"] == 62.75
    assert rows.loc["multires", "delta"] == pytest.approx(-2.75, abs=1e-9)
    assert rows.loc["s4", "delta"] == pytest.approx(46.0 - 59.60, abs=1e-9)
    assert rows.loc["multires", "params"] == 360_000
    table = b.table.set_index("model")
    assert table.loc["multires", "settings"] == "paper"
    assert table.loc["multires", "test acc (%) ↑"] == "60.00 ± 10.00"
    assert table.loc["multires", "Δ vs published"] == "-2.75"
    assert table.loc["multires", "95% CI"] == f"[{60 - 24.84:.2f}, {60 + 24.84:.2f}]"  # t·s/√n = 4.3027·10/√3
    assert "published: MultiresNet" in set(b.table["model"])
    # The comparison multires vs s4 over seeds 0-2: differences 10, 15, 17 points.
    comp = b.comparisons.set_index(["A", "B"]).loc[("multires", "s4")]
    assert comp["shared seeds"] == 3 and comp["mean A - B"] == pytest.approx(14.0, abs=1e-9)


def test_runs_that_did_not_complete_are_listed_apart_never_ranked(store: Path):
    b = board_of(store, "listops")
    table = b.table.set_index("model")
    assert table.loc["s4", "status"] == "3 complete, failed (1)"
    assert "transformer" not in table.index and "s4d" not in table.index
    apart = b.incomplete.set_index("run id")
    assert apart.loc["transformer-0", "status"] == "oom" and apart.loc["s4-3", "status"] == "failed"
    assert apart.loc["s4d-0", "status"] == "diverged"
    assert apart.loc["s4d-0", "reason"] == "non-finite train loss (nan) at epoch 3, step 5000"
    assert apart.loc["s4-3", "reason"] == "RuntimeError: failed: synthetic"  # a traceback's last line


def test_lower_is_better_metric(store: Path):
    b = board_of(store, "cifar_bpd")
    assert not b.higher_is_better and b.metric == "bpd"
    row = b.rows.iloc[0]
    assert row["settings"].at_paper
    assert row["mean"] == pytest.approx(3.0) and row["delta"] == pytest.approx(3.0 - 2.84)
    assert "test bits/dim ↓" in b.table.columns


def test_published_number_is_the_one_of_the_runs_own_setting():
    refs = load_references().refs

    def number(task: str, model: str, *overrides: str) -> float | None:
        ref = published_for(refs, task, model, flat(f"task={task}", f"model={model}", *overrides))
        return None if ref is None else ref.value

    # S4D: the initialisation decides (models/s4d.py `init`: diag-lin is the default; legs and diag-legs agree).
    assert number("listops", "s4d") == 60.52  # S4D-Lin
    assert number("listops", "s4d", "model.init=legs") == 60.47  # S4D-LegS
    assert number("listops", "s4d", "model.init=diag-legs") == 60.47
    assert number("listops", "s4d", "model.init=diag-inv") == 60.18  # S4D-Inv
    assert number("scifar", "s4d") == 90.42  # sCIFAR (RGB) S4D-Lin
    assert number("scifar", "s4d", "task.grayscale=true") is None  # only a validation number for grayscale
    assert number("scifar", "s4", "task.grayscale=true") == 88.65 and number("scifar", "s4") == 91.80
    # MultiresNet: tied or untied filters; a tree selection no paper reports has no number.
    assert number("listops", "multires", "model.share_filters=false") == 61.85
    assert number("scifar", "multires") == 93.15
    assert number("scifar", "multires", "task.grayscale=true") is None
    assert number("listops", "multires", "model.tree_select=uniform") is None
    # WavSpA: the transform and the attention decide.
    assert number("listops", "wavspa") == 55.40
    assert number("listops", "wavspa", "model.wavelet=ortho") == 45.95
    assert number("listops", "wavspa", "model.wavelet=lift", "model.attention=linear") == 38.35
    # Task settings: a shorter ListOps is another benchmark; PTB-XL per label set; Speech Commands at 16 kHz.
    assert number("listops", "s4d", "task.max_length=40") is None
    assert number("ptbxl", "multires", "task.label_set=form") == 0.896
    assert number("speech_commands", "s4d") == 96.25
    assert number("speech_commands", "s4d", "task.eval_rate=8000") is None


def test_a_difference_from_an_unverified_number_says_so(tmp_path: Path):
    """S4D-Lin's ListOps 60.52 is in references.yaml with `verified: false`: a run at paper settings gets a Δ to it,
    labelled like the number itself."""
    s = Store(tmp_path / "store")
    s.write(record("s4d-0", composed("+experiment=s4d_listops"), 0, 0.5, sizes=LISTOPS_SIZES))
    b = board_of(tmp_path / "store", "listops")
    [ref] = [r for r in b.references if r.label == "S4D-Lin"]
    assert not ref.verified, "S4D-Lin 60.52 is now verified: pick another unverified number for this test"
    table = b.table.set_index("model")
    assert table.loc["s4d", "settings"] == "paper"
    assert table.loc["s4d", "Δ vs published"] == "-10.52 (unverified)"
    assert table.loc["published: S4D-Lin", "status"] == "published, unverified"


def test_a_paper_run_evaluated_on_a_fresh_draw_shows_its_delta_to_the_paper_there(tmp_path: Path):
    """A run at paper settings evaluated again: the evaluations table gives the published number of its row and the
    Δ to it, labelled as the board labels it, unless the evaluation read the data otherwise (another l_max)."""
    from reports import other_evals

    s = Store(tmp_path / "store")
    trained = composed("+experiment=s4d_listops")
    s.write(record("s4d-0", trained, 0, 0.5, sizes=LISTOPS_SIZES))
    board = board_of(tmp_path / "store", "listops")
    drawn = {"source": "generated", "seed": 7, "fingerprint": {"sha256": "163c5332f5b3" + "0" * 52},
             "sizes": {"train": 0, "val": 0, "test": 10_000}}
    evaluations = [{"run_id": f"eval-{name}", "kind": "eval", "train_run_id": "s4d-0", "status": "complete",
                    "metrics": {"metric": "accuracy", "test": test}, "data": drawn, "eval": {"split": "test"},
                    "config": {"task": {**trained["task"], "seed": 7, "n_train": 0, "n_val": 0, "n_test": 10_000,
                                        **task}}}
                   for name, test, task in [("fresh", 0.6114, {}), ("longer", 0.4, {"l_max": 4096})]]
    table, _ = other_evals.table(board, other_evals.load(evaluations))
    rows = table.set_index("other task settings")
    [number] = [i + 1 for i, ref in enumerate(board.cited) if ref.label == "S4D-Lin"]
    assert rows.loc["—", "published"] == rows.loc["l_max=4096", "published"] == f"60.52 [{number}]"
    assert rows.loc["—", "Δ vs published"] == "+0.62 (unverified)"  # 61.14 - 60.52, the number unverified
    assert rows.loc["l_max=4096", "Δ vs published"] == "—"
    # A reduced run has no published number to be compared with, here as on the board.
    s.write(record("s4d-small", composed("+experiment=s4d_listops", "model.d_model=32"), 0, 0.4, sizes=LISTOPS_SIZES))
    board = board_of(tmp_path / "store", "listops")
    table, _ = other_evals.table(board, other_evals.load([{**evaluations[0], "train_run_id": "s4d-small"}]))
    assert table.loc[0, "published"] == table.loc[0, "Δ vs published"] == "—"


def test_a_run_without_a_published_setting_says_so(tmp_path: Path):
    s = Store(tmp_path / "store")
    for seed in (0, 1):
        s.write(record(f"legs-{seed}", composed("task=listops", "model=s4d", "model.init=legs"), seed, 0.3))
        s.write(record(f"uniform-{seed}", composed("task=listops", "model=multires", "model.tree_select=uniform"),
                       seed, 0.2))
    b = board_of(tmp_path / "store", "listops")
    table = b.table.set_index("model")
    footnote = [r.label for r in b.cited].index("S4D-LegS") + 1
    # Reduced: the number of its setting in a column of its own, not comparable, and no Δ.
    assert table.loc["s4d", "settings"] == "reduced" and table.loc["s4d", "published"] == "—"
    assert table.loc["s4d", NOT_COMPARABLE] == f"60.47 [{footnote}]" and table.loc["s4d", "Δ vs published"] == "—"
    # No paper reports the uniform tree selection: the number of the preset it varies (MultiresNet's 62.75).
    assert table.loc["multires", NOT_COMPARABLE] == f"62.75 [{[r.label for r in b.cited].index('MultiresNet') + 1}]"
    settings = b.rows.set_index("label").loc["s4d", "settings"]
    assert str(settings.preset) == "s4d_listops with model.init=legs"
    assert {d.key: (d.ours, d.paper) for d in settings.differences}["train.epochs"] == (10, 40)
    assert any(n.text.startswith("s4d: reduced against s4d_listops with model.init=legs: ") for n in b.notes)


@pytest.mark.slow  # two real runs and a report: about 8 s
def test_a_two_epoch_transformer_on_a_40_row_file_is_reduced(tmp_path: Path):
    """A real run on an LRA-format file of 40 training rows: its config keeps ListOps' settings (the file is read,
    not generated), so it gets the LRA Transformer's number, but it is not at paper settings and has no Δ."""
    lra = tmp_path / "lra"
    done = subprocess.run([sys.executable, "-m", "tasks.listops", "generate", "--out", str(lra), "--train", "40",
                           "--val", "8", "--test", "8", "--min-length", "10", "--max-length", "60", "--max-depth",
                           "3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = run_py(tmp_path, "task=listops", f"task.root={lra}", "task.l_max=64", "model=transformer",
                 "model.d_model=32", "model.n_layers=1", "model.d_ff=200", "train.epochs=2", "train.batch_size=8")
    assert out.returncode == 0, out.stderr[-2000:]
    b = board_of(tmp_path / "results" / "store", "listops", sweep=None)
    row, cells = b.rows.iloc[0], b.table.iloc[0]
    assert row["params"] == pytest.approx(18_600, rel=0.03)
    assert cells["settings"] == "reduced" and cells["Δ vs published"] == "—" and math.isnan(row["delta"])
    assert cells["published"] == "—"  # not comparable: in the next column, beside it
    assert cells[NOT_COMPARABLE].startswith("36.37 [")  # LRA's Transformer: the task's settings are ListOps'
    assert "data train size 40 (paper 96000)" in row["settings"].describe()
    assert "train.epochs 2" not in row["settings"].describe(most=1)  # the data size is named first


def test_mixed_code_versions_get_a_note(store: Path):
    notes = [n.text for n in board_of(store, "listops").notes if n.text.startswith("Mixed code versions")]
    assert any("model multires runs here come from version 1 (multires); version 2 (multires)" in n for n in notes)
    assert any("task listops" in n and "version 1 (multires)" in n and "unrecorded (s4" in n for n in notes)


def test_records_without_one_integer_seed_are_skipped_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    s = Store(tmp_path)
    s.write(record("good", synthetic("listops", "s4"), 0, 0.5))
    s.write(record("listed", synthetic("listops", "s4"), [0, 1], 0.5))
    bad = record("noseed", synthetic("listops", "s4"), 0, 0.5)
    del bad["seed"]
    s.write(bad)
    runs, _ = load(tmp_path)
    assert list(runs["run_id"]) == ["good"]
    err = capsys.readouterr().err
    assert f"skipping record {tmp_path / 'listed.json'}: its seed is [0, 1]" in err
    assert f"skipping record {tmp_path / 'noseed.json'}: its seed is null" in err
    build(tmp_path, tmp_path / "out")  # and the report is written


def test_ablation_finds_varied_keys(store: Path):
    runs, _ = load(store, sweep="abl")
    (ab,) = ablations(runs)
    assert ab.keys == ["model.d_model", "optim.lr"]
    rows = ab.rows
    assert list(zip(rows["model.d_model"], rows["optim.lr"], strict=True)) == [(32, 1e-3), (64, 1e-3), (64, 3e-3)]
    assert rows["mean"].tolist() == pytest.approx([30.5, 35.5, 45.5], abs=1e-9)
    assert rows["std"].tolist() == pytest.approx([math.sqrt(0.5)] * 3, abs=1e-9)


def test_report_files(report: Path, store: Path):
    out = report.parent
    text = report.read_text()
    assert report.name == "leaderboard.md"
    assert "| multires | paper | 3 complete, no record for seed 3 | 3 | 60.00 ± 10.00 |" in text
    assert "runs that did not complete (not ranked)" in text
    assert "## Ablation: sweep abl, listops" in text and "oom" in text
    for name in ("report.html", "report.tex", "summary.csv", MANIFEST):
        assert (out / name).stat().st_size > 0
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "scaling_layer_fwd_fp32.png" in figures and "curves_cifar_bpd.png" in figures
    assert sum(f.startswith("curves_listops_max_args") for f in figures) == 2  # two ListOps settings
    assert max(len(f) for f in figures) <= len("curves_") + 48 + len(".png")
    assert all(f"figures/{f}" in text for f in figures)
    # summary.csv: one row per readable record, training runs and benchmark points.
    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(1 for _ in Store(store).records(warn=False))
    multires = next(r for r in rows if r["run_id"] == "multires-0")
    assert multires["settings"] == "paper" and float(multires["published"]) == 62.75
    assert {r["kind"] for r in rows} == {"train", "bench"}


def test_benchmark_tables_explain_every_cell(report: Path):
    text = report.read_text()
    assert "| s4 | layer | fwd | fp32 | 1.02 | fail | — |" in text  # 1024 done, 4096 failed, 16384 no record
    assert "oom = out of memory" in text and "— = no record for that length" in text and "skip = not run" in text
    assert "d_model 256, 2^18 = 262,144 tokens per call" in text and "warm-up 2 calls, then 10 timed" in text


def test_cli_and_sweep_filter(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--store", str(store), "--out", str(tmp_path), "--sweep", "abl"]) == 0
    text = (tmp_path / "leaderboard.md").read_text()
    assert "sgconv" in text and "| multires |" not in text
    assert "skipping unreadable record" in capsys.readouterr().err


def test_empty_or_missing_store(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    path = build(tmp_path / "empty", tmp_path / "out")
    assert "No records" in path.read_text()
    with pytest.raises(DataError, match="does not exist"):
        build(tmp_path / "no-store", tmp_path / "out")
    done = subprocess.run([sys.executable, "-m", "reports", "--store", "/does/not/exist", "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "results store /does/not/exist does not exist" in done.stderr
    assert not (tmp_path / "o").exists()


def test_markdown_and_html_escape_what_records_hold(tmp_path: Path):
    s = Store(tmp_path / "store")
    evil = synthetic("listops", "s4")
    evil["model"]["note"] = "<img src=x onerror=alert(1)> | *bold* [link](http://x)"
    s.write(record("evil-0", evil, 0, 0.5))
    s.write(record("plain-0", synthetic("listops", "s4", d_model=32), 0, 0.4))
    text = build(tmp_path / "store", tmp_path / "out").read_text()
    # Backslash escapes (CommonMark 2.4): the tag, the cell separator, emphasis and the link are text.
    assert "\\<img src=x onerror=alert(1)> \\| \\*bold\\* [link\\](http://x)" in text
    assert not re.search(r"(?<!\\)<img", text) and "&lt;" not in text  # nothing raw, no entity in the raw file
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x" in page


def test_rebuild_removes_only_what_the_last_build_wrote(store: Path, tmp_path: Path):
    out = tmp_path / "out"
    build(store, out)
    assert (out / "figures" / "scaling_layer_fwd_fp32.png").exists() and list((out / "latex").glob("*.tex"))
    (out / "mine.txt").write_text("the user's")
    (out / "figures" / "mine.png").write_bytes(b"not ours")
    only_abl = tmp_path / "abl"
    Store(only_abl).write(record("x-0", synthetic("listops", "s4"), 0, 0.5))
    build(only_abl, out)
    assert not (out / "figures" / "scaling_layer_fwd_fp32.png").exists()
    assert (out / "mine.txt").read_text() == "the user's" and (out / "figures" / "mine.png").exists()
    assert "scaling" not in (out / "report.tex").read_text()


def test_error_bars_stop_at_the_metric_range():
    assert clipped_error(95.0, 10.0, 0.0, 100.0) == (10.0, 5.0)
    assert clipped_error(3.0, 10.0, 0.0, 100.0) == (3.0, 10.0)
    assert clipped_error(50.0, float("nan"), 0.0, 100.0) == (0.0, 0.0)


def test_latex_document(report: Path):
    tex = (report.parent / "report.tex").read_text()
    assert tex.startswith("\\documentclass") and "\\usepackage{booktabs,graphicx,array}" in tex
    assert "\\usepackage{xurl}" in tex and "\\item[{[1]}]" in tex and "\\url{https://" in tex
    assert tex.count("\\includegraphics") == len(list((report.parent / "figures").glob("*.png")))
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


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex absent (apt-get install texlive-latex-recommended texlive-latex-extra)")
def test_latex_compiles_to_pages_that_hold_everything(report: Path):
    out = report.parent
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"], cwd=out,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    log = (out / "report.log").read_text(errors="replace")
    overfull = [float(x) for x in re.findall(r"Overfull \\hbox \(([0-9.]+)pt too wide\)", log)]
    assert all(x < 10 for x in overfull), f"content wider than the page: {overfull}"
    assert "Missing character" not in log
    if shutil.which("pdftotext"):
        first = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "report.pdf", "-"], cwd=out,
                               capture_output=True, text=True).stdout
        assert "Leaderboard: cifar" in first and "our runs (ranked)" in first  # no empty first page


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
    catalog = load_references()
    refs = catalog.refs
    assert {r.model for r in refs} >= {"multires", "s4", "s4d", "sgconv", "wavspa", "transformer"}
    header = (ROOT / "reports" / "references.yaml").read_text().split("\ndatasets:")[0]
    assert "/work/" not in header and "https://github.com/thjashin/multires-conv/issues/1" in header
    for ref in refs:
        assert ref.source.get("paper") and ref.source.get("table") and ref.source.get("where"), ref.label
        assert ref.url.startswith("https://"), ref.label  # where a reader opens it
        where = ref.source["where"]
        assert not re.search(r"\.md §|\(specs\)|\[recall\]|/work/|brief", where), (ref.label, where)
        if ref.verified:
            assert re.search(r"README|multires-conv #1|state-spaces/s4|wizwand", where), (ref.label, where)
        else:
            assert where.startswith("not read here"), (ref.label, where)
    by = {(r.task, r.label): r for r in refs}
    assert by[("listops", "MultiresNet")].value == 62.75 and by[("listops", "MultiresNet")].verified
    assert not by[("cifar_bpd", "MultiresNet")].verified  # the paper's table could not be opened
    label_sets = {r.match_task.get("label_set") for r in refs if r.task == "ptbxl" and r.model == "multires"}
    assert label_sets == {"all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"}
    assert {r.model for r in refs if r.task == "speech_commands"} == {"s4", "s4d"}
    assert catalog.datasets["listops"] == LISTOPS_SIZES


def test_bad_reference_file(tmp_path: Path):
    bad = tmp_path / "refs.yaml"
    bad.write_text("references:\n- {task: listops, label: x}\n")
    with pytest.raises(ConfigError, match="lacks"):
        load_references(bad)
    bad.write_text("references:\n- {task: listops, model: s4d, label: x, metric: accuracy, split: test, value: 1,\n"
                   "   source: {paper: p, table: t, where: w}, verified: false, match: {model: {initt: legs}}}\n")
    with pytest.raises(ConfigError, match="initt"):
        load_references(bad)


# --- Issue 27: states, sweeps, machines, reduced rows, raw Markdown, scale ---------------------------------------


def runs_of(records: list[dict]) -> pd.DataFrame:
    """The frame `load` gives, built from records directly (a state the store does not take yet, e.g. cancelled)."""
    return pd.DataFrame([run_row(r) for r in records], columns=RUN_COLUMNS)


def in_sweep(rec: dict, sweep_id: str | None, sweep: str = "default") -> dict:
    return rec | {"sweep": sweep, "sweep_id": sweep_id, "config": {**rec["config"], "sweep": sweep}}


def test_every_state_is_listed_by_its_own_name_as_sweep_status_says():
    config = synthetic("listops", "s4")
    states = ["complete", "failed", "oom", "cancelled", "preempted", "diverged"]
    records = [record(f"r-{s}", config, seed, 0.5 if s == "complete" else None, status=s,
                      error=None if s == "complete" else f"{s}: the cause in one line")
               for seed, s in enumerate(states)]
    (b,) = boards(runs_of(records), load_references())
    apart = b.incomplete.set_index("run id")
    for rec in records[1:]:
        # sweeps.status.classify, for a job no longer in SLURM's queue: the state `status` prints.
        assert apart.loc[rec["run_id"], "status"] == classify(rec, None, None) == rec["status"]
        assert apart.loc[rec["run_id"], "reason"] == f"{rec['status']}: the cause in one line"
    assert classify(records[0], None, None) == "done" and records[0]["run_id"] not in apart.index
    assert b.table.set_index("model").loc["s4", "status"] == \
        "1 complete, failed (1), oom (1), preempted (1), cancelled (1), diverged (1)"


def test_a_lone_run_is_reported_on_its_own_and_sweeps_of_one_name_are_told_apart(tmp_path: Path):
    """Two SLURM sweeps without a name (sweep "default", ids s1 and s2: one varies the width over seeds 0-3 and lacks
    a seed, the other the learning rate) and one `python run.py` (no sweep id)."""
    s = Store(tmp_path)
    for d_model in (32, 64):
        for seed in (0, 1, 2, 3)[: 3 if d_model == 64 else 4]:
            s.write(in_sweep(record(f"w{d_model}-{seed}", synthetic("listops", "s4", d_model), seed, 0.3), "s1"))
    for lr in (1e-3, 3e-3):
        s.write(in_sweep(record(f"lr{lr}", synthetic("listops", "s4", 128, lr), 0, 0.4), "s2"))
    s.write(in_sweep(record("lone", synthetic("listops", "s4", 256), 0, 0.5), None))
    runs, _ = load(tmp_path)
    rows = board_of(tmp_path, "listops", sweep=None).table.set_index("model")["status"]
    assert rows["s4 (model.d_model=256, optim.lr=0.001)"] == "1 complete"  # asked for one seed: none missing
    assert rows["s4 (model.d_model=64, optim.lr=0.001)"] == "3 complete, no record for seed 3"
    assert rows["s4 (model.d_model=128, optim.lr=0.001)"] == "1 complete"  # its sweep ran seed 0 only
    apart = {(tuple(a.sweep_ids), tuple(a.keys)): a for a in ablations(runs)}
    assert set(apart) == {(("s1",), ("model.d_model",)), (("s2",), ("optim.lr",))}  # the lone run in neither
    assert list(apart[(("s1",), ("model.d_model",))].rows["model.d_model"]) == [32, 64]
    (pooled,) = ablations(runs, pool=True)
    assert pooled.sweep_ids == ["s1", "s2"] and pooled.keys == ["model.d_model", "optim.lr"]
    assert len(pooled.rows) == 4  # 32, 64 and 128 twice: never the lone run's 256
    text = build(tmp_path, tmp_path / "out").read_text()
    assert "## Ablation: sweep default (invocation s1), listops" in text and "(invocation s2)" in text
    assert main(["--store", str(tmp_path), "--out", str(tmp_path / "pooled"), "--pool"]) == 0
    assert "## Ablation: sweep default (2 invocations pooled), listops" in (tmp_path / "pooled" /
                                                                         "leaderboard.md").read_text()


def test_a_board_says_which_generated_draw_its_runs_met(tmp_path: Path):
    """Runs on a set generated here meet another test split than the paper's: the board names the draw; runs on
    files read from disk get no such note."""
    s = Store(tmp_path)
    drawn = {"source": "generated", "seed": 0, "fingerprint": {"sha256": "4c5d2876fae0" + "0" * 52}}
    for seed in (0, 1):
        s.write(record(f"gen-{seed}", synthetic("listops", "s4d"), seed, 0.57) | {"data": drawn})
    s.write(record("files", synthetic("cifar", "s4d"), 0, 0.8) | {"data": {"source": "/data/cifar"}})
    notes = [n.text for n in board_of(tmp_path, "listops").notes if n.text.startswith("Data:")]
    assert notes == ["Data: our runs were trained and tested on a set generated here by the task's generator (seed 0, "
                     "sha256 4c5d2876fae0). A published number comes from the authors' own copy of the data (for a "
                     "generated task, another draw of the same generator, e.g. the LRA release), so a Δ also carries "
                     "the difference between the two test splits."]
    assert not [n for n in board_of(tmp_path, "cifar").notes if n.text.startswith("Data:")]
    # The same settings drawn twice (e.g. by two generator versions): both draws, with their runs.
    s.write(record("gen-2", synthetic("listops", "s4d"), 2, 0.57) | {"data": {**drawn, "fingerprint": {
        "sha256": "9" * 64}}})
    (note,) = [n.text for n in board_of(tmp_path, "listops").notes if n.text.startswith("Data:")]
    assert "generator (seed 0, sha256 4c5d2876fae0 (2 runs); seed 0, sha256 999999999999 (1 run))." in note


def test_presets_with_their_own_seeds_under_one_sweep_name_lack_no_seed(tmp_path: Path):
    """Paper presets run one by one under `sweep=listops-paper`, each with its published seed (S4D 2222, MultiresNet
    1, S4 2222 as S4D): no seed axis was crossed, so no row lacks another's seed. A crossed sweep still names a lost
    seed."""
    s = Store(tmp_path)
    s.write(record("s4d", synthetic("listops", "s4d"), 2222, 0.57, sweep="listops-paper"))
    s.write(record("multires", synthetic("listops", "multires"), 1, 0.6, sweep="listops-paper"))
    s.write(record("s4", synthetic("listops", "s4"), 2222, 0.59, sweep="listops-paper"))
    for model, seeds in (("s4", (0, 1)), ("sgconv", (0,))):  # crossed with seeds 0, 1; sgconv's seed 1 lost
        for seed in seeds:
            s.write(record(f"{model}-{seed}", synthetic("listops", model), seed, 0.5, sweep="crossed"))
    presets = board_of(tmp_path, "listops", sweep="listops-paper").table.set_index("model")["status"]
    assert presets.to_dict() == {"s4d": "1 complete", "multires": "1 complete", "s4": "1 complete"}
    crossed = board_of(tmp_path, "listops", sweep="crossed").table.set_index("model")["status"]
    assert crossed.to_dict() == {"s4": "2 complete", "sgconv": "1 complete, no record for seed 1"}


def test_throughput_is_compared_only_within_a_machine(tmp_path: Path):
    gpu = {"device": "NVIDIA H100 80GB HBM3", "host": "g1", "torch_threads": 16}
    cpu = {"device": "x86_64", "host": "laptop", "torch_threads": 2}
    records = []
    for model, rates in (("s4", {0: (gpu, 9e5), 1: (gpu, 7e5), 2: (cpu, 1e4)}), ("s4d", {0: (cpu, 3e4)})):
        for seed, (env, rate) in rates.items():
            rec = record(f"{model}-{seed}", synthetic("listops", model), seed, 0.5)
            records.append(rec | {"env": env, "throughput": {"train_tokens_per_s": rate}})
    (b,) = boards(runs_of(records), load_references())
    table = b.table.set_index("model")
    a, c = "train tokens/s, machine A", "train tokens/s, machine B"  # sorted: the CPU's name, then the GPU's
    assert list(table.loc["s4", [a, c]]) == ["10K", "800K"]  # (9e5 + 7e5) / 2 on the GPU alone
    assert list(table.loc["s4d", [a, c]]) == ["30K", "—"]
    (note,) = [n.text for n in b.notes if n.text.startswith("train tokens/s")]
    assert "machine A = CPU x86_64 on laptop, 2 threads; machine B = NVIDIA H100 80GB HBM3" in note
    assert "load is not recorded" in note
    (one,) = boards(runs_of(records[:2]), load_references())
    assert "train tokens/s" in one.table.columns and "every run measured on one machine (NVIDIA H100" in \
        " ".join(n.text for n in one.notes)


def test_a_run_resumed_on_another_card_is_not_averaged_into_either_cards_column():
    """MultiresNet's paper run went from an H100 to an H200 across sessions: its rate is a mix of both."""
    h100, h200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"
    pieces = {"segments": [{"from_step": 0, "unrecorded": True}, {"from_step": 14562, "device": h100},
                           {"from_step": 40020, "device": h200}]}
    s4 = record("s4-0", synthetic("listops", "s4"), 0, 0.5) | {"env": {"device": h100},
                                                               "throughput": {"train_tokens_per_s": 2e6}}
    multires = record("m-0", synthetic("listops", "multires"), 0, 0.6) | {
        "env": {"device": h200}, "throughput": {"train_tokens_per_s": 6e6}, "cost": pieces}
    (b,) = boards(runs_of([s4, multires]), load_references())
    table = b.table.set_index("model")
    a, c = "train tokens/s, machine A", "train tokens/s, machine B"
    assert list(table.loc["s4", [a, c]]) == ["2M", "—"] and list(table.loc["multires", [a, c]]) == ["—", "6M"]
    (note,) = [n.text for n in b.notes if n.text.startswith("train tokens/s")]
    assert f"machine A = {h100}; machine B = pieces on {h100} and {h200}" in note


def test_a_reduced_row_shows_the_papers_number_beside_it_not_comparable(tmp_path: Path):
    """The quickstart's ListOps (expressions of 20 to 100 tokens) is another task setting than LRA's: no published
    number is of its setting, but MultiresNet's 62.75 is shown beside it, cited, not comparable, without Δ."""
    s = Store(tmp_path)
    config = composed("task=listops", "task.max_length=100", "task.n_train=4000", "model=multires")
    s.write(record("q-0", config, 0, 0.40, sweep="quickstart"))
    b = board_of(tmp_path, "listops", sweep=None)
    cells = b.table.iloc[0]
    number = [r.label for r in b.cited].index("MultiresNet") + 1
    assert cells["settings"] == "reduced" and cells["published"] == "—" and cells["Δ vs published"] == "—"
    assert cells[NOT_COMPARABLE] == f"62.75 [{number}]" and not b.references  # no published row of this setting
    assert any(n.marker == f"[{number}]" and "not comparable" in n.text for n in b.notes)
    row = next(r for r in csv.DictReader((build(tmp_path, tmp_path / "out").parent / "summary.csv").open()))
    assert row["published"] == "" and float(row["published_not_comparable"]) == 62.75


def test_an_unrecorded_data_size_is_unknown_not_a_difference(tmp_path: Path):
    s = Store(tmp_path)
    sizes = {"train": 96_000, "test": 2_000}  # no val size in the record
    s.write(record("m-0", composed("+experiment=multires_listops"), 0, 0.6, sizes=sizes))
    row = board_of(tmp_path, "listops").rows.iloc[0]
    check = row["settings"]
    assert check.label == "unconfirmed" and not check.differences and check.unknown == ("data val size",)
    assert math.isnan(row["delta"]) and row["other_ref"].value == 62.75
    assert check.describe() == ("unconfirmed against multires_listops: its config is the paper's, but not "
                                "recorded, so not compared: data val size")


def test_markdown_reads_as_written():
    """Hand-written from CommonMark: only what would start markup is escaped, with a backslash."""
    cases = {
        "p < 0.05": "p < 0.05", "[32.03, 41.97]": "[32.03, 41.97]", "d_model": "d_model", "a & b": "a & b",
        "<img src=x>": "\\<img src=x>", "&amp;": "\\&amp;", "[a](b)": "[a\\](b)", "_x_": "\\_x\\_",
        "*x* `y` a|b ~z~ #1": "\\*x\\* \\`y\\` a\\|b \\~z\\~ \\#1", "C:\\dir": "C:\\dir", "1\\*": "1\\\\\\*",
    }
    for text, raw in cases.items():
        assert md_escape(text) == raw, text
    assert md_escape("1. first", block=True) == "1\\. first" and md_escape("-2.75", block=True) == "\\-2.75"
    assert md_escape("> quote", block=True) == "\\> quote" and md_escape("> x") == "> x"


def test_markdown_renders_as_written_in_commonmark():
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py absent (pip install markdown-it-py)")
    md = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])
    nasty = ["p < 0.05", "<img src=x onerror=alert(1)> | *bold* [link](http://x)", "&amp; &copy; & x", "_a_ d_model",
             "~~gone~~", "`code`", "a\\*b", "end\\", "[x]: http://y", "![i](x)", "<!-- c -->", "-2.75", "1. one",
             "> q", "# h", "+ l"]
    for text in nasty:
        html_out = md.render(md_escape(text, block=True)).strip()
        assert html_out == f"<p>{html.escape(text, quote=False)}</p>", text
    table = pd.DataFrame({"a|b": nasty, "c": ["x"] * len(nasty)})
    cells = re.findall(r"<td>(.*?)</td>", md.render(render_markdown(table)))[::2]
    assert cells == [html.escape(t, quote=False).strip() for t in nasty]


def test_paired_tests_only_where_two_seeds_can_be_shared():
    one_seed = pd.DataFrame({"label": [f"r{i}" for i in range(10_000)],
                             "test_by_seed": [{0: float(i)} for i in range(10_000)]})
    assert candidate_pairs(one_seed) == ([], True)  # no pair can share two seeds: none is looked at
    rng = np.random.default_rng(0)
    many = pd.DataFrame({"label": [f"r{i}" for i in range(25)],
                         "test_by_seed": [{s: float(v) for s, v in enumerate(rng.normal(i, 1, 3))} for i in range(25)]})
    pairs, notes = comparisons(many)
    assert list(zip(pairs["A"], pairs["B"], strict=True)) == [(f"r{i}", f"r{i + 1}") for i in range(24)]
    a, b = many["test_by_seed"][3], many["test_by_seed"][4]
    t = sps.ttest_rel([a[s] for s in range(3)], [b[s] for s in range(3)])
    assert pairs["t"][3] == pytest.approx(t.statistic) and pairs["p"][3] == pytest.approx(t.pvalue)
    assert "each is tested against the next one in the ranking only" in notes[0].text
    few = many.iloc[:4]
    assert len(comparisons(few)[0]) == 6 and not comparisons(few)[1]  # every pair of four rows


def test_parameter_ticks_are_distinct_and_never_overlap():
    assert count_labels([11_400, 11_600, 11_800]) == ["11.4K", "11.6K", "11.8K"]
    assert count_labels([11_400, 11_405]) == ["11.4K", "11.405K"]  # digits until neighbours differ
    fig, ax = plt.subplots(figsize=(10, 4.4))
    ax.plot([11_400, 11_800], [30, 37], "o")
    ax.set_xscale("log")
    count_axis(ax.xaxis)
    fig.canvas.draw()
    labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
    boxes = [t.get_window_extent() for t in labels]
    texts = [t.get_text() for t in labels]
    plt.close(fig)
    assert len(texts) >= 2 and len(set(texts)) == len(texts) and not any("$" in t for t in texts)
    assert all(not a.overlaps(b) for a, b in zip(boxes, boxes[1:], strict=False)), texts


def test_a_log_axis_within_one_decade_still_names_several_ticks():
    # GPU-hours of 0.278 and 0.81 (the ListOps board's Transformer and S4D): a log locator names only 0.5 there
    fig, ax = plt.subplots(figsize=(6, 4.4))
    ax.plot([0.278, 0.81], [34, 57], "o")
    ax.set_xscale("log")
    log_axis(ax.xaxis, FuncFormatter(lambda v, _: f"{v:g}"))
    fig.canvas.draw()
    low, high = ax.get_xlim()
    texts = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
    plt.close(fig)
    assert texts == ["0.4", "0.6", "0.8"]


def test_fractions_of_cpu_ceilings_say_what_they_are():
    rec = bench_record("s4", 1024)
    rec["metrics"].update(frac_matmul=0.83, frac_bandwidth=0.4)
    rec["env"] = {**rec["env"], "device": "x86_64"}
    captions = [c for c, _ in bench_tables(bench_frame([rec])) if c.startswith("fraction")]
    assert len(captions) == 2 and all("not the hardware's limit" in c for c in captions)
    rec["env"]["device"] = "NVIDIA H100 80GB HBM3"
    assert all("limit" not in c for c, _ in bench_tables(bench_frame([rec])))


def test_a_run_still_under_way_is_drawn_as_far_as_it_got_and_never_ranked(tmp_path: Path):
    """A preempted record keeps its validations so far (`progress`): the curves draw it and the legend says it did not
    complete; the leaderboard lists it apart and ranks the complete run alone."""
    config = synthetic("listops", "s4")
    done = record("done", config, 0, 0.5)
    under_way = record("under-way", {**config, "model": {"name": "s4d", "d_model": 64}}, 0, None, status="preempted",
                       error="stopped by signal 15 at step 30")
    under_way["progress"] = {"metric": "accuracy", "epoch": 3, "step": 30, "history": [
        {"epoch": e, "step": 10 * e, "train_loss": 1.0 / e, "val": 0.1 * e, "lr": 1e-3} for e in (1, 2, 3)]}
    runs = runs_of([done, under_way])
    assert runs.set_index("run_id").loc["under-way", "history"] == under_way["progress"]["history"]
    (b,) = boards(runs, load_references())
    assert list(b.rows["model"]) == ["s4"] and list(b.incomplete["run id"]) == ["under-way"]
    figure = plots.training_curves(b, b.runs, tmp_path)
    assert figure is not None and figure.path.is_file() and "never ranked" in figure.caption
    by_id = runs.set_index("run_id", drop=False)
    assert plots.legend_label("s4d", by_id.loc[["under-way"]]) == "s4d (preempted after epoch 3, not ranked)"
    assert plots.legend_label("s4", by_id.loc[["done"]]) == "s4"
    assert plots.legend_label("both", by_id) == "both (1 of 2 runs not complete)"
    (alone,) = boards(runs_of([under_way]), load_references())  # nothing complete: the metric the run reports
    assert alone.rows.empty and alone.metric == "accuracy"

    # A diverged run keeps its history too (its non-finite loss written as null): drawn up to where it diverged.
    diverged = record("diverged", {**config, "model": {"name": "sgconv", "d_model": 64}}, 0, None, status="diverged")
    diverged["diverged"] = {"epoch": 2, "step": 20, "history": [
        {"epoch": 1, "step": 10, "train_loss": 1.5, "val": 0.2, "lr": 1e-3},
        {"epoch": 2, "step": 20, "train_loss": None, "val": 0.1, "lr": 1e-3}]}
    with_diverged = runs_of([done, diverged])
    assert with_diverged.set_index("run_id").loc["diverged", "history"] == diverged["diverged"]["history"]
    (b,) = boards(with_diverged, load_references())
    assert list(b.incomplete["run id"]) == ["diverged"]
    assert plots.training_curves(b, b.runs, tmp_path / "diverged") is not None
    assert plots.legend_label("sgconv", with_diverged.set_index("run_id").loc[["diverged"]]) == \
        "sgconv (diverged after epoch 2, not ranked)"


def test_a_configuration_keeps_its_colour_in_every_figure_of_a_board():
    """The cost and parameter figures draw the complete rows only, the curves every run: a run that did not complete
    (here sgconv, which sorts between the two complete ones) must not recolour the rest from one figure to the next."""
    config = synthetic("listops", "s4")
    transformer = record("t", {**config, "model": {"name": "transformer", "d_model": 64}}, 0, 0.3)
    preempted = record("g", {**config, "model": {"name": "sgconv", "d_model": 64}}, 0, None, status="preempted",
                       error="stopped by signal 15 at step 30")
    (b,) = boards(runs_of([record("s", config, 0, 0.5), transformer, preempted]), load_references())
    ranked = plots.board_styles(b, list(b.rows["label"]))
    every = plots.board_styles(b, ["s4", "sgconv", "transformer"])
    assert list(b.rows["label"]) == ["s4", "transformer"]
    assert ranked["transformer"] == every["transformer"] and ranked["s4"] == every["s4"]
    assert len({str(style["color"]) for style in every.values()}) == 3
