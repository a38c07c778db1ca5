"""Faster paths give what the plain ones give: every model family compiled with torch.compile (Inductor, as
`train.compile=true` does) against eager, and AdamW's foreach implementation (harness.optim.make_optimizer)
against its per-parameter loop."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from harness import preflight
from harness.errors import ConfigError
from harness.optim import make_optimizer, param_groups
from harness.preflight import task_spec
from harness.registry import MODELS, compose_config
from models import longconv  # noqa: F401  (the seqbench ops)

# Each family's ListOps preset, shrunk (its options kept: bidirectional, post-BatchNorm, GLU, pooling, ...).
PRESETS = {"s4": "s4_listops", "s4d": "s4d_listops", "sgconv": "sgconv_listops", "wavspa": "wavspa_ada_listops",
           "transformer": "transformer_lra_listops", "multires": "multires_listops"}
SMALL = {"d_model": 16, "n_layers": 2, "d_state": 8, "n_heads": 2, "qkv_dim": 8, "d_ff": 32, "wlen": 4,
         "dropout": 0.0, "attn_dropout": 0.0}  # no dropout: eager and compiled code draw different masks
LENGTH = 32


def tiny_preset_model(family: str) -> tuple[torch.nn.Module, object]:
    preset = PRESETS[family]
    fields = OmegaConf.to_container(compose_config([f"+experiment={preset}"]).model)
    cfg = compose_config([f"+experiment={preset}"] + [f"model.{k}={v}" for k, v in SMALL.items() if k in fields])
    spec = dataclasses.replace(task_spec(cfg), seq_len=LENGTH)
    torch.manual_seed(0)
    return MODELS.build(cfg.model, spec), spec


def forward_backward(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor, call: Callable | None = None,
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output and parameter gradients of model (run as `call`, its compiled form, when given) on a loss."""
    model.zero_grad(set_to_none=True)
    out = (model if call is None else call)(x, lengths=lengths)
    out.square().sum().backward()
    return out.detach(), {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def close(actual: torch.Tensor, expected: torch.Tensor, what: str, floor: float = 0.0) -> None:
    """Inductor fuses the element-wise chains and reorders reductions (norms, softmax, the sums of the backward):
    fp32 rounding of 1e-7 per operation, grown through two layers and the backward to ~1e-5 of a tensor's scale,
    so 1e-4 of it. A wrong graph (a missing term, a dropped gradient) is off by its own size. `floor`: the scale
    below which a tensor is rounding noise in both (a bias gradient that BatchNorm makes zero in exact arithmetic)."""
    scale = max(float(expected.abs().max()), floor)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * scale, msg=lambda m: f"{what}: {m}")


def test_the_fft_convolution_op_passes_opcheck() -> None:
    """The op that keeps the FFT convolution's complex spectrum from the compiler has a schema, a fake (meta)
    implementation and an autograd registration that agree with what it computes (torch.library.opcheck: fake
    tensors and AOT autograd against eager, outputs and gradients), with the examples transformed one by one and
    in pairs."""
    torch.manual_seed(0)
    x, taps, skip = torch.randn(2, 8, 3), torch.randn(2, 3, 8), torch.randn(3)
    mask = torch.arange(8)[None] < torch.tensor([[8], [5]])
    causal = taps[:1, :, :5]
    for args in [(x, taps, skip, mask, 16, "gelu", False, False), (x, causal, None, None, 13, "id", True, False),
                 (x, taps, skip, mask, 16, "silu", False, True), (x, causal, None, mask, 13, "id", True, True)]:
        args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
        results = torch.library.opcheck(torch.ops.seqbench.fft_conv.default, args)
        assert set(results.values()) == {"SUCCESS"}, results


def test_the_kernel_fft_ops_pass_opcheck_and_equal_torchs_complex_ffts() -> None:
    """S4's kernel FFTs under torch.compile (models.s4.rfft_pairs, irfft_pairs: real in, real out) give torch's
    complex FFTs and their gradients (torch's own autograd of torch.fft, float64), for even and odd sizes and an
    input shorter than the FFT; opcheck as above."""
    from models.s4 import irfft_pairs, rfft_pairs

    def torch_rfft(a: torch.Tensor, n: int) -> torch.Tensor:
        return torch.view_as_real(torch.fft.rfft(a, n=n))

    def torch_irfft(a: torch.Tensor, n: int) -> torch.Tensor:
        return torch.fft.irfft(torch.view_as_complex(a), n=n)

    torch.manual_seed(0)
    for m, n in ((5, 8), (8, 8), (7, 9)):
        # not contiguous, as the kernel's sums come under Inductor
        x = torch.randn(2, m, 3, dtype=torch.float64).transpose(1, 2).requires_grad_()
        z = torch.randn(2, n // 2 + 1, 3, 2, dtype=torch.float64).transpose(1, 2).requires_grad_()
        for ours, torchs, arg in ((rfft_pairs, torch_rfft, x), (irfft_pairs, torch_irfft, z)):
            g = torch.randn(torchs(arg, n).shape, dtype=torch.float64)
            torch.testing.assert_close(ours(arg, n), torchs(arg, n), rtol=0, atol=1e-12)
            assert ours(arg, n).is_contiguous()  # as its fake says: Inductor plans its buffers on the fake
            (grad,), (expected,) = (torch.autograd.grad(f(arg, n), arg, g) for f in (ours, torchs))
            torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)
            results = torch.library.opcheck(ours._opoverload, (arg, n))
            assert set(results.values()) == {"SUCCESS"}, results

FAMILIES = sorted(PRESETS)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_complex_tensor_reaches_the_compiler(family: str) -> None:
    """Inductor has no complex code generation (it runs such operators as eager fallbacks, and once crashed on
    them): every tensor of the forward and backward graphs torch.compile hands its backend is real."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    model, spec = tiny_preset_model(family)
    dtypes: set[torch.dtype] = set()

    def record(gm: torch.fx.GraphModule, _: Any) -> Callable:
        dtypes.update(v.dtype for n in gm.graph.nodes for v in torch.utils._pytree.tree_leaves(n.meta.get("val"))
                      if isinstance(v, torch.Tensor))
        return make_boxed_func(gm)

    torch._dynamo.reset()
    x = torch.randint(1, spec.vocab_size, (2, LENGTH))
    call = torch.compile(model, backend=aot_autograd(fw_compiler=record, bw_compiler=record), fullgraph=True)
    forward_backward(model, x, torch.tensor([LENGTH, 19]), call=call)
    assert torch.float32 in dtypes and not any(d.is_complex for d in dtypes), dtypes



@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_model_equals_eager(family: str) -> None:
    """A tiny model of each family in training mode, compiled by Inductor (CPU): outputs and every parameter
    gradient as in eager, on a padded batch (lengths 32 and 19)."""
    model, spec = tiny_preset_model(family)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, spec.vocab_size, (2, LENGTH), generator=g)
    lengths = torch.tensor([LENGTH, 19])
    eager = copy.deepcopy(model)
    torch._dynamo.reset()
    out, grads = forward_backward(model, x, lengths, call=torch.compile(model, fullgraph=True))
    out_ref, grads_ref = forward_backward(eager, x, lengths)
    close(out, out_ref, "output")
    assert grads.keys() == grads_ref.keys()
    floor = 1e-3 * max(float(g.abs().max()) for g in grads_ref.values())
    for name, grad in grads.items():
        close(grad, grads_ref[name], f"gradient of {name}", floor)


def test_foreach_adamw_equals_the_per_parameter_loop() -> None:
    """make_optimizer's foreach AdamW against torch's per-parameter loop (the CPU default before), bit for bit, over
    steps with the preset's parameter groups (S4D: SSM lr 1e-3 without weight decay on A, B; the global lr and
    weight decay elsewhere) and a warm-up schedule, as harness.train steps them."""
    (model, spec), (twin, _) = tiny_preset_model("s4d"), tiny_preset_model("s4d")  # deepcopy would drop p._optim
    cfg = compose_config(["+experiment=s4d_listops"]).optim
    before = copy.deepcopy(model)
    models = {"foreach": model, "loop": twin}
    opts = {"foreach": make_optimizer(models["foreach"], cfg),
            "loop": torch.optim.AdamW(param_groups(models["loop"], cfg), lr=cfg.lr, betas=tuple(cfg.betas),
                                      eps=cfg.eps, foreach=False)}
    assert opts["foreach"].defaults["foreach"] and len(opts["foreach"].param_groups) >= 3
    schedules = {name: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / 5) for name, opt in opts.items()}
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        x = torch.randint(1, spec.vocab_size, (2, LENGTH), generator=g)
        for name in models:
            forward_backward(models[name], x, torch.tensor([LENGTH, 19]))
            opts[name].step()
            schedules[name].step()
    params = zip(models["foreach"].named_parameters(), models["loop"].parameters(), before.parameters(), strict=True)
    for (name, p), q, p0 in params:
        assert torch.equal(p, q), name
        assert not torch.equal(p, p0), f"{name} did not train"


def test_compiling_for_batches_of_many_lengths_is_refused_where_it_cannot_work() -> None:
    """Before any work: a model whose sizes follow the length, on batches of varying length, in either mode; it
    runs once the batches have one length (task.pad_to_max=true). A model that compiles for any length takes them,
    CUDA graphs too (one recorded per length)."""
    base = ["task=listops", "task.n_train=64", "task.min_length=10", "task.max_length=40", "task.l_max=48",
            "train.compile=true"]
    for mode in ("default", "reduce-overhead"):
        with pytest.raises(ConfigError, match=re.escape("model=multires compiles for one input length")):
            preflight.check(compose_config([*base, "model=multires", f"train.compile_mode={mode}"]))
        preflight.check(compose_config([*base, "model=multires", f"train.compile_mode={mode}", "task.pad_to_max=true"]))
        preflight.check(compose_config([*base, "model=s4d", f"train.compile_mode={mode}"]))
