"""Optimizer parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from harness.config import OptimConfig
from harness.errors import ConfigError

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def exempt_from_decay(model: nn.Module, rule: str) -> set[str]:
    """Names of the parameters `optim.decay_exempt` exempts from weight decay (see OptimConfig).

    The backbone is the model without its `encoder` and `decoder`: state-spaces/s4 (v4.1 on) hooks only the
    `SequenceModel` between them, so the embedding and the decoder's bias stay decayed.
    """
    if rule == "none":
        return set()
    outside: set[int] = set()
    if rule == "backbone_norms_and_biases":
        for end in (getattr(model, "encoder", None), getattr(model, "decoder", None)):
            if isinstance(end, nn.Module):
                outside |= {id(p) for p in end.parameters()}
    in_norm = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    return {name for name, p in model.named_parameters()
            if (name.endswith("bias") or id(p) in in_norm) and id(p) not in outside}


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """AdamW groups: decay, no decay (`optim.decay_exempt`), and one group per distinct `p._optim`.

    A model declares per-parameter settings by setting `param._optim = {"lr": ..., "weight_decay": ...}`
    (S4's SSM parameters, SGConv's kernel); those override the global values for that parameter, whatever the rule.
    """
    exempt = exempt_from_decay(model, cfg.decay_exempt)
    decay, no_decay, special = [], [], {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hint = getattr(p, "_optim", None)
        if hint:
            special.setdefault(tuple(sorted(hint.items())), []).append(p)
        elif name in exempt:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # A hint overrides only what it names: an unnamed weight decay stays the global one, as in S4's code.
    groups += [{"params": ps, "weight_decay": cfg.weight_decay, **dict(key)} for key, ps in special.items()]
    return [g for g in groups if g["params"]]


# Adam's weight decay is an L2 term in the gradient, as torch.optim.Adam defines it; AdamW's is decoupled.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def optimizer_class(cfg: OptimConfig) -> type[torch.optim.Optimizer]:
    """The class `optim.optimizer` names. Checks use this rather than building one: torch's first optimizer
    imports torch._dynamo (1.5 s), which a dry run does not need; OptimConfig already checks the values."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optim.optimizer must be {' or '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    return OPTIMIZERS[cfg.optimizer]


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer over `param_groups`, in torch's foreach implementation (one multi-tensor operator per step of
    the update instead of one per parameter): torch's default on CUDA, chosen here on every device, where it gives
    the same numbers as the per-parameter loop (tests/test_compile.py)."""
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    return optimizer_class(cfg)(param_groups(model, cfg), lr=cfg.lr, betas=betas, eps=cfg.eps, foreach=True)


def _linear_warmup(step: int, warmup: int) -> float:
    return step / max(1, warmup)


def _cosine(step: int, total: int, warmup: int) -> float:
    """HF's get_cosine_schedule_with_warmup, which the published scripts use. Unclamped as HF's: past `total` the
    cosine goes on, so a run longer than its schedule (S4's Speech Commands: 212,080 steps of a 200,000-step
    schedule) sees its learning rate rise again."""
    if step < warmup:
        return _linear_warmup(step, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _constant(step: int, total: int, warmup: int) -> float:
    return _linear_warmup(step, warmup) if step < warmup else 1.0


def _rsqrt(step: int, total: int, warmup: int) -> float:
    """The LRA codebase's schedule (used by the WavSpA presets): at step 0 the factor is 0 even without warm-up."""
    w = max(1, warmup)
    return min(1.0, step / w) * math.sqrt(w / max(step, w))


SCHEDULES = {"cosine": _cosine, "constant": _constant, "rsqrt": _rsqrt}


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of every group's base lr at optimizer step `step` (0-based), stepped per iteration.

    Linear warm-up from 0 over `warmup` steps, then a half cosine to 0 at `total` (the schedule's length, which
    may differ from the run's: train.schedule_steps), a constant, or an inverse square root decay.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    return SCHEDULES[schedule](step, total, warmup)
