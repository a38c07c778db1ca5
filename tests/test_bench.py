"""The scaling benchmark on CPU: timing, memory, counts, records, OOM handling, exponent fit, its tables, the
published-code study (on stand-ins for the published files), the CLI.

Speed is never asserted here (only that a clock measures at least a known sleep); the GPU study is run by
hand with the preset sweeps/experiment/bench_scaling.yaml.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from harness import bench
from harness.config import BenchConfig, RunConfig
from harness.errors import ConfigError
from harness.jobs import dispatch
from harness.registry import MODELS
from harness.results import Store
from harness.timing import PeakMemory, fit_exponent, time_calls
from reports import bench as tables
from reports import build
from reports.train_step import rows as train_step_rows
from reports.train_step import table as train_step_table
from sweeps.studies import compare_published as study
from sweeps.studies import train_step
from tests.helpers import ROOT, compose_run

CPU = torch.device("cpu")
D = 16


def bench_cfg(tmp_path: Path, **fields: Any) -> Any:
    """A run config for job=bench on CPU with tiny sizes; `fields` set bench.*."""
    cfg = OmegaConf.structured(RunConfig)
    cfg.job = "bench"
    cfg.paths.root = str(tmp_path / "results")
    cfg.sweep = fields.pop("sweep", "default")
    values = {"models": ["transformer"], "lengths": [32, 64], "device": "cpu", "d_model": D,
              "tokens_per_batch": 128, "warmup": 1, "repeats": 3, "dtypes": ["fp32"], **fields}
    with open_dict(cfg.bench):
        for key, value in values.items():
            cfg.bench[key] = value
    return cfg


def options(**fields: Any) -> BenchConfig:
    return BenchConfig(**{"scope": ["layer"], "lengths": [64], "passes": ["fwd"], "dtypes": ["fp32"],
                          **fields}).resolved("cpu")


def time_row(result: bench.BenchResult, model: str = "transformer") -> list[str]:
    """The cells of the model's first row in the run's printed time table."""
    row = next(line for line in tables.summary(result).splitlines() if line.startswith(f"| {model} "))
    return [c.strip() for c in row.strip().strip("|").split("|")]


def transformer_attention_params(d: int) -> int:
    return 4 * d * d + 4 * d  # fused q/k/v (3 d x d + 3 d) and the output projection (d x d + d)


def test_a_cpu_sweep_writes_one_record_per_point_with_the_agreed_fields(tmp_path: Path) -> None:
    result = bench.run(bench_cfg(tmp_path, dtypes=["fp32", "bf16"]))
    records = result.records
    assert len(records) == 2 * 2 * 2 * 2  # lengths x scopes x passes x dtypes
    assert {(r["metrics"]["scope"], r["metrics"]["pass"], r["metrics"]["dtype"], r["metrics"]["length"])
            for r in records} == {(s, p, d, n) for s in BenchConfig.SCOPES for p in BenchConfig.PASSES
                                  for d in BenchConfig.DTYPES for n in (32, 64)}
    stored = {r["run_id"]: r for r in Store(tmp_path / "results" / "store").records()}
    assert set(stored) == {r["run_id"] for r in records}
    for rec in stored.values():
        m = rec["metrics"]
        assert rec["kind"] == "bench" and rec["task"] is None and rec["model"] == "transformer"
        assert rec["status"] == "complete" and rec["error"] is None and m["impl"] == "ours"
        assert rec["env"]["torch"] == torch.__version__
        assert rec["config"]["bench"]["lengths"] == [32, 64] and rec["config"]["model"]["n_layers"] == 1
        assert m["batch_size"] == 128 // m["length"]
        assert len(m["time_ms_all"]) == 3 and all(t > 0 for t in m["time_ms_all"])
        assert m["time_ms"] == statistics.median(m["time_ms_all"])
        assert m["tokens_per_s"] == pytest.approx(m["batch_size"] * m["length"] / (m["time_ms"] / 1e3))
        assert set(m["ceilings"]) == {"copy_gbps", "matmul_tflops_fp32", "matmul_tflops_bf16"}
        assert all(v > 0 for v in m["ceilings"].values())
        assert m["memory_kind"] == "cpu_rss_hwm" and m["peak_bytes"] >= 0
        rate = m["ceilings"]["matmul_tflops_bf16" if m["dtype"] == "bf16" else "matmul_tflops_fp32"] * 1e12
        assert m["frac_matmul"] == pytest.approx(m["flops_assumed"] / (m["time_ms"] / 1e3) / rate)
        assert m["frac_bandwidth"] == pytest.approx(
            m["bytes_assumed"] / (m["time_ms"] / 1e3) / (m["ceilings"]["copy_gbps"] * 1e9))
        if m["scope"] == "layer":
            assert rec["params"] == transformer_attention_params(D)
        else:  # plus the pre-norm LayerNorm
            assert rec["params"] == transformer_attention_params(D) + 2 * D
        # The counts, computed here from the shapes: fp32 x and output, fp32 parameters.
        if m["scope"] == "layer" and m["dtype"] == "fp32":
            b, n = m["batch_size"], m["length"]
            act = b * n * D * 4
            once = 2 * act + 4 * rec["params"]
            linear = 2 * b * n * D * 3 * D + 2 * b * n * D * D
            attention = 4 * b * n * n * D  # q k^T and (softmax) v, summed over heads
            if m["pass"] == "fwd":
                assert m["bytes_assumed"] == once
                assert m["flops_assumed"] == linear + attention
            else:
                assert m["bytes_assumed"] == 2 * once
                assert m["flops_assumed"] >= 3 * linear + 2 * attention
    # The report of the store: a row per series with its exponents, the time of each point to 3 digits.
    text = build(tmp_path / "results" / "store", tmp_path / "report").read_text()
    assert "| transformer | block | fwd_bwd | bf16 |" in text and "p_time" in text
    first = next(r["metrics"] for r in records if (r["metrics"]["scope"], r["metrics"]["pass"], r["metrics"]["dtype"],
                                                   r["metrics"]["length"]) == ("layer", "fwd", "fp32", 32))
    assert f"| transformer | layer | fwd | fp32 | {first['time_ms']:.3g} |" in text
    assert "fraction of the matmul rate" in text and "ceilings: copy" in text


def test_an_out_of_memory_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    real = bench.make_step

    def make_step(module: torch.nn.Module, x: torch.Tensor, point: bench.Point, *args: Any) -> Any:
        step = real(module, x, point, *args)

        def faulty() -> None:  # fails at the start of every call of the point, as a real one would
            if point.length == 64:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 EiB (injected)")
            if point.length == 128 and point.pass_ == "fwd_bwd":
                raise ValueError("an injected bug")
            step()
        return faulty

    monkeypatch.setattr(bench, "make_step", make_step)
    result = bench.run(bench_cfg(tmp_path, lengths=[32, 64, 128], scope=["layer"]))
    status = {(r["metrics"]["length"], r["metrics"]["pass"]): r["status"] for r in result.records}
    assert status == {(32, "fwd"): "complete", (32, "fwd_bwd"): "complete", (64, "fwd"): "oom",
                      (64, "fwd_bwd"): "oom", (128, "fwd"): "complete", (128, "fwd_bwd"): "failed"}
    for rec in Store(tmp_path / "results" / "store").records():
        m = rec["metrics"]
        if rec["status"] == "oom":
            assert "injected" in rec["error"] and m["time_ms"] is None and m["time_ms_all"] == []
            assert m["length"] == 64 and m["batch_size"] == 2
        if rec["status"] == "failed":
            assert "ValueError: an injected bug" in rec["error"]
    out = capsys.readouterr().out
    assert "transformer layer fwd fp32 L=64 B=2: oom (" in out and "L=128 B=1: failed (" in out
    fwd = time_row(result)  # the lengths' cells: 32, 64, 128
    assert fwd[:4] == ["transformer", "layer", "fwd", "fp32"] and fwd[5] == "oom" and float(fwd[4]) > 0
    fwd_bwd = next(line for line in tables.summary(result).splitlines() if "| fwd_bwd |" in line)
    assert "| oom |" in fwd_bwd and "| fail |" in fwd_bwd


def test_a_model_that_cannot_be_built_at_a_length_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = bench.build_block

    def build_block(name: str, cfg: Any, length: int, d_model: int, device: torch.device) -> torch.nn.Module:
        if length == 32:
            raise torch.OutOfMemoryError("CUDA out of memory (injected at build)")
        return real(name, cfg, length, d_model, device)

    monkeypatch.setattr(bench, "build_block", build_block)
    result = bench.run(bench_cfg(tmp_path, lengths=[32, 64], scope=["layer", "block"], passes=["fwd"]))
    by_length = {(r["metrics"]["length"], r["metrics"]["scope"]): r for r in result.records}
    assert {k: r["status"] for k, r in by_length.items()} == {(32, "layer"): "oom", (32, "block"): "oom",
                                                              (64, "layer"): "complete", (64, "block"): "complete"}
    assert by_length[(32, "layer")]["error"].startswith("building the model")
    assert by_length[(32, "layer")]["params"] is None


def test_the_exponent_fit_recovers_a_known_slope() -> None:
    lengths = [2**k for k in range(10, 21)]
    assert fit_exponent(lengths, [3.0 * n**1.7 for n in lengths]) == pytest.approx(1.7, abs=1e-9)
    noisy = [0.5 * n**2 * (1 + 0.05 * (-1) ** i) for i, n in enumerate(lengths)]
    assert fit_exponent(lengths, noisy) == pytest.approx(2.0, abs=0.02)
    # Missing (oom) points are left out; one point is no slope.
    assert fit_exponent(lengths[:3], [1.0, None, 4.0]) == pytest.approx(1.0)
    assert fit_exponent([1024, 2048], [5.0, None]) is None


def test_the_report_fits_exponents_per_series_from_time_and_memory_per_sequence() -> None:
    def record(n: int, batch: int, ms: float, peak: int | None, status: str = "complete") -> dict[str, Any]:
        return {"model": "m", "status": status, "metrics": {"scope": "layer", "pass": "fwd", "dtype": "fp32",
                                                           "length": n, "batch_size": batch, "time_ms": ms,
                                                           "peak_bytes": peak}}
    # Tokens held at 4096: a linear layer takes the same time per batch, i.e. time per sequence ~ L.
    recs = [record(n, 4096 // n, 2.0, 1000 * 4096) for n in (256, 512, 1024)] + [record(2048, 2, 0, None, "oom")]
    (key, (time_p, mem_p, n_points)), = tables.exponents(tables.frame(recs)).items()
    assert key == ("m", "layer", "fwd", "fp32")
    assert n_points == 3 and time_p == pytest.approx(1.0) and mem_p == pytest.approx(1.0)


def test_run_ids_are_determined_by_the_point() -> None:
    point = bench.Point("s4", "layer", "fwd", "bf16", 1024, 256)
    config = {"model": {"name": "s4", "d_model": 256, "n_layers": 1, "d_state": 64}}
    rid = bench.point_run_id(point, config, "NVIDIA H100 80GB HBM3")
    assert rid == bench.point_run_id(bench.Point("s4", "layer", "fwd", "bf16", 1024, 256), dict(config),
                                     "NVIDIA H100 80GB HBM3")
    assert rid.startswith("bench-s4-")
    h100 = "NVIDIA H100 80GB HBM3"
    variants = [(point, {"model": {**config["model"], "d_state": 16}}, h100),
                (point, config, "NVIDIA H200"),
                (bench.Point("s4", "block", "fwd", "bf16", 1024, 256), config, h100),
                (bench.Point("s4", "layer", "fwd_bwd", "bf16", 1024, 256), config, h100),
                (bench.Point("s4", "layer", "fwd", "fp32", 1024, 256), config, h100),
                (bench.Point("s4", "layer", "fwd", "bf16", 2048, 256), config, h100),
                (bench.Point("s4", "layer", "fwd", "bf16", 1024, 128), config, h100),
                (bench.Point("s4", "layer", "fwd", "bf16", 1024, 256, bench.PUBLISHED), config, h100),
                (point, {**config, "optim": {"lr": 0.01}}, h100)]
    ids = {bench.point_run_id(*v) for v in variants}
    assert len(ids) == len(variants) and rid not in ids


def test_old_records_keep_their_run_ids() -> None:
    """Our points' ids do not depend on `impl` or other config sections: a rerun overwrites records written
    before they existed (here one of reports/measured/h100-2026-11-23/store)."""
    store = Store(ROOT / "reports" / "measured" / "h100-2026-11-23" / "store")
    rec = store.get("bench-multires-07e219076769")
    assert rec is not None and "impl" not in rec["metrics"]
    m = rec["metrics"]
    point = bench.Point(rec["model"], m["scope"], m["pass"], m["dtype"], m["length"], m["batch_size"])
    assert bench.point_run_id(point, {"model": rec["config"]["model"]}, rec["env"]["device"]) == rec["run_id"]


def test_a_rerun_overwrites_the_same_records(tmp_path: Path) -> None:
    cfg = bench_cfg(tmp_path, lengths=[32], scope=["layer"], passes=["fwd"])
    first = bench.run(cfg).records
    second = bench.run(cfg).records
    assert [r["run_id"] for r in first] == [r["run_id"] for r in second]
    assert len(list((tmp_path / "results" / "store").glob("*.json"))) == 1


def test_python_m_reports_tabulates_the_run_from_its_store(tmp_path: Path) -> None:
    from reports.__main__ import main

    result = bench.run(bench_cfg(tmp_path, lengths=[32, 64], passes=["fwd"], sweep="part"))
    assert main(["--store", str(tmp_path / "results" / "store"), "--out", str(tmp_path / "out"),
                 "--sweep", "part"]) == 0
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    # The time table the run printed, now from the store.
    printed = tables.summary(result).split("\n\n", 1)[1]
    assert printed in text


def test_series_over_the_call_budget_are_skipped_without_records(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    result = bench.run(bench_cfg(tmp_path, lengths=[32, 64, 128], scope=["layer"], passes=["fwd"],
                                 max_call_s=1e-9))
    assert [r["metrics"]["length"] for r in result.records] == [32]  # the first length has no prediction
    assert [(p.length, "bench.max_call_s" in why) for p, why in result.skipped] == [(64, True), (128, True)]
    assert "L=64 B=2: skipped, a call predicted" in capsys.readouterr().out
    assert time_row(result)[5:] == ["skip", "skip", "", ""]  # two skipped lengths; one point fits no exponent


def test_the_call_budget_prediction_is_at_least_linear() -> None:
    assert bench.predicted_call_s([], 2048, 1) is None
    # One point: linear in L per sequence, times the batch.
    assert bench.predicted_call_s([(1024, 2.0)], 2048, 3) == pytest.approx(2 * 2.0 * 3 / 1e3)
    # Quadratic history: per-sequence time x4 per doubling.
    assert bench.predicted_call_s([(1024, 1.0), (2048, 4.0)], 4096, 1) == pytest.approx(16.0 / 1e3)
    # A falling history still predicts linear growth.
    assert bench.predicted_call_s([(1024, 4.0), (2048, 1.0)], 4096, 1) == pytest.approx(2.0 / 1e3)


def test_the_grid_defaults_to_the_device_and_set_options_win(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cpu = BenchConfig().resolved("cpu")
    assert (cpu.lengths, cpu.dtypes, cpu.d_model, cpu.tokens_per_batch) == ([256, 512, 1024, 2048, 4096], ["fp32"],
                                                                            64, 4096)
    gpu = BenchConfig().resolved("cuda")  # the GPU study's grid (sweeps/experiment/bench_scaling.yaml)
    assert (gpu.lengths, gpu.dtypes, gpu.d_model, gpu.tokens_per_batch) == ([2**k for k in range(10, 21)],
                                                                            ["fp32", "bf16"], 256, 2**18)
    mixed = BenchConfig(lengths=[128, 64], d_model=32).resolved("cpu")
    assert (mixed.lengths, mixed.dtypes, mixed.d_model, mixed.tokens_per_batch) == ([64, 128], ["fp32"], 32, 4096)
    # The job prints what it chose; its dry run shows the grid it would time, per model, measuring nothing.
    cfg = compose_run(tmp_path, "job=bench", "bench.device=cpu", "bench.models=[transformer,s4d]", "bench.d_model=32")
    assert bench.options(cfg).lengths == [256, 512, 1024, 2048, 4096]
    assert capsys.readouterr().out == ("seqbench: bench: on cpu: lengths=[256, 512, 1024, 2048, 4096], "
                                       "dtypes=['fp32'], tokens_per_batch=4096 (the defaults for this device; set "
                                       "bench.<option> to choose)\n")
    cfg.dry_run = True
    assert dispatch(cfg) is None
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["model"] for line in lines] == ["transformer", "s4d"]
    assert all(line["defaults_for"] == "cpu" and line["config"]["d_model"] == 32 and line["dtypes"] == ["fp32"]
               and line["batch_sizes"] == [16, 8, 4, 2, 1] for line in lines)
    assert not (tmp_path / "store").exists()


def test_the_sweep_name_stays_under_paths_root(tmp_path: Path) -> None:
    for name in ("../../x", "/abs", "a/b", ".hidden"):
        with pytest.raises(ConfigError, match="must be a plain name"):
            dispatch(compose_run(tmp_path, "job=bench", "bench.device=cpu", f"sweep={name}"))
    assert not list(tmp_path.iterdir())


def test_the_batch_is_fixed_or_holds_tokens_constant() -> None:
    opts = options(lengths=[1024], tokens_per_batch=2**18)
    assert [opts.batch_for(2**k) for k in (10, 18, 20)] == [256, 1, 1]
    assert options(batch_size=8).batch_for(2**20) == 8


def test_options_are_checked_once_when_built() -> None:
    opts = options(lengths=[128, 32, 128], model_overrides=None)
    assert opts.lengths == [32, 128] and opts.overrides("s4") == {}
    for fields, message in [({"warmup": -1}, "bench.warmup"), ({"repeats": 0}, "bench.repeats"),
                            ({"batch_size": 0}, "bench.batch_size"), ({"max_call_s": -1.0}, "bench.max_call_s"),
                            ({"scope": []}, "bench.scope"), ({"model_overrides": {"s4": 4}}, "model_overrides")]:
        with pytest.raises(ConfigError, match=message):
            options(**fields)


@pytest.mark.parametrize(("fields", "message"), [
    ({"scope": ["layers"]}, "bench.scope"),
    ({"passes": ["bwd"]}, "bench.passes"),
    ({"dtypes": ["fp16"]}, "bench.dtypes"),
    ({"lengths": [0, 64]}, "bench.lengths"),
    ({"model_overrides": {"nosuch": {"d_state": 4}}}, "nosuch"),
    ({"model_overrides": {"transformer": {"d_state": 4}}}, "d_state"),
    ({"models": ["nosuch"]}, "nosuch"),
])
def test_bad_bench_options_get_a_clear_error(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bench.run(bench_cfg(tmp_path, **fields))


def test_model_overrides_reach_the_built_model() -> None:
    opts = options(models=["s4", "transformer"], d_model=32, model_overrides={"s4": {"d_state": 8}})
    configs = bench.model_configs(opts)
    assert configs["s4"].d_state == 8 and configs["s4"].d_model == 32 and configs["s4"].n_layers == 1
    assert configs["transformer"].d_model == 32
    block = bench.build_block("s4", configs["s4"], 64, 32, CPU)
    assert isinstance(block.mixer, torch.nn.Module)
    assert block(torch.randn(2, 64, 32), None).shape == (2, 64, 32)


def test_a_model_without_d_model_is_skipped_with_a_message(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import dataclass

    from harness.config import ModelConfig
    from harness.registry import Entry

    @dataclass
    class Fixed(ModelConfig):
        name: str = "fixedwidth"

    MODELS.discover()
    monkeypatch.setitem(MODELS._entries, "fixedwidth", Entry("fixedwidth", Fixed, lambda cfg, spec: None, ""))
    assert list(bench.model_configs(options(models=["fixedwidth", "transformer"]))) == ["transformer"]
    assert "skipping fixedwidth: its config has no d_model" in capsys.readouterr().out


def test_cpu_clock_and_peak_memory_measure_what_happens() -> None:
    times = time_calls(lambda: time.sleep(0.003), CPU, 3)
    assert len(times) == 3 and min(times) >= 3.0
    memory = PeakMemory(CPU)
    assert memory.kind == "cpu_rss_hwm"
    memory.start()
    block = torch.ones(16 * 2**20 // 4)  # 16 MiB, every page written
    del block
    assert memory.stop() >= 15 * 2**20  # freed again, yet the high-water mark saw it
    memory.start()
    assert memory.stop() < 8 * 2**20  # nothing allocated: the mark was reset


def test_every_registered_model_runs_one_point_of_each_kind(tmp_path: Path) -> None:
    result = bench.run(bench_cfg(tmp_path, models=[], lengths=[64], tokens_per_batch=128))
    by_model: dict[str, list[str]] = {}
    for rec in result.records:
        by_model.setdefault(rec["model"], []).append(rec["status"])
    assert set(by_model) == set(MODELS.names())
    assert all(status == ["complete"] * 4 for status in by_model.values()), by_model


@pytest.mark.slow  # run.py as a process, with its report: about 8 s
def test_job_bench_end_to_end_through_run_py(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "job=bench", "bench.models=[transformer]", "bench.lengths=[64,128]",
         "bench.device=cpu", f"bench.d_model={D}", "bench.tokens_per_batch=256", "bench.warmup=1",
         "bench.repeats=2", "bench.dtypes=[fp32]", "++bench.model_overrides={transformer:{n_heads:2}}",
         f"paths.root={tmp_path / 'results'}", "sweep=ci"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    records = list(Store(tmp_path / "results" / "store").records())
    assert len(records) == 2 * 2 * 2
    assert all(r["status"] == "complete" and r["sweep"] == "ci" for r in records)
    assert all(r["config"]["model"]["n_heads"] == 2 and r["config"]["model"]["n_layers"] == 1 for r in records)
    assert "seqbench: bench transformer layer fwd_bwd fp32 L=128 B=2: " in out.stdout and "copy_gbps=" in out.stdout


# ------------------------------------------------------------------------------------------------------------------
# Published code beside ours (sweeps/studies/compare_published.py), on stand-ins written here: the study reads a
# checkout's files by their published paths, so stand-ins with the same names and signatures exercise all of it.

MULTIRES_LAYER = '''
import torch
from torch import nn


class MultiresLayer(nn.Module):  # a stand-in: a depthwise causal convolution on [B, D, L]
    def __init__(self, d_model, kernel_size=None, seq_len=None, tree_select="fading"):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model, padding=kernel_size - 1)

    def forward(self, x):
        return self.conv(x)[..., : x.shape[-1]]
'''

CLASSIFICATION = '''
import torch
from torch import nn
import torchvision.transforms as transforms
from dataloaders.lra import ListOps
from sklearn.metrics import roc_auc_score

from layers.multireslayer import MultiresLayer


class MultiresNet(nn.Module):  # a stand-in with the published signature, on [B, d_input, L]
    def __init__(self, d_input, d_output=10, d_model=256, n_layers=4, dropout=0.2, batchnorm=False, max_length=None,
                 hinit=None, depth=None, tree_select="fading", d_mem=None, kernel_size=2, indep_res_init=False):
        super().__init__()
        self.encoder = nn.Conv1d(d_input, d_model, 1)
        self.layers = nn.ModuleList(MultiresLayer(d_model, kernel_size) for _ in range(n_layers))
        self.out = nn.Linear(d_model, d_output)

    def forward(self, x):
        x = self.encoder(x)
        for layer in self.layers:
            x = x + layer(x)
        return self.out(x.mean(-1))
'''


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What loading published code leaves in this process (its path, its modules, the stand-ins for modules it
    imports but does not use) is gone after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        origin = getattr(getattr(sys.modules[name], "__spec__", None), "origin", None)
        if origin is None or origin.startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.fixture
def checkout(tmp_path: Path, sandbox: None) -> Path:
    """A stand-in checkout of thjashin/multires-conv (outside the repository, as the real one must be)."""
    root = tmp_path / "multires-conv"
    (root / "layers").mkdir(parents=True)
    (root / "layers" / "multireslayer.py").write_text(MULTIRES_LAYER)
    (root / "classification.py").write_text(CLASSIFICATION)
    return root


def test_the_study_records_published_and_our_layers_the_same_way(tmp_path: Path, checkout: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    assert study.main(["--multires-conv", str(checkout), f"paths.root={root}", "bench.device=cpu",
                       "bench.lengths=[32,64]", f"bench.d_model={D}", "bench.tokens_per_batch=128",
                       "bench.warmup=1", "bench.repeats=3"]) == 0
    records = {(r["metrics"]["impl"], r["metrics"]["length"]): r for r in Store(root / "store").records()}
    assert set(records) == {(impl, n) for impl in ("ours", "published") for n in (32, 64)}
    for (impl, _), rec in records.items():
        m = rec["metrics"]
        assert rec["kind"] == "bench" and rec["sweep"] == "compare_published" and rec["model"] == "multires"
        assert rec["status"] == "complete" and (m["scope"], m["pass"], m["dtype"]) == ("layer", "fwd_bwd", "fp32")
        assert len(m["time_ms_all"]) == 3 and m["time_ms"] == statistics.median(m["time_ms_all"])
        # Ours set as the published layer is; the published settings recorded with their source.
        assert rec["config"]["model"]["kernel_size"] == 2
        if impl == "published":
            assert rec["config"]["model"]["source"] == "thjashin/multires-conv layers/multireslayer.py"
            assert rec["params"] == D * 2 + D  # the stand-in's depthwise kernel of 2 taps and its bias
    # The speed-up table, from the records: ours tokens/s over the published ones.
    pairs = tables.speedup_table(tables.frame(records.values())).set_index("L")
    for n in (32, 64):
        speedup = records[("ours", n)]["metrics"]["tokens_per_s"] / records[("published", n)]["metrics"]["tokens_per_s"]
        assert pairs.loc[tables.length_label(n), "speed-up"] == f"{speedup:.2f}×"
    out = capsys.readouterr().out
    assert "published code against ours" in out and "| multires (published) | layer | fwd_bwd | fp32 |" in out
    text = build(root / "store", tmp_path / "report", "compare_published").read_text()
    assert "published code against ours" in text and "| compare_published | multires | layer | fwd_bwd |" in text


def test_the_train_step_study_times_a_preset_s_steps_beside_the_published_step(tmp_path: Path, checkout: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    """sweeps/studies/train_step.py on the CPU: the sCIFAR MultiresNet preset, shrunk, and the published model set
    as the preset says, each an ordinary benchmark record of a whole optimizer step with the study's figures."""
    root = tmp_path / "results"
    small = ["model.d_model=8", "model.n_layers=1", "train.batch_size=2", "bench.device=cpu", "bench.warmup=1",
             "bench.repeats=3", f"paths.root={root}"]
    args = ["--presets", "multires_scifar", "--modes", "eager", "--multires-conv", str(checkout)]
    assert train_step.main([*args, *small]) == 0
    records = {r["metrics"]["impl"]: r for r in Store(root / "store").records()}
    assert set(records) == {"ours", "published"}
    for rec in records.values():
        m = rec["metrics"]
        assert rec["status"] == "complete" and (m["scope"], m["pass"], m["length"], m["batch_size"]) == (
            "model", "train_step", 1024, 2)
        assert rec["config"]["preset"] == "multires_scifar" and rec["config"]["mode"] == "eager"
        assert rec["config"]["optim"]["lr"] == 0.0045 and rec["config"]["optim"]["weight_decay"] == 0.01  # preset's
        assert m["samples_per_s"] == pytest.approx(2 / (m["time_ms"] / 1e3))
        assert m["dispatched_ops"] > 0 and m["gpu_busy"] is None and m["compile_s"] is None  # eager, on a CPU
        assert m["host_ms"] > 0 and "cpu" in rec["env"]  # the host CPU, which sets the pace of a host-bound step
        # 250 epochs of 45,000 training images at the overridden batch of 2, and an evaluation batch each epoch.
        proj = m["projection"]
        assert (proj["steps"], proj["epochs"]) == (250 * 22_500, 250)
        assert proj["hours"] == pytest.approx((proj["steps"] * m["time_ms"] + proj["eval_batches"] * m["eval_ms"])
                                              / 3.6e6)
    assert records["published"]["config"]["model"]["d_model"] == 8  # the preset's model, overridden here
    ours_ms, published_ms = (records[k]["metrics"]["time_ms"] for k in ("ours", "published"))
    assert f"{published_ms / ours_ms:.2f}x" in capsys.readouterr().out  # the speed-up column
    # Another learning rate is another point; the same command again overwrites its points.
    assert train_step.main([*args, *small, "optim.lr=0.01"]) == 0
    assert train_step.main(["optim.lr=0.01", *args, *small]) == 0  # overrides may come before the options too
    assert sorted(r["config"]["optim"]["lr"] for r in Store(root / "store").records()) == [0.0045, 0.0045, 0.01, 0.01]
    # The table tells the two learning rates apart by what each changed from the preset, and compares each of ours
    # with the published step at its own settings.
    rows = {(r["impl"], r["changed from the preset"]): r for r in train_step_rows(Store(root / "store").records())}
    shrunk = "model.d_model=8 model.n_layers=1{} train.batch_size=2".format
    assert set(rows) == {(impl, shrunk(lr)) for impl in ("ours", "published") for lr in ("", " optim.lr=0.01")}
    by_lr = {r["config"]["optim"]["lr"]: r for r in Store(root / "store").records() if r["metrics"]["impl"] == "ours"}
    mine, theirs = by_lr[0.01]["metrics"]["time_ms"], next(
        r["metrics"]["time_ms"] for r in Store(root / "store").records()
        if r["metrics"]["impl"] == "published" and r["config"]["optim"]["lr"] == 0.01)
    assert rows[("ours", shrunk(" optim.lr=0.01"))]["speed-up vs published"] == f"{theirs / mine:.2f}x"
    gone = {**by_lr[0.01], "config": {**by_lr[0.01]["config"], "preset": "renamed_since"}}
    assert train_step_rows([gone])[0]["changed from the preset"] == \
        "(no preset renamed_since in sweeps/experiment/ to compare with)"


@pytest.mark.slow  # compiles a small S4D (about 20 s)
def test_the_train_step_study_trains_eager_and_compiled_alike(tmp_path: Path) -> None:
    """--same-training: a few steps of one training eager and compiled (dropout off, which the preset has on) give
    the same losses up to rounding, beside eager from nudged weights; the table shows both differences."""
    root = tmp_path / "results"
    small = ["model.d_model=8", "model.n_layers=1", "model.d_state=4", "model.dropout=0.1", "train.batch_size=2",
             "task.l_max=256", "task.min_length=100", "task.max_length=250",
             "bench.device=cpu", "bench.warmup=1", "bench.repeats=2", f"paths.root={root}"]
    assert train_step.main(["--presets", "s4d_listops", "--modes", "compiled", "--same-training", "4", *small]) == 0
    (record,) = Store(root / "store").records()
    same = record["metrics"]["same_training"]
    assert record["config"]["mode"] == "compiled" and same["steps"] == 4 and same["mode"] == "compiled"
    assert same["max_rounding"] > 0  # the nudge reached the losses: the yardstick is not zero
    assert same["max_difference"] < 1e-4 * same["loss_eager"]  # within rounding, not within dropout's reach
    assert same["difference"] == abs(same["loss"] - same["loss_eager"])
    text = train_step_table([record])
    assert f"{same['difference']:.1e} ({same['rounding']:.1e}) after 4" in text
    assert "| GPU busy |" not in text and "| ops/step |" not in text  # columns no record fills (a CPU, compiled)


def test_the_costliest_kernels_are_kept_costliest_first_with_long_names_apart() -> None:
    """A record's kernel_top: ordered by cost (not by name), kernels of one template with long names kept apart up to
    160 characters and summed beyond, the total over all kernels."""
    template = "void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl_nocast<" + "x" * 60
    kernels = [("b_fft", 3.0), (template + "<float>", 1.5), (template + "<complex>", 2.0), ("a_fill", 0.5),
               ("b_fft", 1.0), *((f"tiny{i}", 0.01) for i in range(20))]
    total, top = train_step.rank_kernels(kernels)
    assert total == pytest.approx(8.2)
    assert top[:4] == [("b_fft", 4.0), (template + "<complex>", 2.0), (template + "<float>", 1.5), ("a_fill", 0.5)]
    assert len(top) == train_step.KERNELS_KEPT
    long = "k" * 200
    assert train_step.rank_kernels([(long + "1", 1.0), (long + "2", 2.0)]) == (3.0, [("k" * 160, 3.0)])


def test_the_study_needs_published_code(tmp_path: Path, sandbox: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        study.main([f"paths.root={tmp_path}"])
    assert stop.value.code == 2 and "--multires-conv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(["--s4", str(tmp_path / "nowhere"), f"paths.root={tmp_path}", "bench.device=cpu"])
    assert "not found" in capsys.readouterr().err
