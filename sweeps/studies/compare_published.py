"""Published code timed beside ours, the same way and into the same store (the method: harness/bench.py).

The published code never enters this repository: pass checkouts of the published repositories, fetched
elsewhere. Each option names one; the models compared are those whose code is given (narrow with bench.models):

    python -m sweeps.studies.compare_published --multires-conv DIR --s4 DIR --sgconv DIR paths.root=results

Layers (default): each model's sequence layer, forward + backward (`bench.scope=[layer]`,
`bench.passes=[fwd_bwd]`, `bench.dtypes=[fp32]` unless overridden), on random [B, L, D] input with B x L held
at `bench.tokens_per_batch`. Ours is the registered model, set as the published layer is:
- multires: thjashin/multires-conv `layers/multireslayer.py` (MultiresLayer, kernel size 2, fading tree).
- s4, s4d: state-spaces/s4 `models/s4/s4.py` (FFTConv, d_state 64; modes nplr with legs init and diag with
  diag-lin init). Its CUDA kernels are used when built in the checkout (`extensions/kernels`).
- sgconv: ctlllll/SGConv `gconv_standalone.py` (GConv, kernel_dim 64, cat_randn, GELU, GLU), ours' defaults.

Whole training steps, the published MultiresNet's beside ours: sweeps/studies/train_step.py.

Every point is an ordinary benchmark record (sweep `compare_published` unless `sweep=` says otherwise) whose
`metrics.impl` is ours or published, so `python -m reports --store <paths.root>/store --out DIR --sweep
compare_published` tabulates published against ours with the speed-up; this script prints those tables too.
Further arguments are run-config overrides, as for `python run.py` (paths.root, sweep, bench.*).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import bench
from harness.errors import ConfigError, UserError, exit_with
from harness.registry import compose_config
from reports.bench import frame, speedup_table, summary
from reports.render import markdown

SWEEP = "compare_published"


# ------------------------------------------------------------------------------------------------------------------
# Loading published code


def load_file(path: Path, name: str) -> types.ModuleType:
    if not path.is_file():
        raise UserError(f"{path} not found: the option names a checkout of the published repository")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        raise UserError(f"{path} imports {exc.name}, which is not installed: pip install {exc.name}") from exc
    return module


def stub(name: str, replace: bool = False, **attrs: Any) -> None:
    """A stand-in module for an import the timed code never uses (data loading, logging, metrics), where that
    module is not installed, or always with `replace` (the real one imports much that is not installed)."""
    if name in sys.modules or (not replace and importlib.util.find_spec(name.partition(".")[0]) is not None):
        return
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        stub(parent, replace)
        setattr(sys.modules[parent], child, module)


def load_s4(checkout: Path) -> types.ModuleType:
    stub("pytorch_lightning.utilities", rank_zero_only=lambda f: f)  # used only to log from rank 0
    sys.path.insert(0, str(checkout))  # extensions/kernels, when built there
    return load_file(checkout / "models" / "s4" / "s4.py", "published_s4")


def load_sgconv(checkout: Path) -> types.ModuleType:
    stub("IPython", embed=None)  # imported for a debugging hook
    return load_file(checkout / "gconv_standalone.py", "published_gconv")


def load_classification(checkout: Path) -> types.ModuleType:
    """classification.py of thjashin/multires-conv, without the data and metric code its model does not use."""
    stub("dataloaders.lra", replace=True, ListOps=None)
    stub("dataloaders.ptbxl", replace=True, PTBXL=None)
    stub("torchvision.transforms")
    stub("sklearn.metrics", roc_auc_score=None)
    sys.path.insert(0, str(checkout))  # its layers/ and utils.py
    return load_file(checkout / "classification.py", "published_classification")


class PublishedLayer(nn.Module):
    """A published layer behind our layers' interface: `layer(x, None)` maps [B, L, D] to [B, L, D] (the
    transposes of a channels-first layer are timed with it). Timed as a layer only: it is its own `mixer`."""

    def __init__(self, layer: nn.Module, channels_first: bool):
        super().__init__()
        self.layer, self.channels_first = layer, channels_first

    @property
    def mixer(self) -> nn.Module:
        return self

    def forward(self, x: torch.Tensor, state: object = None) -> torch.Tensor:
        out = self.layer(x.transpose(1, 2) if self.channels_first else x)
        out = out[0] if isinstance(out, tuple) else out  # (y, state)
        return out.transpose(1, 2) if self.channels_first else out


@dataclass(frozen=True)
class Published:
    """One published layer: its code, how it is built (`cls(d_model, <length_arg>=L, **settings)`, recorded),
    and the settings that make ours the same layer."""

    repo: str  # the option that names its checkout
    source: str  # GitHub repository and file
    load: Callable[[Path], types.ModuleType]
    cls: str
    length_arg: str
    channels_first: bool
    settings: dict[str, Any]
    ours: dict[str, Any]

    def build(self, module: types.ModuleType, length: int, d_model: int) -> nn.Module:
        layer = getattr(module, self.cls)(d_model, **{self.length_arg: length}, **self.settings)
        return PublishedLayer(layer, self.channels_first)


S4 = ("s4", "state-spaces/s4 models/s4/s4.py", load_s4, "FFTConv", "l_max", False)
LAYERS = {
    "multires": Published("multires_conv", "thjashin/multires-conv layers/multireslayer.py",
                          lambda c: load_file(c / "layers" / "multireslayer.py", "published_multireslayer"),
                          "MultiresLayer", "seq_len", True, {"kernel_size": 2, "tree_select": "fading"},
                          {"kernel_size": 2}),
    "s4": Published(*S4, {"d_state": 64, "mode": "nplr", "init": "legs", "activation": "gelu", "transposed": False},
                    {"d_state": 64}),
    "s4d": Published(*S4, {"d_state": 64, "mode": "diag", "init": "diag-lin", "activation": "gelu",
                           "transposed": False}, {"d_state": 64}),
    "sgconv": Published("sgconv", "ctlllll/SGConv gconv_standalone.py", load_sgconv, "GConv", "l_max", False,
                        {"kernel_dim": 64, "mode": "cat_randn", "activation": "gelu", "postact": "glu",
                         "transposed": False}, {}),
}


# ------------------------------------------------------------------------------------------------------------------
# The two comparisons


def published_subject(model: str, module: types.ModuleType, d_model: int) -> bench.Subject:
    p = LAYERS[model]
    config = {"name": model, "source": p.source, "d_model": d_model, **p.settings}
    return bench.Subject(model, bench.PUBLISHED, config,
                         lambda length, device: p.build(module, length, d_model).to(device))


def compare_layers(checkouts: dict[str, Path], overrides: list[str]) -> bench.BenchResult:
    names = [m for m, p in LAYERS.items() if p.repo in checkouts]
    cfg = compose_config(["job=bench", f"sweep={SWEEP}", "bench.scope=[layer]", "bench.passes=[fwd_bwd]",
                       "bench.dtypes=[fp32]", f"bench.models=[{','.join(names)}]", *overrides])
    opts = bench.options(cfg)
    if opts.scope != ["layer"]:
        raise ConfigError("bench.scope must be [layer]: published code is timed as a sequence layer only")
    unknown = sorted(set(opts.models) - set(names))
    if unknown:
        raise ConfigError(f"bench.models {unknown} have no published code given; options: "
                          + ", ".join(f"--{p.repo.replace('_', '-')} (for {m})" for m, p in LAYERS.items()))
    # Ours set as the published layer is; the user's model_overrides come on top.
    opts = dataclasses.replace(opts, model_overrides={m: {**LAYERS[m].ours, **opts.overrides(m)} for m in opts.models})
    # Loaded before anything is measured, so that a missing dependency stops the study at once.
    published = {m: published_subject(m, LAYERS[m].load(checkouts[LAYERS[m].repo]), opts.d_model) for m in opts.models}
    subjects = bench.ours(opts)
    session = bench.Session(opts, Path(cfg.paths.root), cfg.sweep, cfg.seed)
    for ours in subjects:
        session.measure(published[ours.model])
        session.measure(ours)
    return session.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.studies.compare_published",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for repo in sorted({p.repo for p in LAYERS.values()}):
        parser.add_argument(f"--{repo.replace('_', '-')}", type=Path, dest=repo, help="checkout of the repository")
    parser.add_argument("overrides", nargs="*", help="run-config overrides, e.g. bench.lengths=[1024,2048]")
    args = parser.parse_intermixed_args(argv)  # overrides before, between or after the options
    checkouts = {repo: getattr(args, repo) for repo in {p.repo for p in LAYERS.values()} if getattr(args, repo)}
    try:
        if not checkouts:
            raise UserError("name at least one checkout of published code: --multires-conv, --s4 or --sgconv")
        else:
            result = compare_layers(checkouts, args.overrides)
    except UserError as exc:
        exit_with(exc)
    else:
        print("\n" + summary(result))
        pairs = speedup_table(frame(result.records))
        if not pairs.empty:
            print("published code against ours:\n\n" + markdown(pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
