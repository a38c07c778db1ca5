"""Every experiment in sweeps/experiment composes, and its model builds for its task (on fake tensors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig

from harness.preflight import inspect_model
from harness.task import TaskSpec
from tests.helpers import ROOT, compose_run

PTBXL_CLASSES = {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19, "rhythm": 12}


def spec_for(cfg: DictConfig) -> TaskSpec:
    """The spec each task builds from real data, written out here so that no dataset is needed."""
    t = cfg.task
    if t.name == "listops":
        return TaskSpec("listops", "tokens", t.l_max, 10, "accuracy", vocab_size=18, variable_length=True)
    if t.name == "scifar":
        return TaskSpec("scifar", "signal", 1024, 10, "accuracy", d_input=1 if t.grayscale else 3)
    if t.name == "cifar_bpd":
        return TaskSpec("cifar_bpd", "signal", 1024, 100, "bpd", d_input=3, output="sequence", causal=True)
    if t.name == "ptbxl":
        return TaskSpec("ptbxl", "signal", 10 * t.sampling_rate, PTBXL_CLASSES[t.label_set], "auroc", d_input=12)
    if t.name == "speech_commands":
        classes = 35 if getattr(t, "all_classes", False) else 10
        return TaskSpec("speech_commands", "signal", 16000, classes, "accuracy", d_input=1)
    raise AssertionError(f"no spec written for task {t.name}")


PRESETS = sorted(p.stem for p in (ROOT / "sweeps" / "experiment").glob("*.yaml") if p.stem != "bench_scaling")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_and_its_model_builds(tmp_path: Path, name: str) -> None:
    cfg = compose_run(tmp_path, f"+experiment={name}")
    assert cfg.task is not None and cfg.model is not None
    params, memory = inspect_model(cfg, spec_for(cfg))
    assert params > 0 and memory["params_bytes"] == 4 * params


def test_bench_preset_composes(tmp_path: Path) -> None:
    cfg = compose_run(tmp_path, "+experiment=bench_scaling")
    assert cfg.job == "bench" and cfg.bench.lengths[-1] == 2**20
