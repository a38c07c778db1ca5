"""Time the published layers beside ours, in one process, with the benchmark's own timing.

The published code is never part of this repository: point `--ref` at a directory holding files from
the published repositories (thjashin/multires-conv `layers/multireslayer.py` as `multires/`,
state-spaces/s4 `models/s4/s4.py` (and optionally its built `extensions/kernels`) as `s4/`,
ctlllll/SGConv `gconv_standalone.py` as `sgconv/`). Each layer is timed forward+backward on random
[B, L, D] input with B x L held constant, as `harness.bench` times ours: CUDA events after warm-up,
the median of repeats, peak memory above the baseline, out-of-memory recorded as `oom`.

    python -m harness.compare_published --ref .ref --layers multires_published,multires_direct,multires
    python -m harness.compare_published --ref .ref --train-step     # MultiresNet sCIFAR preset, one AdamW step

`--train-step` times whole optimizer steps (forward, backward, AdamW) of the published sCIFAR MultiresNet
(`classification.py` of thjashin/multires-conv, with `utils.py` and `layers/`, as `multires/`) and of ours built
from `sweeps/experiment/multires_scifar.yaml`, on random batches already on the GPU (data loading excluded).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import statistics
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from harness.bench import bench_spec
from harness.registry import MODELS
from harness.timing import PeakMemory, tf32, time_calls


def _load(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class ChannelsFirst(nn.Module):
    """Calls a layer written for [B, D, L] on [B, L, D] input (the transposes are timed with it)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x.transpose(1, 2))
        out = out[0] if isinstance(out, tuple) else out
        return out.transpose(1, 2)


class TakeFirst(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return out[0] if isinstance(out, tuple) else out


class Ours(nn.Module):
    def __init__(self, name: str, length: int, d_model: int, **overrides: object):
        super().__init__()
        cfg = MODELS.config(name, d_model=d_model, n_layers=1, **overrides)
        self.inner = MODELS.build(cfg, bench_spec(length, d_model)).blocks[0].mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x, None)


def published_multires(ref: Path, length: int, d: int) -> nn.Module:
    sys.modules.setdefault("pywt", __import__("pywt"))
    mod = _load(ref / "multires" / "multireslayer.py", "published_multireslayer")
    return ChannelsFirst(mod.MultiresLayer(d, kernel_size=2, seq_len=length, tree_select="fading"))


def _s4_module(ref: Path) -> types.ModuleType:
    if "pytorch_lightning" not in sys.modules:  # only rank_zero_only is used, for logging
        pl = types.ModuleType("pytorch_lightning")
        utilities = types.ModuleType("pytorch_lightning.utilities")
        utilities.rank_zero_only = lambda f: f  # type: ignore[attr-defined]
        pl.utilities = utilities  # type: ignore[attr-defined]
        sys.modules.update({"pytorch_lightning": pl, "pytorch_lightning.utilities": utilities})
    sys.path.insert(0, str(ref / "s4"))  # extensions/kernels, when built there
    return _load(ref / "s4" / "s4.py", "published_s4")


def published_s4(ref: Path, length: int, d: int, mode: str) -> nn.Module:
    mod = _s4_module(ref)
    layer = mod.FFTConv(d, l_max=length, d_state=64, mode=mode, init="legs" if mode == "nplr" else "diag-lin",
                        activation="gelu", transposed=False)
    return TakeFirst(layer)


def published_sgconv(ref: Path, length: int, d: int) -> nn.Module:
    for name in ("IPython", "omegaconf"):  # imported for names the layer does not use
        sys.modules.setdefault(name, types.SimpleNamespace(embed=None, DictConfig=dict))  # type: ignore[arg-type]
    mod = _load(ref / "sgconv" / "gconv_standalone.py", "published_gconv")
    return TakeFirst(mod.GConv(d, l_max=length, kernel_dim=64, transposed=False, mode="cat_randn",
                               activation="gelu", postact="glu"))


def layer_factory(name: str, ref: Path) -> Callable[[int, int], nn.Module]:
    table: dict[str, Callable[[int, int], nn.Module]] = {
        "multires_published": lambda n, d: published_multires(ref, n, d),
        "multires_direct": lambda n, d: Ours("multires", n, d, impl="direct", kernel_size=2),
        "multires": lambda n, d: Ours("multires", n, d, kernel_size=2),
        "s4_published": lambda n, d: published_s4(ref, n, d, "nplr"),
        "s4d_published": lambda n, d: published_s4(ref, n, d, "diag"),
        "s4": lambda n, d: Ours("s4", n, d, d_state=64),
        "s4d": lambda n, d: Ours("s4d", n, d, d_state=64),
        "sgconv_published": lambda n, d: published_sgconv(ref, n, d),
        "sgconv": lambda n, d: Ours("sgconv", n, d),
    }
    return table[name]


def _time(factory: Callable[[int, int], nn.Module], length: int, d: int, batch: int, device: torch.device,
          dtype: str, repeats: int, warmup: int) -> tuple[float, int | None]:
    """(median ms, peak bytes) of forward+backward; every tensor is freed when it returns."""
    module = factory(length, d).to(device)
    x = torch.randn(batch, length, d, device=device, requires_grad=True)
    grad = torch.randn(batch, length, d, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16" and device.type == "cuda")

    def step() -> None:
        with autocast:
            out = module(x)
        out.backward(grad.to(out.dtype))

    return _timed(step, device, warmup, repeats)


def _timed(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> tuple[float, int | None]:
    """(median ms, peak bytes above the baseline) of `step` after `warmup` calls, TF32 allowed."""
    memory = PeakMemory(device)
    with tf32(device):
        for _ in range(warmup):
            step()
        memory.start()
        times = time_calls(step, device, repeats)
        peak = memory.stop()
    return statistics.median(times), peak


def measure(factory: Callable[[int, int], nn.Module], length: int, d: int, tokens: int, device: torch.device,
            dtype: str, repeats: int, warmup: int) -> dict[str, object]:
    batch = max(1, tokens // length)
    row: dict[str, object] = {"length": length, "batch": batch, "dtype": dtype}
    try:
        median, peak = _time(factory, length, d, batch, device, dtype, repeats, warmup)
        row.update(status="complete", time_ms=median, tokens_per_s=batch * length / median * 1e3, peak_bytes=peak)
    except torch.OutOfMemoryError:
        row.update(status="oom")
    if device.type == "cuda":
        torch.cuda.empty_cache()  # after the exception's frames are gone, so a failed point frees its tensors
    return row


def published_scifar_model(ref: Path) -> nn.Module:
    # Data and metric code the model does not use.
    for name in ("dataloaders.lra", "dataloaders.ptbxl", "torchvision.transforms", "sklearn.metrics"):
        if name.split(".")[0] in ("torchvision", "sklearn") and importlib.util.find_spec(name.split(".")[0]):
            continue
        parent, child = name.split(".")
        stub = types.ModuleType(name)
        stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
        stub.ListOps = stub.PTBXL = stub.roc_auc_score = None  # type: ignore[attr-defined]
        if parent not in sys.modules:
            sys.modules[parent] = types.ModuleType(parent)
            sys.modules[parent].__spec__ = importlib.machinery.ModuleSpec(parent, None)
        setattr(sys.modules[parent], child, stub)
        sys.modules[name] = stub
    sys.path.insert(0, str(ref / "multires"))
    mod = _load(ref / "multires" / "classification.py", "published_classification")
    return mod.MultiresNet(3, d_output=10, d_model=256, n_layers=10, dropout=0.25, max_length=1024, kernel_size=2)


class OursChannelsFirst(nn.Module):
    """Our model fed the published layout [B, 3, L], so both read the same batch."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.transpose(1, 2))


def ours_scifar_model() -> nn.Module:
    import yaml

    from harness.task import TaskSpec

    path = Path(__file__).resolve().parent.parent / "sweeps" / "experiment" / "multires_scifar.yaml"
    preset = yaml.safe_load(path.read_text())
    cfg = MODELS.config("multires", **preset["model"])
    spec = TaskSpec("scifar", "signal", 1024, 10, "accuracy", d_input=3)
    return OursChannelsFirst(MODELS.build(cfg, spec))


def train_steps(model: nn.Module, device: torch.device, precision: str, batch: int, steps: int,
                warmup: int, compile: bool = False) -> dict[str, object]:
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0045, weight_decay=0.01)
    params = sum(p.numel() for p in model.parameters())
    if compile:  # as train.compile=true does in harness/train.py
        model = torch.compile(model)
    x = torch.randn(batch, 3, 1024, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16" and device.type == "cuda")

    def step() -> None:
        with autocast:
            loss = nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    median, peak = _timed(step, device, warmup, steps)
    # The peak above the baseline misses the weights and optimizer state allocated before it: add them.
    held = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    return {"step_ms": median, "samples_per_s": batch / median * 1e3, "peak_bytes": (peak or 0) + held,
            "params": params}


def compare_train_step(ref: Path, device: torch.device, steps: int, warmup: int) -> None:
    rows = [("published fp32/TF32", lambda: published_scifar_model(ref), "fp32", False),
            ("ours fp32/TF32", ours_scifar_model, "fp32", False),
            ("ours bf16 autocast", ours_scifar_model, "bf16", False),
            ("ours fp32/TF32 compiled", ours_scifar_model, "fp32", True)]
    print(f"{'sCIFAR MultiresNet, batch 50':<28}{'ms/step':>10}{'samples/s':>12}{'peak GB':>10}{'params':>12}")
    for label, build, precision, compile in rows:
        torch.manual_seed(0)
        r = train_steps(build(), device, precision, 50, steps, warmup, compile)
        print(f"{label:<28}{r['step_ms']:>10.2f}{r['samples_per_s']:>12.0f}{r['peak_bytes'] / 1e9:>10.2f}"
              f"{r['params']:>12,}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.compare_published")
    parser.add_argument("--ref", type=Path, required=True, help="directory with the published files (see above)")
    parser.add_argument("--layers", default="multires_published,multires_direct,multires")
    parser.add_argument("--lengths", default=",".join(str(2**k) for k in range(10, 21)))
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=2**18)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON lines of every point")
    parser.add_argument("--train-step", action="store_true", help="time sCIFAR MultiresNet optimizer steps instead")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    MODELS.discover()
    if args.train_step:
        compare_train_step(args.ref, device, steps=max(args.repeats, 10), warmup=max(args.warmup, 3))
        return
    lengths = [int(n) for n in args.lengths.split(",")]
    rows = []
    for name in args.layers.split(","):
        factory = layer_factory(name, args.ref)
        for length in lengths:
            row = {"layer": name, **measure(factory, length, args.d_model, args.tokens, device, args.dtype,
                                           args.repeats, args.warmup)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if row["status"] == "oom":
                break  # longer lengths need more memory still
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    names = args.layers.split(",")
    _print_table(rows, names, lengths, f"{'layer':<20}", "   (M tokens/s fwd+bwd, " + args.dtype + ")",
                 lambda r: r["tokens_per_s"] / 1e6)
    _print_table(rows, names, lengths, f"{'peak GB':<20}", "", lambda r: r["peak_bytes"] / 1e9)


def _print_table(rows: list[dict], names: list[str], lengths: list[int], corner: str, title: str,
                 value: Callable[[dict], float]) -> None:
    """One line per layer, one column per length; a point that did not complete shows its status."""
    print("\n" + corner + "".join(f"{n:>10}" for n in lengths) + title)
    for name in names:
        cells = {r["length"]: r for r in rows if r["layer"] == name}
        line = "".join(f"{value(cells[n]):>10.2f}" if cells.get(n, {}).get("status") == "complete"
                       else f"{cells.get(n, {}).get('status', '-'):>10}" for n in lengths)
        print(f"{name:<20}{line}")


if __name__ == "__main__":
    main()
