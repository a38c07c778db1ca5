"""Whole training steps of the paper presets, timed as they run, eager and compiled, with the published step beside.

    python -m sweeps.studies.train_step                                  every ListOps preset and multires_scifar
    python -m sweeps.studies.train_step --presets multires_listops,s4d_listops --modes eager,compiled,graphs
    python -m sweeps.studies.train_step --multires-conv DIR              the published MultiresNet step beside ours
    python -m sweeps.studies.train_step --same-training 200              and the loss of 200 steps, eager and compiled

A step is what `harness.train.train_step` does: forward under the preset's precision, the task's loss, backward,
gradient clipping where the preset clips, AdamW with the preset's parameter groups, the schedule. It runs at the
preset's batch size and full length (`task_spec(cfg).seq_len`) on one random batch already on the device, so no
data loading is timed; every figure is the median over `bench.repeats` steps after `bench.warmup` (the
benchmark's timing loop, harness.timing). Modes: `eager`; `compiled` (`torch.compile`, as `train.compile=true`);
`graphs` (`torch.compile(mode="reduce-overhead")`, CUDA graphs; CUDA only).

Per (preset, mode) one benchmark record (scope `model`, pass `train_step`), whose `metrics` add:
- `samples_per_s`: batch / median step time.
- `gpu_busy`: the kernels' summed time in one step (torch.profiler, CUDA activity) over the median step time,
  measured with CUDA events around each step, so launch gaps count. Near 1: the GPU works all along; far below:
  the step waits for Python and kernel launches. None on a CPU. `kernel_top`: the costliest kernels of that
  profile, ms a step each, to say where the GPU's time goes.
- `host_ms`: the median time a step's call takes to return on the host, synchronized before but not after (on
  CUDA, the time to queue its kernels: harness.timing.host_call_ms). Near `time_ms`, the step waits for Python
  and kernel launches, and its speed is the host CPU's as much as the GPU's (`env.cpu` names it); far under it,
  the GPU bounds the step.
- `compile_s`: the first step's wall time less a step's (compiled modes: what compiling cost).
- `dispatched_ops`: the operators one step dispatches (harness.timing.dispatched_ops: leaf aten operators seen by
  torch.profiler on the host, views and allocations left out), a proxy for kernel launches that needs no GPU.
- `eval_ms`: a forward pass of one evaluation batch (no gradients), for the projection.
- `projection`: the whole published run at this rate: its steps (harness.train.plan of the preset at the data's
  release sizes) times the step, plus its evaluations, in hours.
- `same_training` (compiled modes, with `--same-training STEPS`): the loss after STEPS steps of the same training
  (same initialisation, same batches, dropout off) eager and in this mode, and the yardstick of rounding: eager
  again from weights nudged by one part in 10^6 (`same_training`).

`--multires-conv DIR` (a checkout of thjashin/multires-conv, never copied here) adds the published
`classification.py` MultiresNet for multires_listops and multires_scifar, built as its scripts build it and fed the
same batch in its own layout (`metrics.impl` = published). `python -m reports` renders the records with the
speed-up of each of ours over the published step, and the projections.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from harness import bench, preflight
from harness.config import OptimConfig
from harness.device import autocast_for, set_precision, tf32_allowed
from harness.errors import ConfigError, UserError, exit_with
from harness.optim import lr_factor, make_optimizer
from harness.registry import MODELS, TASKS, compose_config
from harness.task import Batch, TaskSpec
from harness.timing import dispatched_ops, host_call_ms, synchronize, time_after_warmup, wall_call_s
from harness.train import plan
from sweeps.studies.compare_published import load_classification

SWEEP = "train_step"
PRESETS = ("multires_listops", "s4d_listops", "s4_listops", "sgconv_listops", "transformer_lra_listops",
           "wavspa_ada_listops", "multires_scifar")
MODES: dict[str, dict[str, Any] | None] = {"eager": None, "compiled": {}, "graphs": {"mode": "reduce-overhead"}}
PROFILED_STEPS = 3  # steps under torch.profiler for the GPU-busy fraction


# ------------------------------------------------------------------------------------------------------------------
# One step


def random_batch(spec: TaskSpec, batch_size: int, device: torch.device, seed: int) -> Batch:
    """A full-length batch as the task's loader gives it, drawn at random (never zeros)."""
    g = torch.Generator().manual_seed(seed)
    if spec.input == "tokens":
        assert spec.vocab_size is not None
        x = torch.randint(spec.pad_id + 1, spec.vocab_size, (batch_size, spec.seq_len), generator=g)
    else:
        x = torch.randn(batch_size, spec.seq_len, spec.d_input or 1, generator=g)
    if spec.output == "sequence":
        y = torch.randint(0, spec.n_outputs, (batch_size, spec.seq_len), generator=g)
    elif spec.metric == "auroc":
        y = (torch.rand(batch_size, spec.n_outputs, generator=g) < 0.3).long()
    else:
        y = torch.randint(0, spec.n_outputs, (batch_size,), generator=g)
    batch = {"x": x, "y": y, "lengths": torch.full((batch_size,), spec.seq_len)}
    return {k: v.to(device) for k, v in batch.items()}


def task_loss(spec: TaskSpec) -> Callable[[torch.Tensor, Batch], torch.Tensor]:
    """The task's training loss, as its objective computes it (harness.task, tasks/cifar_bpd.py)."""
    if spec.output == "sequence":
        return lambda out, b: nn.functional.cross_entropy(out.float().flatten(0, 1), b["y"].flatten())
    if spec.metric == "auroc":
        return lambda out, b: nn.functional.binary_cross_entropy_with_logits(out.float(), b["y"].float())
    return lambda out, b: nn.functional.cross_entropy(out.float(), b["y"])


@dataclasses.dataclass
class Step:
    """A training step of one model on one batch, as harness.train.train_step runs it."""

    model: nn.Module
    forward: Callable[[Batch], torch.Tensor]  # the model as trained (compiled or not) applied to a batch
    batch: Batch
    loss: Callable[[torch.Tensor, Batch], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: str
    grad_clip: float

    def __call__(self) -> torch.Tensor:
        """One step; its loss (detached, on the device: reading it would synchronise)."""
        with autocast_for(self.batch["x"].device, self.precision):
            out = self.forward(self.batch)
        loss = self.loss(out, self.batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    @torch.no_grad()
    def evaluate(self) -> None:
        self.model.eval()
        with autocast_for(self.batch["x"].device, self.precision):
            self.forward(self.batch)
        self.model.train()


def make_step(model: nn.Module, forward: Callable[[Batch], torch.Tensor], cfg: DictConfig, spec: TaskSpec,
              batch: Batch) -> Step:
    optim: OptimConfig = OmegaConf.to_object(cfg.optim)
    optimizer = make_optimizer(model, optim)
    # A schedule as the run's, so the step includes its cost (its values do not change the time).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, 10**6, 1_000, cfg.train.schedule))
    return Step(model.train(), forward, batch, task_loss(spec), optimizer, scheduler, cfg.train.precision,
                cfg.train.grad_clip)


# ------------------------------------------------------------------------------------------------------------------
# The same training, eager and compiled


def without_dropout(model_cfg: DictConfig) -> DictConfig:
    """The model config with every dropout probability (a float option named *dropout*) at 0."""
    zeros = {k: 0.0 for k, v in model_cfg.items() if "dropout" in str(k) and isinstance(v, float)}
    return OmegaConf.merge(model_cfg, zeros)


def same_training(cfg: DictConfig, spec: TaskSpec, mode: str, steps: int, device: torch.device) -> dict[str, Any]:
    """The loss over `steps` training steps of the preset's model from one initialisation on the same random
    batches (a new one each step), eager and in `mode`, and eager again from the initialisation nudged by one part
    in 10^6 (about eight float32 roundings): how far rounding alone carries the loss over these steps, the
    yardstick for the compiled run's difference. Every dropout is at 0: compiled code draws random numbers in
    another order (Inductor reorders random operators, even with `fallback_random`), so with dropout the runs would
    differ by their masks."""
    model_cfg = without_dropout(cfg.model)

    def train(compiled: bool, nudge: float) -> list[float]:
        torch.manual_seed(cfg.seed)
        model = MODELS.build(model_cfg, spec).to(device)
        if nudge:
            g = torch.Generator().manual_seed(cfg.seed + 1)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1 + nudge * torch.randn(p.shape, generator=g, dtype=p.dtype).to(device))
        net = torch.compile(model, **MODES[mode]) if compiled else model  # type: ignore[arg-type]
        step = make_step(model, lambda b: net(b["x"], lengths=b.get("lengths")), cfg, spec,
                         random_batch(spec, cfg.train.batch_size, device, cfg.seed))
        set_precision(device, cfg.train.precision)
        losses = []
        for i in range(steps):
            step.batch = random_batch(spec, cfg.train.batch_size, device, cfg.seed + i)
            losses.append(step())
        return torch.stack(losses).float().tolist()

    eager, nudged, other = train(False, 0.0), train(False, 1e-6), train(True, 0.0)
    return {"steps": steps, "mode": mode, "loss_eager": eager[-1], "loss": other[-1], "loss_nudged": nudged[-1],
            "difference": abs(other[-1] - eager[-1]), "rounding": abs(nudged[-1] - eager[-1]),
            "max_difference": max(abs(a - b) for a, b in zip(other, eager, strict=True)),
            "max_rounding": max(abs(a - b) for a, b in zip(nudged, eager, strict=True))}


KERNELS_KEPT = 12  # the costliest kernels of a step named in its record: where the GPU's time goes


def kernel_ms(step: Callable[[], Any], device: torch.device, n: int = PROFILED_STEPS,
              ) -> tuple[float | None, list[tuple[str, float]] | None]:
    """The summed time of the kernels one step runs (profiled over n steps), and the KERNELS_KEPT costliest of
    them, costliest first (`rank_kernels`; a list, as a record's JSON keeps its order and a mapping's keys would be
    sorted by name); (None, None) off CUDA."""
    if device.type != "cuda":
        return None, None
    from torch.profiler import ProfilerActivity, profile

    synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        synchronize(device)
    return rank_kernels((e.key, e.self_device_time_total / 1e3 / n) for e in prof.key_averages())


def rank_kernels(kernels: Iterable[tuple[str, float]]) -> tuple[float, list[tuple[str, float]]]:
    """(name, ms a step) of every kernel -> (their sum, the KERNELS_KEPT costliest, costliest first), names cut to
    160 characters and the kernels whose names agree that far summed."""
    per_kernel: dict[str, float] = {}
    for name, ms in kernels:
        per_kernel[name[:160]] = per_kernel.get(name[:160], 0.0) + ms
    ranked = sorted(per_kernel.items(), key=lambda item: item[1], reverse=True)
    return sum(per_kernel.values()), [(name, round(ms, 4)) for name, ms in ranked[:KERNELS_KEPT] if ms > 0]


# ------------------------------------------------------------------------------------------------------------------
# The published run, projected


def release_sizes(cfg: DictConfig) -> dict[str, int] | None:
    """Rows per split of the data the published run trained on, from the task module's `release_sizes(cfg)`; None
    where the task cannot say without its data (e.g. PTB-XL, whose sizes follow the label set)."""
    sizes = getattr(sys.modules[TASKS.get(cfg.task.name).builder.__module__], "release_sizes", None)
    return sizes(TASKS.from_node(cfg.task)) if callable(sizes) else None


def projection(cfg: DictConfig, step_ms: float, eval_ms: float) -> dict[str, Any] | None:
    """The published run's training steps and evaluations at these rates (evaluation: the validation split after
    every epoch, the test split once)."""
    sizes = release_sizes(cfg)
    if sizes is None:
        return None
    the_plan = plan(cfg.train, sizes["train"])
    eval_batch = cfg.train.eval_batch_size or cfg.train.batch_size
    eval_batches = the_plan.epochs * -(-sizes["val"] // eval_batch) + -(-sizes["test"] // eval_batch)
    train_h = the_plan.total_steps * step_ms / 3.6e6
    eval_h = eval_batches * eval_ms / 3.6e6
    return {"steps": the_plan.total_steps, "epochs": the_plan.epochs, "eval_batches": eval_batches,
            "train_hours": train_h, "eval_hours": eval_h, "hours": train_h + eval_h, "sizes": sizes}


# ------------------------------------------------------------------------------------------------------------------
# Ours and published


@dataclasses.dataclass(frozen=True)
class Subject:
    impl: str  # ours | published
    preset: str
    model_config: dict[str, Any]  # recorded with the point, part of its run id
    build: Callable[[], tuple[nn.Module, Callable[[nn.Module, Batch], torch.Tensor]]]  # model, how it reads a batch


def ours(cfg: DictConfig, spec: TaskSpec, preset: str) -> Subject:
    def build() -> tuple[nn.Module, Callable[[nn.Module, Batch], torch.Tensor]]:
        return MODELS.build(cfg.model, spec), lambda m, b: m(b["x"], lengths=b.get("lengths"))

    return Subject(bench.OURS, preset, OmegaConf.to_container(cfg.model), build)


def published_multires(cfg: DictConfig, spec: TaskSpec, preset: str, checkout: Path) -> Subject:
    """thjashin/multires-conv classification.py's MultiresNet, set as the preset (which follows its scripts)."""
    classification = load_classification(checkout)
    m = cfg.model
    args = {"d_input": spec.d_input or 1, "d_output": spec.n_outputs, "max_length": spec.seq_len,
            "d_model": m.d_model, "n_layers": m.n_layers, "dropout": m.dropout, "kernel_size": m.kernel_size,
            "depth": m.depth, "tree_select": m.tree_select, "hinit": m.wavelet_init, "d_mem": m.memory_size,
            "indep_res_init": m.indep_res_init, "batchnorm": m.norm == "batch"}
    if spec.input == "tokens":
        args.update(encoder="embedding", n_tokens=spec.vocab_size)

    def build() -> tuple[nn.Module, Callable[[nn.Module, Batch], torch.Tensor]]:
        model = classification.MultiresNet(**args)
        if spec.input == "tokens":  # token ids [B, L], padded to max_length as its training loop pads them
            return model, lambda mod, b: mod(b["x"])
        return model, lambda mod, b: mod(b["x"].transpose(1, 2))  # channels first, [B, C, L]

    return Subject(bench.PUBLISHED, preset, {"name": "multires", "source": "thjashin/multires-conv classification.py",
                                             **args}, build)


def measure(session: bench.Session, cfg: DictConfig, spec: TaskSpec, subject: Subject, mode: str,
            same_steps: int = 0) -> None:
    precision = cfg.train.precision
    dtype = "bf16" if precision == "bf16" or (precision == "auto" and session.device.type == "cuda") else (
        "tf32" if precision == "tf32" and session.device.type == "cuda" else "fp32")
    point = bench.Point(cfg.model.name, "model", "train_step", dtype, spec.seq_len, cfg.train.batch_size,
                        subject.impl)
    # The code's commit is part of the point: the same preset timed on two versions of the code is two records.
    config = {"model": subject.model_config, "preset": subject.preset, "mode": mode,
              "code": session.env.get("git_commit"),
              "optim": OmegaConf.to_container(cfg.optim), "train": {
                  k: cfg.train[k] for k in ("batch_size", "precision", "grad_clip", "schedule")}}
    torch.manual_seed(cfg.seed)
    model, read = subject.build()
    model.to(session.device)
    params = sum(p.numel() for p in model.parameters())
    same = same_steps if subject.impl == bench.OURS and mode != "eager" else 0
    session.run_point(point, config, partial(time_step, model, read, cfg, spec, mode, session, same), params)
    del model
    bench.release(session.device)


def time_step(model: nn.Module, read: Callable[[nn.Module, Batch], torch.Tensor], cfg: DictConfig, spec: TaskSpec,
              mode: str, session: bench.Session, same_steps: int = 0) -> bench.Outcome:
    """Time the step of `model` in `mode`; the extra figures (module docstring) go into the record's metrics, and
    with `same_steps` the loss of the same training eager and in `mode` (`same_training`)."""
    device, opts = session.device, session.opts
    options = MODES[mode]
    net = model if options is None else torch.compile(model, **options)
    batch = random_batch(spec, cfg.train.batch_size, device, cfg.seed)
    step = make_step(model, partial(read, net), cfg, spec, batch)
    set_precision(device, cfg.train.precision)  # as the trainer sets it; the timing loop keeps it
    ops = dispatched_ops(step) if options is None else None  # compiled: the kernels Inductor calls are not aten's
    first_s = wall_call_s(step, device) if options is not None else None  # compiling happens here
    tf32 = tf32_allowed(device, cfg.train.precision) is not False
    timing = time_after_warmup(step, device, opts.warmup, opts.repeats, session.memory, opts.point_budget_s,
                               allow_tf32=tf32)
    median = timing.median_ms
    busy_ms, top_kernels = kernel_ms(step, device)
    host_ms = statistics.median(host_call_ms(step, device, max(3, opts.repeats // 2)))
    step.evaluate()  # compiles the evaluation graph first, when compiled
    eval_ms = statistics.median(wall_call_s(step.evaluate, device) * 1e3 for _ in range(max(3, opts.repeats // 2)))
    extra = {"samples_per_s": cfg.train.batch_size / (median * 1e-3),
             "gpu_busy": None if busy_ms is None else busy_ms / median, "kernel_ms": busy_ms, "host_ms": host_ms,
             "kernel_top": top_kernels,
             "compile_s": None if first_s is None else max(0.0, first_s - median * 1e-3),
             "dispatched_ops": None if ops is None else sum(ops.values()),
             "dispatched_top": None if ops is None else dict(ops.most_common(8)),
             "eval_ms": eval_ms, "projection": projection(cfg, median, eval_ms),
             "same_training": same_training(cfg, spec, mode, same_steps, device) if same_steps else None}
    # CUDA graphs allocate their memory pool when they capture (in the warm-up), so the rise over the timed steps
    # says nothing of their memory: not recorded.
    peak = None if mode == "graphs" else timing.peak_bytes
    return bench.Outcome("complete", times_ms=timing.times_ms, peak_bytes=peak, warmup=timing.warmup, extra=extra)


def run(presets: list[str], modes: list[str], checkouts: dict[str, Path], overrides: list[str],
        same_steps: int = 0) -> bench.BenchResult:
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"--modes {unknown} not among {', '.join(MODES)}")
    cfgs = {p: compose_config([f"+experiment={p}", "job=bench", f"sweep={SWEEP}", *overrides]) for p in presets}
    first = next(iter(cfgs.values()))
    session = bench.Session(bench.options(first), Path(first.paths.root), first.sweep, first.seed)
    if session.device.type != "cuda" and "graphs" in modes:
        modes = [m for m in modes if m != "graphs"]
        print("seqbench: train_step: CUDA graphs need a GPU; mode graphs left out", flush=True)
    for preset, cfg in cfgs.items():
        spec = preflight.task_spec(cfg)
        subjects = [ours(cfg, spec, preset)]
        if cfg.model.name == "multires" and "multires_conv" in checkouts:
            subjects.insert(0, published_multires(cfg, spec, preset, checkouts["multires_conv"]))
        for subject in subjects:
            for mode in modes if subject.impl == bench.OURS else ["eager"]:  # the published code as it runs
                started = time.perf_counter()
                measure(session, cfg, spec, subject, mode, same_steps)
                print(f"seqbench: train_step {preset} {subject.impl} {mode}: {time.perf_counter() - started:.0f} s",
                      flush=True)
    return session.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.studies.train_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets of sweeps/experiment/")
    parser.add_argument("--modes", default="eager,compiled", help="eager, compiled, graphs (comma-separated)")
    parser.add_argument("--multires-conv", type=Path, dest="multires_conv", help="checkout of thjashin/multires-conv")
    parser.add_argument("--same-training", type=int, default=0, dest="same_steps", metavar="STEPS",
                        help="also train STEPS steps eager and in each other mode and record both losses")
    parser.add_argument("overrides", nargs="*", help="run-config overrides for every preset, e.g. bench.repeats=20")
    args = parser.parse_intermixed_args(argv)  # overrides before, between or after the options
    checkouts = {"multires_conv": args.multires_conv} if args.multires_conv else {}
    try:
        result = run(args.presets.split(","), args.modes.split(","), checkouts, args.overrides, args.same_steps)
    except UserError as exc:
        exit_with(exc)
    from reports.train_step import table

    print("\n" + table(result.records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
