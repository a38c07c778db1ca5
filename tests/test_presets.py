"""Every experiment in sweeps/experiment composes, and its model, built for the spec its task gives from the config
alone (no dataset), has exactly the published parameter count its header states."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import preflight
from tests.helpers import ROOT, compose_run

EXPERIMENTS = ROOT / "sweeps" / "experiment"
PRESETS = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml") if p.stem != "bench_scaling")


def header(name: str) -> str:
    """The preset's leading comment block as one line of text."""
    lines = []
    for line in (EXPERIMENTS / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def published(name: str) -> int:
    found = re.findall(r"Published(?: code)?: ([\d,]+) parameters", header(name))
    assert len(found) == 1, f"{name}: the header must state its published parameter count once, found {found}"
    return int(found[0].replace(",", ""))


def params(tmp_path: Path, name: str, *overrides: str) -> int:
    cfg = compose_run(tmp_path, f"+experiment={name}", *overrides)
    spec = preflight.task_spec(cfg)  # the task module's task_spec: no data read or generated
    count, memory = preflight.inspect_model(cfg, spec)
    assert memory["params_bytes"] == 4 * count
    return count


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_its_published_parameter_count(tmp_path: Path, name: str) -> None:
    assert params(tmp_path, name) == published(name)
    assert not (tmp_path / "data").exists()


LABEL_SET_COUNTS = dict(re.findall(r"(\w+) (\d[\d,]*\d)",
                                   header("multires_ptbxl").split("by task.label_set:")[1].split("(")[0]))


@pytest.mark.parametrize("label_set", ["all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm"])
def test_ptbxl_preset_counts_per_label_set(tmp_path: Path, label_set: str) -> None:
    expected = int(LABEL_SET_COUNTS[label_set].replace(",", ""))
    assert params(tmp_path, "multires_ptbxl", f"task.label_set={label_set}") == expected


@pytest.mark.parametrize("name", ["transformer_lra_listops", "wavspa_ada_listops", "wavspa_ortho_listops",
                                  "wavspa_lift_listops"])
def test_lra_listops_presets_read_the_data_as_the_lra_pipeline(tmp_path: Path, name: str) -> None:
    cfg = compose_run(tmp_path, f"+experiment={name}")
    assert cfg.task.l_max == 2000 and cfg.task.append_eos is False  # no <eos>, nothing cut to 1,999 tokens


def test_lra_transformer_trains_in_fp32(tmp_path: Path) -> None:
    assert compose_run(tmp_path, "+experiment=transformer_lra_listops").train.precision == "fp32"


def test_composing_and_task_specs_import_no_data_library() -> None:
    """The data libraries are imported where data is read, so composing configs and dry runs stay fast."""
    code = ("import sys; from harness.registry import TASKS; TASKS.discover(); "
            "[sys.modules[TASKS.get(n).builder.__module__].task_spec(TASKS.config(n)) for n in TASKS.names()]; "
            "print(sorted({'pandas', 'wfdb', 'soundfile', 'datasets', 'pyarrow', 'torchaudio'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bench_preset_composes(tmp_path: Path) -> None:
    cfg = compose_run(tmp_path, "+experiment=bench_scaling")
    assert cfg.job == "bench" and cfg.bench.lengths[-1] == 2**20
