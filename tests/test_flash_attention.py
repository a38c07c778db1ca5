"""The TF32 flash attention (models/flash_attention.py), checked on the CPU by Triton's interpreter against the
attention written out in torch in float64 (softmax of the scaled scores, the keep mask applied to the weights, then
v): outputs, log-sum-exps and all three gradients, without dropout and with it (the reference rebuilt from the keep
mask the kernels draw), on lengths off the block size; the mask's rate and its independence across heads and
seeds; torch.library's checks of the custom op (schema, fake tensors, autograd, AOT dispatch); a WavSpA layer
through the kernel against the same layer through SDPA; and, without the interpreter, the kernels compiled for an
H100 (sm_90) by Triton, which needs no GPU.

The interpreter must be chosen before triton is imported, so the checks run in a fresh interpreter
(`python tests/test_flash_attention.py CHECK` with TRITON_INTERPRET=1)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import run_named_check, run_triton_check


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None,
              p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, lse) in float64, the weights materialised: the computation the kernels avoid."""
    q, k, v = (t.double() for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    weights = torch.softmax(scores, -1)
    if keep is not None:
        weights = weights * keep.view(weights.shape) / (1 - p)
    return weights @ v, torch.logsumexp(scores, -1)


def check_against_the_attention_written_out() -> None:
    from models import flash_attention as fa

    torch.manual_seed(0)
    for B, H, M, D, block, p in [(2, 1, 50, 16, 16, 0.0), (3, 2, 33, 32, 16, 0.0), (2, 1, 50, 16, 16, 0.25),
                                 (1, 3, 70, 16, 32, 0.1)]:
        q, k, v = (torch.randn(B, H, M, D, requires_grad=True) for _ in range(3))
        assert fa.available(q)
        seed = torch.tensor([1234], dtype=torch.int64)
        keep = fa.keep_mask(seed, B * H, M, p, block) if p > 0 else None
        out, lse = fa._attention(q, k, v, seed, p, block)
        want, want_lse = reference(q, k, v, keep, p)
        torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(lse.double(), want_lse, rtol=1e-5, atol=1e-5)
        g = torch.randn(B, H, M, D)
        grads = torch.autograd.grad(out, (q, k, v), g)
        want_grads = torch.autograd.grad(want, (q, k, v), g.double())  # float32, as q, k, v are
        for name, got, expected in zip("qkv", grads, want_grads, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4, msg=f"d{name} {B, H, M, D, p}")


def check_the_dropout_mask() -> None:
    from models import flash_attention as fa

    p, M = 0.3, 96
    one = fa.keep_mask(torch.tensor([7]), 4, M, p, 32)
    again = fa.keep_mask(torch.tensor([7]), 4, M, p, 32)
    other = fa.keep_mask(torch.tensor([8]), 4, M, p, 32)
    assert torch.equal(one, again)  # the forward and the backward draw the same mask
    n = one.numel()
    rate = one.float().mean().item()
    assert abs(rate - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5, rate  # kept at 1 - p, within 4 standard errors
    # Heads and seeds draw apart, also head 1 of seed 7 and head 0 of seed 8 (a seed + head key would share them).
    for a, b in [(one[0], one[1]), (one[1], one[2]), (one, other), (one[1], other[0])]:
        agree = (a == b).float().mean().item()
        assert abs(agree - (p * p + (1 - p) ** 2)) < 0.05, agree  # as two independent masks agree
    # Through the op: dropout 0 is the attention itself, and the seed drawn from torch's generator repeats with it.
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 1, 40, 16) for _ in range(3))
    torch.testing.assert_close(fa.flash_attention_tf32(q, k, v, 0.0, block=16).double(),
                               reference(q, k, v, None, 0.0)[0], rtol=1e-4, atol=1e-5)
    torch.manual_seed(4)
    first = fa.flash_attention_tf32(q, k, v, 0.5, block=16)
    torch.manual_seed(4)
    assert torch.equal(fa.flash_attention_tf32(q, k, v, 0.5, block=16), first)
    state = torch.get_rng_state()  # and without dropout (evaluation) it draws nothing, as SDPA
    fa.flash_attention_tf32(q, k, v, 0.0, block=16)
    assert torch.equal(torch.get_rng_state(), state)


def check_the_custom_op() -> None:
    from models import flash_attention as fa

    torch.manual_seed(5)
    q, k, v = (torch.randn(2, 1, 20, 16, requires_grad=True) for _ in range(3))
    seed = torch.tensor([11], dtype=torch.int64)
    results = torch.library.opcheck(fa._attention, (q, k, v, seed, 0.2, 16))  # with torch.compile's AOT dispatch
    assert set(results.values()) == {"SUCCESS"}, results


def check_wavspa_through_the_kernel() -> None:
    """A WavSpA layer with model.attention_kernel=flash_tf32 takes the kernel's path and computes what SDPA does."""
    from models import flash_attention as fa
    from models.wavspa import WavSpALayer

    calls = []
    original = fa.flash_attention_tf32
    fa.flash_attention_tf32 = lambda *args, **kw: calls.append(1) or original(*args, **kw)
    torch.manual_seed(6)
    layers = {kernel: WavSpALayer(32, n_heads=2, qkv_dim=32, wlen=4, levels=1, attention_kernel=kernel).eval()
              for kernel in ("sdpa", "flash_tf32")}
    layers["flash_tf32"].load_state_dict(layers["sdpa"].state_dict())
    x = torch.randn(2, 45, 32)
    torch.testing.assert_close(layers["flash_tf32"](x), layers["sdpa"](x), rtol=1e-4, atol=1e-5)
    assert len(calls) == 2  # one call per band
    fa.flash_attention_tf32 = original


def check_the_kernels_compile_for_an_h100() -> None:
    """Triton compiles each kernel for sm_90 (ptxas included) at WavSpA's shapes, with and without dropout, at both
    block sizes: what the interpreter does not check (types, layouts, shared memory) short of a GPU run."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from models import flash_attention as fa

    scalars = {"seed_ptr": "*i64", "scale": "fp32", "p_drop": "fp32"}
    constants = ("M", "D", "BM", "BN", "DROPOUT")
    kernels = {fa._fwd: ("q_ptr", "k_ptr", "v_ptr", "o_ptr", "lse_ptr"),
               fa._bwd_kv: ("q_ptr", "k_ptr", "v_ptr", "do_ptr", "lse_ptr", "delta_ptr", "dk_ptr", "dv_ptr"),
               fa._bwd_q: ("q_ptr", "k_ptr", "v_ptr", "do_ptr", "lse_ptr", "delta_ptr", "dq_ptr")}
    for block in (64, 32):
        for dropout in (False, True):
            for fn, pointers in kernels.items():
                signature = {name: "*fp32" for name in pointers} | scalars | dict.fromkeys(constants, "constexpr")
                values = {"M": 1015, "D": 64, "BM": block, "BN": block, "DROPOUT": dropout}
                compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=values),
                                          target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
                most = 227 * 1024  # the shared memory an H100 block may have
                assert compiled.metadata.shared <= most, (fn.__name__, block, compiled.metadata.shared)


@pytest.mark.slow  # a build check (6 s), not a correctness one
def test_the_kernels_compile_for_an_h100(tmp_path) -> None:
    pytest.importorskip("triton", reason="triton comes with torch's Linux wheels; without it SDPA runs")
    run_triton_check(__file__, "check_the_kernels_compile_for_an_h100", interpret=False,
                     TRITON_CACHE_DIR=str(tmp_path))


# Each check is a fresh Python under Triton's interpreter (4-6 s): the quick lane keeps the first, the full suite all.
@pytest.mark.parametrize("check", ["check_against_the_attention_written_out",
                                   *(pytest.param(c, marks=pytest.mark.slow) for c in (
                                       "check_the_dropout_mask", "check_the_custom_op",
                                       "check_wavspa_through_the_kernel"))])
def test_flash_attention_equals_the_attention_written_out(check: str) -> None:
    pytest.importorskip("triton", reason="triton comes with torch's Linux wheels; without it SDPA runs")
    run_triton_check(__file__, check)


if __name__ == "__main__":
    run_named_check(globals())
