"""Softmax attention in one pass over the keys (flash attention), fp32 in memory, TF32 in the products, with
dropout on the weights: the precision the published JAX models get on a GPU (fp32 matmuls at JAX's default
precision run in TF32), without materialising the [M, M] weights.

Why: at train.precision=tf32 an fp32 `F.scaled_dot_product_attention` takes the memory-efficient kernel, which
emulates full fp32 products; flash attention proper takes only fp16/bf16. WavSpA on ListOps attends over two bands
of 1,015 per layer at batch 400, and its step is GPU-bound (reports/measured/h100-2026-12-06/).

The maths (per batch and head, q, k, v [M, d], scale s = d^-1/2, dropout p with keep mask Z):
    S = s q k^T,  P = softmax(S) by rows,  O = (Z / (1 - p) * P) v,  lse = log sum_j exp(S_ij)
forward: one program per block of queries walks the key blocks with the running maximum and sum (online
softmax); backward (FlashAttention-2's split, no atomics, so deterministic): with D_i = dO_i . O_i (rows),
dP~ = dO v^T, dP = Z / (1 - p) * dP~, dS = P * (dP - D), one program per key block accumulates
dV = (Z / (1 - p) * P)^T dO and dK = s dS^T q, one per query block dQ = s dS k. The keep mask is drawn twice from the
same Philox counters (the call's seed; query * M + key and the batch-and-head index), never stored.

The kernels run on CUDA, and on the CPU under Triton's interpreter (TRITON_INTERPRET=1 before triton is imported),
which is how the tests check them against the attention written out in torch.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton comes with torch's Linux wheels
    triton = None

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# The length M is a compile-time constant (Triton's interpreter, which the tests run, cannot loop to a bound given
# at run time): one compiled kernel per band length, which WavSpA keeps fixed by padding every batch to the task's.
BLOCK = 64  # queries and keys per block: three fp32 [64, 64] tiles (q, k, v at head width 64) fit in shared memory


def available(q: Tensor) -> bool:
    """Can the kernels take q: a GPU with TF32 (Ampere or later) and triton, or the interpreter; fp32; a head width
    tl.dot takes."""
    d = q.shape[-1]
    device_ok = INTERPRETED or (q.is_cuda and torch.cuda.get_device_capability(q.device)[0] >= 8)
    return (triton is not None and device_ok and q.dtype == torch.float32 and 16 <= d <= 128
            and d & (d - 1) == 0)


if triton is not None:

    @triton.jit
    def _keep(seed, bh, offs_m, offs_n, M, p_drop):
        """The dropout keep mask of a [BM, BN] tile: one Philox draw per (query, key) of this batch and head, the
        call's seed the key and (query * M + key, batch * heads + head) the counter, so that no two calls or heads
        share a draw (`tl.rand` takes one counter word, and seed + head would let two calls' seeds overlap)."""
        c0 = offs_m[:, None] * M + offs_n[None, :]
        c1 = tl.zeros_like(c0) + bh.to(tl.int32)
        zero = tl.zeros_like(c0)
        bits, _, _, _ = tl.random.philox(seed, c0, c1, zero, zero)
        return tl.random.uint_to_uniform_float(bits) >= p_drop

    @triton.jit
    def _tiles(a_ptr, b_ptr, base, offs, offs_d, M, D: tl.constexpr):
        """Two [rows, D] tiles (q and dO, or k and v) of one batch and head, zero past the length."""
        at = base + offs[:, None] * D + offs_d[None, :]
        return (tl.load(a_ptr + at, mask=offs[:, None] < M, other=0.0),
                tl.load(b_ptr + at, mask=offs[:, None] < M, other=0.0))

    @triton.jit
    def _row_stats(lse_ptr, delta_ptr, bh, offs_m, M):
        """The forward's log-sum-exp and the backward's D of a block of queries."""
        at = bh * M + offs_m
        return (tl.load(lse_ptr + at, mask=offs_m < M, other=0.0),
                tl.load(delta_ptr + at, mask=offs_m < M, other=0.0))

    @triton.jit
    def _fwd(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, seed_ptr, scale, p_drop, M: tl.constexpr,
             D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DROPOUT: tl.constexpr):
        bh = tl.program_id(1).to(tl.int64)
        offs_m = tl.program_id(0) * BM + tl.arange(0, BM)
        offs_d = tl.arange(0, D)
        base = bh * M * D
        q = tl.load(q_ptr + base + offs_m[:, None] * D + offs_d[None, :], mask=offs_m[:, None] < M, other=0.0)
        m_i = tl.full([BM], float("-inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        acc = tl.zeros([BM, D], tl.float32)
        seed = tl.load(seed_ptr)
        for start_n in range(0, M, BN):
            offs_n = start_n + tl.arange(0, BN)
            k, v = _tiles(k_ptr, v_ptr, base, offs_n, offs_d, M, D)
            s = tl.dot(q, tl.trans(k), input_precision="tf32") * scale
            s = tl.where(offs_n[None, :] < M, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            if DROPOUT:
                p = tl.where(_keep(seed, bh, offs_m, offs_n, M, p_drop), p / (1.0 - p_drop), 0.0)
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="tf32")
            m_i = m_new
        rows = offs_m < M
        tl.store(o_ptr + base + offs_m[:, None] * D + offs_d[None, :], acc / l_i[:, None], mask=rows[:, None])
        tl.store(lse_ptr + bh * M + offs_m, m_i + tl.log(l_i), mask=rows)

    @triton.jit
    def _tile_grads(q, k, v, do, lse, delta, offs_m, offs_n, M, seed, bh, scale, p_drop, DROPOUT: tl.constexpr):
        """For one [BM, BN] tile: the (dropped) weights P~ for dV and dS for dQ and dK, both zero off the tile."""
        s = tl.dot(q, tl.trans(k), input_precision="tf32") * scale
        inside = (offs_m[:, None] < M) & (offs_n[None, :] < M)
        p = tl.where(inside, tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision="tf32")  # the gradient of the dropped weights
        if DROPOUT:
            keep = _keep(seed, bh, offs_m, offs_n, M, p_drop)
            dropped = tl.where(keep, p / (1.0 - p_drop), 0.0)
            dp = tl.where(keep, dp / (1.0 - p_drop), 0.0)
        else:
            dropped = p
        return dropped, p * (dp - delta[:, None])

    @triton.jit
    def _bwd_kv(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, seed_ptr, scale, p_drop,
                M: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DROPOUT: tl.constexpr):
        bh = tl.program_id(1).to(tl.int64)
        offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
        offs_d = tl.arange(0, D)
        base = bh * M * D
        k, v = _tiles(k_ptr, v_ptr, base, offs_n, offs_d, M, D)
        dk = tl.zeros([BN, D], tl.float32)
        dv = tl.zeros([BN, D], tl.float32)
        seed = tl.load(seed_ptr)
        for start_m in range(0, M, BM):
            offs_m = start_m + tl.arange(0, BM)
            q, do = _tiles(q_ptr, do_ptr, base, offs_m, offs_d, M, D)
            lse, delta = _row_stats(lse_ptr, delta_ptr, bh, offs_m, M)
            dropped, ds = _tile_grads(q, k, v, do, lse, delta, offs_m, offs_n, M, seed, bh, scale, p_drop, DROPOUT)
            dv += tl.dot(tl.trans(dropped), do, input_precision="tf32")
            dk += tl.dot(tl.trans(ds), q, input_precision="tf32")
        kv = base + offs_n[:, None] * D + offs_d[None, :]
        tl.store(dk_ptr + kv, dk * scale, mask=offs_n[:, None] < M)
        tl.store(dv_ptr + kv, dv, mask=offs_n[:, None] < M)

    @triton.jit
    def _bwd_q(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, seed_ptr, scale, p_drop, M: tl.constexpr,
               D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, DROPOUT: tl.constexpr):
        bh = tl.program_id(1).to(tl.int64)
        offs_m = tl.program_id(0) * BM + tl.arange(0, BM)
        offs_d = tl.arange(0, D)
        base = bh * M * D
        q, do = _tiles(q_ptr, do_ptr, base, offs_m, offs_d, M, D)
        lse, delta = _row_stats(lse_ptr, delta_ptr, bh, offs_m, M)
        dq = tl.zeros([BM, D], tl.float32)
        seed = tl.load(seed_ptr)
        for start_n in range(0, M, BN):
            offs_n = start_n + tl.arange(0, BN)
            k, v = _tiles(k_ptr, v_ptr, base, offs_n, offs_d, M, D)
            _, ds = _tile_grads(q, k, v, do, lse, delta, offs_m, offs_n, M, seed, bh, scale, p_drop, DROPOUT)
            dq += tl.dot(ds, k, input_precision="tf32")
        tl.store(dq_ptr + base + offs_m[:, None] * D + offs_d[None, :], dq * scale, mask=offs_m[:, None] < M)

    @triton.jit
    def _mask(keep_ptr, seed_ptr, p_drop, M: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
        bh = tl.program_id(2).to(tl.int64)
        offs_m = tl.program_id(0) * BM + tl.arange(0, BM)
        offs_n = tl.program_id(1) * BN + tl.arange(0, BN)
        keep = _keep(tl.load(seed_ptr), bh, offs_m, offs_n, M, p_drop)
        tl.store(keep_ptr + bh * M * M + offs_m[:, None] * M + offs_n[None, :], keep.to(tl.int8),
                 mask=(offs_m[:, None] < M) & (offs_n[None, :] < M))


@torch.library.custom_op("seqbench::flash_attention_tf32", mutates_args=())
def _attention(q: Tensor, k: Tensor, v: Tensor, seed: Tensor, p_drop: float, block: int) -> tuple[Tensor, Tensor]:
    """(O, lse) of softmax attention on contiguous q, k, v [B, H, M, d] (fp32), dropout p_drop on the weights
    drawn from `seed` (an int64 tensor of one element on q's device). A custom op, so torch.compile calls it as
    one opaque operator and CUDA graphs replay it with the seed a graph-safe RNG wrote."""
    B, H, M, D = q.shape
    o, lse = torch.empty_like(q), q.new_empty(B, H, M)
    _fwd[(triton.cdiv(M, block), B * H)](q, k, v, o, lse, seed, 1.0 / math.sqrt(D), p_drop, M=M, D=D, BM=block,
                                         BN=block, DROPOUT=p_drop > 0)
    return o, lse


@_attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, seed: Tensor, p_drop: float, block: int) -> tuple[Tensor, Tensor]:
    return torch.empty_like(q), q.new_empty(q.shape[:-1])


@torch.library.custom_op("seqbench::flash_attention_tf32_backward", mutates_args=())
def _attention_backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, seed: Tensor,
                        p_drop: float, block: int) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of `_attention` from dO."""
    B, H, M, D = q.shape
    do = do.contiguous()
    delta = (do * o).sum(-1)  # D_i = sum_j dP_ij P_ij, by the rows of dO and O
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    grid = (triton.cdiv(M, block), B * H)
    # The backward holds two [block, d] accumulators besides four tiles: more warps, fewer registers each.
    common = dict(M=M, D=D, BM=block, BN=block, DROPOUT=p_drop > 0, num_warps=8 if block >= 64 else 4)
    _bwd_kv[grid](q, k, v, do, lse, delta, dk, dv, seed, 1.0 / math.sqrt(D), p_drop, **common)
    _bwd_q[grid](q, k, v, do, lse, delta, dq, seed, 1.0 / math.sqrt(D), p_drop, **common)
    return dq, dk, dv


@_attention_backward.register_fake
def _(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, seed: Tensor, p_drop: float,
      block: int) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    q, k, v, seed, ctx.p_drop, ctx.block = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, seed)
    ctx.mark_non_differentiable(lse)


def _grad(ctx: Any, do: Tensor, _lse: Tensor | None) -> tuple[Tensor | None, ...]:
    q, k, v, o, lse, seed = ctx.saved_tensors
    return (*_attention_backward(do, q, k, v, o, lse, seed, ctx.p_drop, ctx.block), None, None, None)


_attention.register_autograd(_grad, setup_context=_setup)


def draw_seed(device: torch.device) -> Tensor:
    """The dropout seed of one call, from torch's generator of `device` (checkpointed with the run's RNG state;
    on CUDA graph-safe, so each replay of a CUDA graph draws anew)."""
    return torch.randint(0, 2**31 - 1, (1,), device=device, dtype=torch.int64)


def flash_attention_tf32(q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0, block: int = BLOCK) -> Tensor:
    """softmax(q k^T / sqrt(d)) v on [B, H, M, d] with dropout `dropout_p` on the weights (pass 0 in eval mode),
    products in TF32; `available(q)` says whether it runs here."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    # Without dropout no seed is drawn, so evaluating (as SDPA) leaves the training's random stream where it was.
    seed = draw_seed(q.device) if dropout_p > 0 else torch.zeros(1, dtype=torch.int64, device=q.device)
    return _attention(q, k, v, seed, float(dropout_p), block)[0]


def keep_mask(seed: Tensor, batch_heads: int, m: int, dropout_p: float, block: int = BLOCK) -> Tensor:
    """The dropout keep mask [batch_heads, M, M] (bool) the kernels draw from `seed`: for tests, which rebuild the
    attention from it in torch."""
    keep = torch.empty(batch_heads, m, m, dtype=torch.int8, device=seed.device)
    _mask[(triton.cdiv(m, block), triton.cdiv(m, block), batch_heads)](keep, seed, dropout_p, M=m, BM=block,
                                                                        BN=block)
    return keep.bool()
