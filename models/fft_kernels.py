"""Triton kernels around the transforms of the paired FFT convolution (`models.longconv`, on CUDA).

- `unpack_pairs`: the tiled copy out of the paired FFT buffers [B/2, H, n, 2] into activations [B, L, H]. The
  paired convolution packs examples 2p and 2p+1 as the real and imaginary parts of one complex signal over time,
  so the way out moves time from the last axis to the middle and separates the two examples; torch does that as
  an untiled strided copy. This kernel reads a tile [channels, time, 2] with time contiguous and writes it
  [time, channels] per example with channels contiguous, so both sides are coalesced. Its values are those of the
  torch copy it replaces, bit for bit: one multiplication by the same factor (the sign of the pair's second
  example times the mask), the same rounding into the output dtype.
  The way in stays torch's: a Triton copy in (join the two examples, then permute [time, channels, 2] to
  [channels, time, 2]) ran at half of torch's bandwidth on an H100: 4.7 ms of a 21 ms MultiresNet ListOps step
  (reports/measured/h100-2026-12-06c/).
- `grad_products`: the backward's two products of the incoming gradient's spectrum G, G K (for the input's
  gradient) and sum over pairs of G W (for the kernel's), in one pass over G and W instead of torch's three
  (G * K; G *= W; sum). Equal to torch's up to rounding: the sum runs over the pairs in order.

They run on CUDA, and on the CPU under Triton's interpreter (TRITON_INTERPRET=1 before triton is imported), which
is how the tests check them without a GPU.
"""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton comes with torch's Linux wheels
    triton = None

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK_T, BLOCK_H = 32, 32  # unpack_pairs: a tile of 32 steps x 32 channels x 2 examples, 8 KiB of fp32


def available(x: torch.Tensor) -> bool:
    """Can the kernels run on x's device: CUDA with triton, or any device under the interpreter."""
    return triton is not None and (x.is_cuda or INTERPRETED)


if triton is not None:

    @triton.jit
    def _unpack(z_ptr, mask_ptr, y_ptr, L, H, n, sign, HAS_MASK: tl.constexpr, BT: tl.constexpr,
                BH: tl.constexpr):
        p, t0, h0 = tl.program_id(0).to(tl.int64), tl.program_id(1) * BT, tl.program_id(2) * BH  # 64-bit offsets
        t, h, j = t0 + tl.arange(0, BT), h0 + tl.arange(0, BH), tl.arange(0, 2)
        src = ((p * H + h[:, None, None]) * n + t[None, :, None]) * 2 + j[None, None, :]
        keep = (h[:, None, None] < H) & (t[None, :, None] < L) & (j[None, None, :] < 2)
        a, b = tl.split(tl.load(z_ptr + src, mask=keep, other=0.0))  # [BH, BT] each
        a, b = tl.trans(a), tl.trans(b)  # [BT, BH]
        if HAS_MASK:  # computed in z's dtype, then rounded into y's, as torch's mul with out= does
            kind = z_ptr.dtype.element_ty
            a = a * tl.load(mask_ptr + 2 * p * L + t, mask=t < L, other=0).to(kind)[:, None]
            b = b * (tl.load(mask_ptr + (2 * p + 1) * L + t, mask=t < L, other=0).to(kind) * sign)[:, None]
        else:
            b = b * sign
        inside = (t[:, None] < L) & (h[None, :] < H)
        first = (2 * p * L + t[:, None]) * H + h[None, :]
        tl.store(y_ptr + first, a.to(y_ptr.dtype.element_ty), mask=inside)
        tl.store(y_ptr + first + L * H, b.to(y_ptr.dtype.element_ty), mask=inside)


    # P (pairs of examples) is a compile-time constant, one compiled kernel per batch size: Triton's interpreter,
    # which the tests run, cannot loop to a bound given at run time.
    @triton.jit
    def _grad_products(g_ptr, w_ptr, k_ptr, gk_ptr, cross_ptr, P: tl.constexpr, HN, WANT_GK: tl.constexpr,
                       WANT_CROSS: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # (channel, frequency), flattened
        j = tl.arange(0, 2)
        at = i[:, None] * 2 + j[None, :]  # [BLOCK, 2]: real and imaginary parts, interleaved as in memory
        inside = (i[:, None] < HN) & (j[None, :] < 2)
        kr, ki = tl.split(tl.load(k_ptr + at, mask=inside, other=0.0))
        cr = tl.zeros_like(kr)
        ci = tl.zeros_like(kr)
        for p in range(P):
            gr, gi = tl.split(tl.load(g_ptr + p * HN * 2 + at, mask=inside, other=0.0))
            if WANT_GK:
                tl.store(gk_ptr + p * HN * 2 + at, tl.join(gr * kr - gi * ki, gr * ki + gi * kr), mask=inside)
            if WANT_CROSS:
                wr, wi = tl.split(tl.load(w_ptr + p * HN * 2 + at, mask=inside, other=0.0))
                cr += gr * wr - gi * wi
                ci += gr * wi + gi * wr
        if WANT_CROSS:
            tl.store(cross_ptr + at, tl.join(cr, ci), mask=inside)


GRAD_BLOCK = 512  # (channel, frequency) pairs a program takes through all the pairs of examples


def grad_products(g_f: torch.Tensor, w_f: torch.Tensor, k_f: torch.Tensor, want_gk: bool, want_cross: bool
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """G K [P, H, n] and sum_p G[p] W[p] [H, n] (complex, contiguous) from G, W [P, H, n] and K [H, n]; each None
    where not wanted."""
    P, H, n = g_f.shape
    g, w, k = (torch.view_as_real(t.contiguous()) for t in (g_f, w_f, k_f))
    gk = torch.empty_like(g) if want_gk else None
    cross = torch.empty_like(k) if want_cross else None
    grid = (triton.cdiv(H * n, GRAD_BLOCK),)
    _grad_products[grid](g, w, k, g if gk is None else gk, k if cross is None else cross, P, H * n,
                         WANT_GK=want_gk, WANT_CROSS=want_cross, BLOCK=GRAD_BLOCK)
    return (None if gk is None else torch.view_as_complex(gk),
            None if cross is None else torch.view_as_complex(cross))


def _mask_arg(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The mask as the kernels read it: [B, L] contiguous, bool as uint8 (a pointer to bool is not loadable)."""
    if mask is None:
        return like  # never read (HAS_MASK false)
    mask = mask.contiguous()
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def unpack_pairs(z: torch.Tensor, L: int, dtype: torch.dtype, sign: float, mask: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """[B/2, H, n, 2] (contiguous) -> [B, L, H] in `dtype`: y[2p+j, t] = z[p, :, t, j] * (mask[2p+j, t] * sign^j)
    for t < L."""
    P, H, n, _ = z.shape
    y = torch.empty(2 * P, L, H, dtype=dtype, device=z.device)
    grid = (P, triton.cdiv(L, BLOCK_T), triton.cdiv(H, BLOCK_H))
    _unpack[grid](z, _mask_arg(mask, z), y, L, H, n, sign, HAS_MASK=mask is not None, BT=BLOCK_T, BH=BLOCK_H)
    return y
