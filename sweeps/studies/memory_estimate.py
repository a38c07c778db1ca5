"""The dry run's memory estimate (`dry_run=memory`) against the memory one training step really takes on a GPU.

    python -m sweeps.studies.memory_estimate s4d_listops multires_scifar ... [--out FILE]

For each preset: the estimate from fake tensors (harness.preflight.inspect_model), then the model built for real
on CUDA with AdamW and a random full-length batch of the preset's batch size (no data: the task's spec comes from
its config), two training steps (the first creates the optimizer state), and the peak memory of the second:
`torch.cuda.max_memory_allocated` above what was allocated before it started (parameters and optimizer state),
in fp32 and under bf16 autocast. Eager mode (a preset's `train.compile` is ignored: compiled kernels keep other
tensors). An out-of-memory step is recorded as `oom`. One JSON line per preset and precision; what it showed:
reports/measured/h200-2026-12-02/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from harness import preflight
from harness.device import autocast_for
from harness.errors import is_oom
from harness.optim import make_optimizer
from harness.registry import MODELS, compose_config
from harness.task import TaskSpec


def preset(name: str) -> DictConfig:
    return compose_config([f"+experiment={name}", "paths.root=/nonexistent/results", "paths.data=/nonexistent/data"])


def random_batch(spec: TaskSpec, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if spec.input == "tokens":
        x = torch.randint(0, spec.vocab_size, (batch_size, spec.seq_len), device=device)
    else:
        x = torch.randn(batch_size, spec.seq_len, spec.d_input, device=device)
    return x, torch.full((batch_size,), spec.seq_len, dtype=torch.long, device=device)


def step_peak(cfg: DictConfig, spec: TaskSpec, precision: str, device: torch.device) -> dict[str, Any]:
    """Peak bytes of the second of two training steps, above what was allocated before it."""
    torch.manual_seed(0)
    model = MODELS.build(cfg.model, spec).to(device).train()
    optimizer = make_optimizer(model, cfg.optim)
    x, lengths = random_batch(spec, cfg.train.batch_size, device)
    try:
        for step in range(2):
            if step == 1:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            optimizer.zero_grad(set_to_none=True)
            with autocast_for(device, precision):
                out = model(x, lengths=lengths)
            out.float().square().mean().backward()  # any scalar: the graph autograd keeps is the forward's
            optimizer.step()
        torch.cuda.synchronize()
        return {"status": "complete", "resident_bytes": before,
                "step_peak_bytes": torch.cuda.max_memory_allocated() - before,
                "peak_bytes": torch.cuda.max_memory_allocated()}
    except RuntimeError as exc:
        if not is_oom(exc):
            raise
        return {"status": "oom", "error": str(exc).splitlines()[0][:200]}
    finally:
        del model, optimizer
        torch.cuda.empty_cache()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="+")
    parser.add_argument("--out", type=Path, help="also write the JSON lines here")
    args = parser.parse_intermixed_args(argv)  # presets before or after --out
    device = torch.device("cuda")
    lines = []
    for name in args.presets:
        cfg = preset(name)
        spec = preflight.task_spec(cfg)
        params, estimate = preflight.inspect_model(cfg, spec, activations=True)
        for precision in ("fp32", "bf16"):
            line = {"preset": name, "precision": precision, "params": params, "batch_size": cfg.train.batch_size,
                    "seq_len": spec.seq_len, "estimate": estimate, "device": torch.cuda.get_device_name(device),
                    "torch": torch.__version__, **step_peak(cfg, spec, precision, device)}
            print(json.dumps(line), flush=True)
            lines.append(line)
    if args.out:
        args.out.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    main(sys.argv[1:])
