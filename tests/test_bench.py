"""The scaling benchmark on CPU: timing, memory, counts, records, OOM handling, exponent fit, the CLI.

Speed is never asserted here (only that a clock measures at least a known sleep); the GPU study is run by
hand with the preset sweeps/experiment/bench_scaling.yaml.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from harness import bench
from harness.config import RunConfig
from harness.registry import MODELS
from harness.results import Store
from harness.timing import PeakMemory, fit_exponent, time_calls

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
D = 16


def bench_cfg(tmp_path: Path, **fields: Any) -> Any:
    """A run config for job=bench on CPU with tiny sizes; `fields` set bench.* (also ones BenchConfig lacks)."""
    cfg = OmegaConf.structured(RunConfig)
    cfg.job = "bench"
    cfg.paths.root = str(tmp_path / "results")
    sweep = fields.pop("sweep", "default")
    cfg.sweep = sweep
    values = {"models": ["transformer"], "lengths": [32, 64], "device": "cpu", "d_model": D,
              "tokens_per_batch": 128, "warmup": 1, "repeats": 3, "dtypes": ["fp32"], **fields}
    with open_dict(cfg.bench):
        for key, value in values.items():
            cfg.bench[key] = value
    return cfg


def transformer_attention_params(d: int) -> int:
    return 4 * d * d + 4 * d  # fused q/k/v (3 d x d + 3 d) and the output projection (d x d + d)


def test_a_cpu_sweep_writes_one_record_per_point_with_the_agreed_fields(tmp_path: Path) -> None:
    result = bench.run(bench_cfg(tmp_path, dtypes=["fp32", "bf16"]))
    records = result.records
    assert len(records) == 2 * 2 * 2 * 2  # lengths x scopes x passes x dtypes
    assert {(r["metrics"]["scope"], r["metrics"]["pass"], r["metrics"]["dtype"], r["metrics"]["length"])
            for r in records} == {(s, p, d, n) for s in bench.SCOPES for p in bench.PASSES for d in bench.DTYPES
                                  for n in (32, 64)}
    stored = {r["run_id"]: r for r in Store(tmp_path / "results" / "store").records()}
    assert set(stored) == {r["run_id"] for r in records}
    for rec in stored.values():
        m = rec["metrics"]
        assert rec["kind"] == "bench" and rec["task"] is None and rec["model"] == "transformer"
        assert rec["status"] == "complete" and rec["error"] is None
        assert rec["env"]["torch"] == torch.__version__
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
    assert result.report is not None and result.report.exists()
    text = result.report.read_text()
    assert "| transformer | block | fwd_bwd | bf16 |" in text and "p_time" in text
    assert "| transformer | layer | fwd | fp32 | 32 | 4 | complete |" in text


def test_an_out_of_memory_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def fault(point: bench.Point) -> None:
        if point.length == 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 EiB (injected)")
        if point.length == 128 and point.pass_ == "fwd_bwd":
            raise ValueError("an injected bug")

    result = bench.run(bench_cfg(tmp_path, lengths=[32, 64, 128], scope=["layer"]), fault=fault)
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
    assert "| transformer | layer | fwd | fp32 | " in out and "oom" in out and "fail" in out


def test_a_model_that_cannot_be_built_at_a_length_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = bench.build_block

    def build(name: str, cfg: Any, length: int, d_model: int, device: torch.device) -> torch.nn.Module:
        if length == 32:
            raise torch.OutOfMemoryError("CUDA out of memory (injected at build)")
        return real(name, cfg, length, d_model, device)

    monkeypatch.setattr(bench, "build_block", build)
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


def test_the_sweep_fits_exponents_per_series_from_time_and_memory_per_sequence() -> None:
    def record(n: int, batch: int, ms: float, peak: int | None, status: str = "complete") -> dict[str, Any]:
        return {"model": "m", "status": status, "metrics": {"scope": "layer", "pass": "fwd", "dtype": "fp32",
                                                           "length": n, "batch_size": batch, "time_ms": ms,
                                                           "peak_bytes": peak}}
    # Tokens held at 4096: a linear layer takes the same time per batch, i.e. time per sequence ~ L.
    recs = [record(n, 4096 // n, 2.0, 1000 * 4096) for n in (256, 512, 1024)] + [record(2048, 2, 0, None, "oom")]
    (time_p, mem_p, n_points), = bench.exponents(recs).values()
    assert n_points == 3 and time_p == pytest.approx(1.0) and mem_p == pytest.approx(1.0)


def test_run_ids_are_determined_by_the_point() -> None:
    point = bench.Point("s4", "layer", "fwd", "bf16", 1024, 256)
    config = {"name": "s4", "d_model": 256, "n_layers": 1, "d_state": 64}
    rid = bench.point_run_id(point, config, "NVIDIA H100 80GB HBM3")
    assert rid == bench.point_run_id(bench.Point("s4", "layer", "fwd", "bf16", 1024, 256), dict(config),
                                     "NVIDIA H100 80GB HBM3")
    assert rid.startswith("bench-s4-")
    variants = [(point, {**config, "d_state": 16}, "NVIDIA H100 80GB HBM3"),
                (point, config, "NVIDIA H200"),
                (bench.Point("s4", "block", "fwd", "bf16", 1024, 256), config, "NVIDIA H100 80GB HBM3"),
                (bench.Point("s4", "layer", "fwd_bwd", "bf16", 1024, 256), config, "NVIDIA H100 80GB HBM3"),
                (bench.Point("s4", "layer", "fwd", "fp32", 1024, 256), config, "NVIDIA H100 80GB HBM3"),
                (bench.Point("s4", "layer", "fwd", "bf16", 2048, 256), config, "NVIDIA H100 80GB HBM3"),
                (bench.Point("s4", "layer", "fwd", "bf16", 1024, 128), config, "NVIDIA H100 80GB HBM3")]
    ids = {bench.point_run_id(*v) for v in variants}
    assert len(ids) == len(variants) and rid not in ids


def test_a_rerun_overwrites_the_same_records(tmp_path: Path) -> None:
    cfg = bench_cfg(tmp_path, lengths=[32], scope=["layer"], passes=["fwd"])
    first = bench.run(cfg).records
    second = bench.run(cfg).records
    assert [r["run_id"] for r in first] == [r["run_id"] for r in second]
    assert len(list((tmp_path / "results" / "store").glob("*.json"))) == 1


def test_the_report_can_be_rebuilt_from_the_store(tmp_path: Path) -> None:
    result = bench.run(bench_cfg(tmp_path, lengths=[32, 64], passes=["fwd"], sweep="part"))
    assert result.report is not None
    original = result.report.read_text()
    result.report.unlink()
    assert bench.rebuild_reports(tmp_path / "results", "part") == [result.report]
    rebuilt = result.report.read_text()
    # The same tables (the header's timestamp differs).
    assert original.split("## Time per call")[1] == rebuilt.split("## Time per call")[1]


def test_series_over_the_call_budget_are_skipped_without_records(tmp_path: Path) -> None:
    result = bench.run(bench_cfg(tmp_path, lengths=[32, 64, 128], scope=["layer"], passes=["fwd"],
                                 max_call_s=1e-9))
    assert [r["metrics"]["length"] for r in result.records] == [32]  # the first length has no prediction
    assert [(p.length, "bench.max_call_s" in why) for p, why in result.skipped] == [(64, True), (128, True)]
    row = next(line for line in result.table.splitlines() if line.startswith("| transformer"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    assert cells[5:] == ["skip", "skip", "", ""]  # two skipped lengths; one point fits no exponent


def test_the_call_budget_prediction_is_at_least_linear() -> None:
    assert bench.predicted_call_s([], 2048, 1) is None
    # One point: linear in L per sequence, times the batch.
    assert bench.predicted_call_s([(1024, 2.0)], 2048, 3) == pytest.approx(2 * 2.0 * 3 / 1e3)
    # Quadratic history: per-sequence time x4 per doubling.
    assert bench.predicted_call_s([(1024, 1.0), (2048, 4.0)], 4096, 1) == pytest.approx(16.0 / 1e3)
    # A falling history still predicts linear growth.
    assert bench.predicted_call_s([(1024, 4.0), (2048, 1.0)], 4096, 1) == pytest.approx(2.0 / 1e3)


def test_the_batch_is_fixed_or_holds_tokens_constant() -> None:
    opts = bench.Options.from_config({"scope": ["layer"], "lengths": [1024], "passes": ["fwd"], "dtypes": ["fp32"],
                                      "tokens_per_batch": 2**18})
    assert [opts.batch_for(2**k) for k in (10, 18, 20)] == [256, 1, 1]
    opts.batch_size = 8
    assert opts.batch_for(2**20) == 8


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
    with pytest.raises(bench.ConfigError, match=message):
        bench.run(bench_cfg(tmp_path, **fields))


def test_model_overrides_reach_the_built_model() -> None:
    opts = bench.Options.from_config({"models": ["s4", "transformer"], "scope": ["layer"], "lengths": [64],
                                      "passes": ["fwd"], "dtypes": ["fp32"], "d_model": 32,
                                      "model_overrides": {"s4": {"d_state": 8}}})
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
    opts = bench.Options.from_config({"models": ["fixedwidth", "transformer"], "scope": ["layer"], "lengths": [64],
                                      "passes": ["fwd"], "dtypes": ["fp32"]})
    assert list(bench.model_configs(opts)) == ["transformer"]
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
    reports = list((tmp_path / "results" / "reports" / "bench").glob("ci-*.md"))
    assert len(reports) == 1
    assert "| transformer | layer | fwd_bwd | fp32 |" in out.stdout and "ceilings: copy" in out.stdout
