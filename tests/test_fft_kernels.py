"""The Triton kernels of the paired FFT convolution (models/fft_kernels.py), checked on the CPU by Triton's
interpreter: the copy out against the torch copy it replaces (equal bit for bit, fp32 and float64, with and
without a mask), the backward's products against torch's (equal up to rounding), and the whole `fft_conv` through
them against `fft_conv` through torch (the output bit for bit, all three gradients up to rounding). The torch path
itself is checked against the direct convolution and by gradcheck in tests/test_s4.py, so these carry those checks
over.

The interpreter must be chosen before triton is imported, so the checks run in a fresh interpreter
(`python tests/test_fft_kernels.py CHECK` with TRITON_INTERPRET=1)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import run_named_check, run_triton_check


def check_unpack_against_the_torch_copy() -> None:
    from models import fft_kernels
    from models.longconv import _pair_view

    assert fft_kernels.INTERPRETED and fft_kernels.available(torch.zeros(1))
    torch.manual_seed(0)
    # Shapes off the 32 x 32 tiles, n past L, a batch of one pair and of three.
    for B, L, H, n, dtype in [(4, 40, 48, 96, torch.float32), (2, 33, 7, 70, torch.float64),
                              (6, 64, 32, 128, torch.float32)]:
        for masked in (False, True):
            for sign in (1.0, -1.0):
                mask = (torch.rand(B, L) > 0.3) if masked else None
                factor = torch.tensor([1.0, sign], dtype=dtype)
                if mask is not None:
                    factor = _pair_view(mask[..., None]).to(dtype) * factor
                z = torch.randn(B // 2, H, n, 2, dtype=dtype)
                want_y = torch.empty(B, L, H, dtype=dtype)
                torch.mul(z[:, :, :L], factor, out=_pair_view(want_y))
                assert torch.equal(fft_kernels.unpack_pairs(z, L, dtype, sign, mask), want_y), (B, L, H, masked, sign)


def check_fft_conv_through_the_kernels() -> None:
    from models import fft_kernels, longconv

    original, calls = fft_kernels.available, []

    def counted(use: bool):  # the switch, and a record that the kernels' path was taken
        return lambda t: calls.append(use) or use

    torch.manual_seed(1)
    B, L, H = 4, 50, 12
    cases = [  # (kernel, fft_conv keywords, act, masked): every layout the layers use
        (torch.randn(H, 30), {"n": 80, "scaled": True}, "id", False),  # MultiresNet's causal, scaled kernel
        (torch.randn(2, H, L), {"skip": torch.randn(H)}, "gelu", True),  # S4/S4D: bidirectional taps and D
        (torch.randn(1, H, 20), {"skip": torch.randn(H)}, "id", True),  # SGConv-like short causal taps
        (torch.randn(H, 2 * L), {}, "silu", False),  # the circular kernel
    ]
    for kernel, kwargs, act, masked in cases:
        for dtype in (torch.float32, torch.float64):
            x0 = torch.randn(B, L, H, dtype=dtype)
            k0 = kernel.to(dtype)
            mask = (torch.arange(L)[None] < torch.tensor([L, 31, 50, 7])[:, None]) if masked else None
            upstream = torch.randn(B, L, H, dtype=dtype)
            results = []
            for use_triton in (True, False):
                fft_kernels.available = counted(use_triton)
                x, k = x0.clone().requires_grad_(), k0.clone().requires_grad_()
                extra = {key: (v.to(dtype).requires_grad_() if torch.is_tensor(v) else v) for key, v in kwargs.items()}
                y = longconv.fft_conv(x, k, mask, act, paired=True, **extra)
                grads = torch.autograd.grad(y, [x, k, *[v for v in extra.values() if torch.is_tensor(v)]], upstream)
                results.append((y, *grads))
            fft_kernels.available = original
            (y, *grads), (y_torch, *grads_torch) = results
            assert torch.equal(y, y_torch), (tuple(kernel.shape), act, dtype)  # the forward copies only: exact
            for a, b in zip(grads, grads_torch, strict=True):  # grad_products: equal up to rounding
                torch.testing.assert_close(a, b, rtol=1e-12 if dtype == torch.float64 else 1e-5, atol=0)
    # Per case and dtype, the places that choose: the forward's copy out and the backward (its products and copy
    # out); with a fused activation the forward's copy out applies it and stays torch's.
    assert calls.count(True) == calls.count(False) == 2 * (2 + 1 + 2 + 1)


def check_grad_products_against_torch() -> None:
    from models import fft_kernels

    torch.manual_seed(2)
    for P, H, n, dtype in [(25, 3, 700, torch.complex64), (1, 5, 64, torch.complex128), (3, 2, 1030, torch.complex64)]:
        g, w, k = torch.randn(P, H, n, dtype=dtype), torch.randn(P, H, n, dtype=dtype), torch.randn(H, n, dtype=dtype)
        rtol = 1e-12 if dtype == torch.complex128 else 1e-5
        gk, cross = fft_kernels.grad_products(g, w, k, True, True)
        torch.testing.assert_close(gk, g * k, rtol=rtol, atol=0)
        torch.testing.assert_close(cross, (g * w).sum(0), rtol=rtol, atol=1e-6 if dtype == torch.complex64 else 0)
        assert fft_kernels.grad_products(g, w, k, False, True)[0] is None
        only_gk, no_cross = fft_kernels.grad_products(g, w, k, True, False)
        assert no_cross is None and torch.equal(only_gk, gk)


# Each check is a fresh Python under Triton's interpreter: the quick lane keeps the whole convolution, the full suite
# its parts too.
@pytest.mark.parametrize("check", [*(pytest.param(c, marks=pytest.mark.slow) for c in (
                                       "check_unpack_against_the_torch_copy", "check_grad_products_against_torch")),
                                   "check_fft_conv_through_the_kernels"])
def test_triton_kernels_equal_what_torch_computes(check: str) -> None:
    pytest.importorskip("triton", reason="triton comes with torch's Linux wheels; without it the torch copies run")
    run_triton_check(__file__, check)


if __name__ == "__main__":
    run_named_check(globals())
