"""Check a run config without training it: every key and value, then its model built, parameters counted, memory
estimated.

    python run.py task=listops model=s4 dry_run=true          one JSON line: run_id, params, memory, status
    python run.py task=listops model=s4 dry_run=memory        the same, with the activation memory estimated

The sweeper checks every point of a sweep this way before launching any (sweeps.sweeper). The model needs the
task's TaskSpec, which each task module computes from the config alone (`task_spec(cfg)`, harness/task.py): a
check never reads, downloads or generates data.
"""

from __future__ import annotations

import json
import sys
import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from harness import loggers, runner
from harness.config import check_param_groups, run_config
from harness.device import autocast_for
from harness.errors import ConfigError, UserError
from harness.identity import run_id
from harness.optim import lr_factor, optimizer_class, param_groups
from harness.registry import MODELS, TASKS
from harness.task import TaskSpec


def check(cfg: DictConfig) -> None:
    """Fail before any work on a config that cannot run: a task and a model chosen, no unknown key, every value in
    range (the config dataclasses' __post_init__), and the names their owners know (schedule, precision, optimizer)."""
    runner.check(cfg)
    run_config(runner.plain_config(cfg))
    TASKS.from_node(cfg.task)
    MODELS.from_node(cfg.model)
    lr_factor(0, 1, 0, cfg.train.schedule)
    autocast_for(torch.device("cpu"), cfg.train.precision)
    optimizer_class(cfg.optim)
    loggers.check_available(cfg.get("logger"))
    if cfg.train.compile:
        check_compilable(cfg, task_spec(cfg))


def check_compilable(cfg: DictConfig, spec: TaskSpec) -> None:
    """torch.compile needs inputs of one shape where the model cannot trace any length. CUDA graphs
    (reduce-overhead) take batches of many lengths wherever the model compiles for any length: torch records one
    graph per distinct batch length and replays it when that length comes again. At the LRA sizes, batches of 50
    padded to their longest example (as the S4 trainer pads them) have about 280 lengths an epoch, 490 over 40
    epochs; the padding, and so BatchNorm's statistics, stay the published ones. Evaluation runs uncompiled."""
    if spec.one_batch_shape:
        return
    if not MODELS.from_node(cfg.model).compiles_any_length:
        raise ConfigError(f"model={cfg.model.name} compiles for one input length (its sizes follow the length), and "
                          f"task={cfg.task.name}'s batches vary in length: pad them to one (task.pad_to_max=true, "
                          f"as the published MultiresNet ListOps run does) or leave train.compile=false")


def task_spec(cfg: DictConfig) -> TaskSpec:
    """The task's spec from its config alone, through its module's `task_spec`."""
    entry = TASKS.get(cfg.task.name)
    module = entry.builder.__module__
    from_config = getattr(sys.modules[module], "task_spec", None)
    if not callable(from_config):
        raise ConfigError(f"task {cfg.task.name!r} cannot be checked without its data: {module} defines no "
                          f"`task_spec(cfg) -> TaskSpec` (harness/task.py says what it computes)")
    return from_config(TASKS.from_node(cfg.task))


class _LiveBytes(TorchDispatchMode):
    """The most bytes of tensors alive at once: each new tensor an operation returns counts until it is freed, i.e.
    until autograd and the code let go of it. The outputs of views, in-place and other aliasing operations (a
    return with alias information in the operator's schema) share memory they were given: not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if any(ret.alias_info is not None for ret in func._schema.returns):
            return out
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                n = t.numel() * t.element_size()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)
        return out


class _FusedAttention(TorchFunctionMode):
    """Attention as a GPU's fused kernels run it: without dropout, whose L x L mask they never store (they draw it
    again in the backward pass) but the CPU's kernel, which the fake tensors run, would."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is F.scaled_dot_product_attention:
            kwargs = {**(kwargs or {}), "dropout_p": 0.0}
        return func(*args, **(kwargs or {}))


def activation_bytes(model: torch.nn.Module, spec: TaskSpec, batch_size: int) -> int:
    """Peak bytes of the tensors alive at once in one fp32 training forward pass of a full-length batch, on fake
    tensors: what autograd keeps for the backward pass plus the forward's transients, attention counted as a
    GPU's fused kernels hold it. Call it inside the FakeTensorMode the model was built in.

    With parameters, gradients and AdamW's state added, it was 0.89 to 1.28 times the peak of one fp32 training
    step measured on an H200, in every preset (reports/measured/h200-2026-12-02). Running the backward pass too
    moved it by under 4%, for up to twice the time, so it is not run."""
    shape = (batch_size, spec.seq_len) if spec.input == "tokens" else (batch_size, spec.seq_len, spec.d_input)
    x = torch.zeros(shape, dtype=torch.long if spec.input == "tokens" else torch.float32)
    lengths = torch.full((batch_size,), spec.seq_len, dtype=torch.long)
    model.train()
    counter = _LiveBytes()
    with _FusedAttention(), counter:
        model(x, lengths=lengths)
    return counter.peak


ESTIMATED = ("activations: the peak of live tensors in an fp32 training forward pass, attention as fused GPU kernels "
             "hold it; with parameters, gradients and AdamW's state, 0.89-1.28x the measured peak of a training "
             "step on an H200")


def _build(cfg: DictConfig, spec: TaskSpec) -> tuple[torch.nn.Module, int]:
    """The model and its parameter count, its optimizer parameter groups made and checked as training makes them."""
    model = MODELS.build(cfg.model, spec)
    groups = param_groups(model, cfg.optim)
    check_param_groups([{"lr": cfg.optim.lr, **group} for group in groups], runner.plain_config(cfg))
    return model, runner.count_params(model)


def _build_fake(cfg: DictConfig, spec: TaskSpec) -> tuple[int, int | None, str | None]:
    """Parameters and activation bytes from the model built and run on fake tensors (shapes without storage)."""
    from torch._subclasses.fake_tensor import FakeTensorMode  # imports torch._dynamo: 1.5 s, so only when asked

    with FakeTensorMode(allow_non_fake_inputs=True):
        model, params = _build(cfg, spec)
        try:
            return params, activation_bytes(model, spec, cfg.train.batch_size), ESTIMATED
        except Exception as exc:  # a data-dependent step (e.g. .item()) cannot run on fake tensors
            return params, None, f"no estimate: {type(exc).__name__}: {str(exc)[:200]}"


def inspect_model(cfg: DictConfig, spec: TaskSpec, activations: bool = True) -> tuple[int, dict[str, Any]]:
    """Parameter count and a training-memory estimate.

    With `activations`, the model is built and run on fake tensors (no memory, little time, but torch's fake
    tensors import its compiler stack, 1.5 s); on the CPU for real when a layer's initialisation needs real
    numbers. Without, it is built on the CPU for real: the parameters, gradients and optimizer state are exact,
    the activations are not estimated (meta tensors would not spare the import either: their ops are torch's
    Python references, which import it too).
    """
    state = 8 if cfg.optim.optimizer in ("adam", "adamw") else 0  # Adam's two moments, fp32
    acts, note, built_on = None, "activations not estimated: dry_run=memory estimates them", "cpu"
    if activations:
        try:
            (params, acts, note), built_on = _build_fake(cfg, spec), "fake"
        except UserError:
            raise
        except Exception:
            params, note = _build(cfg, spec)[1], "no estimate: the model's initialisation needs real numbers"
    else:
        params = _build(cfg, spec)[1]
    memory: dict[str, Any] = {"params_bytes": 4 * params, "grads_bytes": 4 * params, "optimizer_bytes": state * params,
                              "activations_bytes": acts}
    memory["total_bytes"] = None if acts is None else sum(memory.values())  # a sum without activations misleads
    memory.update(batch_size=cfg.train.batch_size, seq_len=spec.seq_len, built_on=built_on)
    if note:
        memory["note"] = note
    return params, memory


def describe(cfg: DictConfig, overrides: Sequence[str] = (), activations: bool = True) -> dict[str, Any]:
    """Check one run config as far as possible without training or data; raises on a config that cannot run.
    `activations`: estimate the activation memory too (see inspect_model)."""
    check(cfg)
    rid = run_id(runner.plain_config(cfg))
    spec = task_spec(cfg)
    params, memory = inspect_model(cfg, spec, activations)
    existing = runner.store_for(cfg).get(rid)
    return {"run_id": rid, "task": cfg.task.name, "model": cfg.model.name, "seed": cfg.seed, "params": params,
            "memory": memory, "status": existing["status"] if existing else None, "overrides": list(overrides)}


def dry_run(cfg: DictConfig) -> None:
    """`python run.py ... dry_run=true` (one run): print the point's JSON line; nothing is trained. The activation
    estimate, and the second and a half its fake tensors take to import, only with `dry_run=memory`; a sweep's
    check has it always (the import is paid once for all points, and each point is then built faster than on
    the CPU)."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    print(json.dumps(describe(cfg, overrides, activations=cfg.dry_run == "memory")), flush=True)
