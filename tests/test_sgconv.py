"""SGConv: multi-scale kernel (length, scale layout, decay, normalisation), convolution, parameter counts of the
published LRA configs. The contract every model keeps (shapes, causality, stepping, padding) is in test_models.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.registry import MODELS
from harness.task import TaskSpec
from models.sgconv import SGConvConfig, SGConvLayer
from tests.references import direct_conv

LISTOPS = TaskSpec("listops", "tokens", 2048, 10, "accuracy", vocab_size=18, variable_length=True)
GRAY_CIFAR = TaskSpec("scifar", "signal", 1024, 10, "accuracy", d_input=1)


def layer(d_model: int, l_max: int, **options: Any) -> SGConvLayer:
    return SGConvLayer(SGConvConfig(d_model=d_model, **options), l_max)


@pytest.mark.parametrize("l_max,K,s0,n", [(2048, 1, 0, 12), (1024, 32, 0, 6), (4000, 1, 0, 13), (16384, 64, 1, 8)])
def test_scale_count_and_kernel_length(l_max, K, s0, n):
    sg = layer(2, l_max, kernel_dim=K, init_scale=s0)
    assert sg.n == n  # n = 1 + ceil(log2(l_max / K)) - init_scale
    assert sg.full_length == K * 2 ** (n - 1 + s0) >= l_max
    with torch.no_grad():
        assert sg.raw_kernel(10**6).shape == (1, 2, sg.full_length)
        assert sg.kernel(l_max + 100).shape == (1, 2, l_max + 100)  # zero-padded beyond the kernel
        assert sg.kernel(l_max + 100)[..., sg.full_length:].abs().sum() == 0


def test_k1_kernel_is_constant_on_dyadic_blocks_with_per_scale_decay():
    torch.manual_seed(0)
    sg = layer(3, 64, kernel_dim=1, decay_min=2.0, decay_max=3.0)
    n = sg.n  # 7 scales: [0,1), [1,2), [2,4), ..., [32,64)
    with torch.no_grad():
        k = sg.raw_kernel(64)[0]
        m = torch.linspace(2.0, 3.0, 3)
        for i in range(n):
            lo, hi = (0, 1) if i == 0 else (2 ** (i - 1), 2 ** i)
            block = k[:, lo:hi]
            expected = sg.kernel_list[i][0, :, 0] * m ** (n - 1 - i)
            assert torch.allclose(block, expected[:, None].expand_as(block), rtol=1e-6)


def test_linear_upsampling_matches_align_corners_false_formula():
    torch.manual_seed(0)
    sg = layer(2, 64, kernel_dim=4, decay_min=1.0, decay_max=1.0)
    w = sg.kernel_list[3][0]  # scale 3: factor 4, positions [16, 32)
    with torch.no_grad():
        got = sg.raw_kernel(64)[0, :, 16:32]
    f, K = 4, 4
    ref = torch.zeros(2, 16)
    for j in range(16):
        src = max((j + 0.5) / f - 0.5, 0.0)
        i0 = int(math.floor(src))
        i1 = min(i0 + 1, K - 1)
        lam = src - i0
        ref[:, j] = (1 - lam) * w[:, i0] + lam * w[:, i1]
    assert torch.allclose(got, ref, atol=1e-6)


@pytest.mark.slow  # the first compile of a process warms Inductor up (10 s)
@pytest.mark.parametrize("mode", ["cat_randn", "sum_cos", "cat_randn_learnable_fixed", "cat_randn_nearest"])
def test_compiled_kernel_equals_the_eager_kernel(mode):
    """Under torch.compile the upsampling is shifted copies and weights (`upsample`): the same kernel and
    gradients as eager's F.interpolate (which the test above holds to the formula), in float64."""
    torch.manual_seed(0)
    sg = layer(2, 64, kernel_dim=4, mode=mode, decay_min=0.5, decay_max=0.8).double()
    compiled = torch.compile(sg.raw_kernel, fullgraph=True)
    torch._dynamo.reset()
    weights = torch.randn(1, 2, 64, dtype=torch.float64)
    got, want = compiled(64), sg.raw_kernel(64)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14)
    params = [p for name, p in sg.named_parameters() if name != "D" and p.requires_grad]  # D: not in the kernel
    for g, w in zip(torch.autograd.grad((got * weights).sum(), params),
                    torch.autograd.grad((want * weights).sum(), params), strict=True):
        assert torch.allclose(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["cat_randn", "sum_cos", "cat_randn_learnable_fixed", "cat_randn_nearest"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_full_kernel_has_unit_norm_at_init(mode, bidirectional):
    torch.manual_seed(0)
    sg = layer(4, 100, kernel_dim=8, mode=mode, bidirectional=bidirectional, decay_min=1.0, decay_max=2.0)
    with torch.no_grad():
        k = sg.kernel(sg.full_length)
    assert k.shape == (2 if bidirectional else 1, 4, 128)
    assert torch.allclose(k.norm(dim=-1), torch.ones(k.shape[:2]), atol=1e-5)
    assert torch.allclose(sg.kernel(50), k[..., :50])  # truncation, same normaliser


def test_learnable_fixed_envelope_is_polynomial():
    torch.manual_seed(0)
    plain = layer(2, 64, kernel_dim=8, mode="cat_randn", decay_min=1.0, decay_max=1.0)
    env = layer(2, 64, kernel_dim=8, mode="cat_randn_learnable_fixed", decay_min=1.0, decay_max=1.0)
    env.kernel_list.load_state_dict(plain.kernel_list.state_dict())
    assert not env.decay.requires_grad
    with torch.no_grad():
        t = torch.arange(64, dtype=torch.float32)
        assert torch.allclose(env.raw_kernel(64), plain.raw_kernel(64) / (t + 1), atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_layer_equals_direct_convolution_plus_D_then_gelu(bidirectional):
    torch.manual_seed(0)
    sg = layer(3, 16, kernel_dim=4, bidirectional=bidirectional).eval()
    x = torch.randn(2, 13, 3)
    with torch.no_grad():
        u = x.transpose(1, 2)
        ref = direct_conv(u, sg.kernel(13), bidirectional) + sg.D.double()[0, :, None] * u.double()
        assert torch.allclose(sg(x, None).double(), F.gelu(ref).transpose(1, 2), atol=1e-4)


def published_kernel(sg: SGConvLayer, L: int) -> torch.Tensor:
    """The kernel as ctlllll/SGConv `gconv_standalone.GConv.forward` assembles it in the cat modes (init_scale 0):
    every scale upsampled and weighted, concatenated, then cropped to L and divided by the initial norm."""
    parts = [F.interpolate(w, scale_factor=2 ** max(0, i - 1), mode="linear") * sg.multiplier ** (sg.n - 1 - i)
             for i, w in enumerate(sg.kernel_list)]
    return torch.cat(parts, dim=-1)[..., :L] / sg.kernel_norm


@pytest.mark.parametrize("bidirectional", [False, True])
def test_scales_past_a_short_batch_get_zero_gradients_and_the_rest_is_unchanged(bidirectional):
    """Scales that start past the batch length are not built, yet get an exact zero gradient (not None), as in the
    published layer, so that AdamW's weight decay and moment updates reach them; the kernel and every other
    gradient are those of the published assembly, bit for bit."""
    torch.manual_seed(0)
    sg = layer(3, 64, kernel_dim=4, bidirectional=bidirectional, decay_min=1.0, decay_max=2.0)
    L = 13  # scales start at 0, 4, 8, 16, 32: scale 3 and 4 lie past the batch
    ours = sg.kernel(L)
    ref = published_kernel(sg, L)
    assert torch.equal(ours, ref)
    g = torch.randn_like(ours)
    params = list(sg.kernel_list)
    assert torch.equal(torch.stack([t.flatten() for t in torch.autograd.grad(ours, params, g)]),
                       torch.stack([t.flatten() for t in torch.autograd.grad(ref, params, g)]))
    sg(torch.randn(2, L, 3)).sum().backward()
    for i in (3, 4):
        assert torch.equal(sg.kernel_list[i].grad, torch.zeros_like(sg.kernel_list[i]))
    assert all(p.grad is not None for p in sg.parameters())
    before = sg.kernel_list[4].detach().clone()
    torch.optim.AdamW(sg.parameters(), lr=0.1, weight_decay=0.5).step()
    assert torch.equal(sg.kernel_list[4].detach(), before * (1 - 0.1 * 0.5))  # decayed, as published


def test_kernel_parameters_carry_their_lr():
    sg = layer(4, 64, kernel_dim=8, kernel_lr=0.001)
    assert all(p._optim == {"lr": 0.001} for p in sg.kernel_list)


def test_config_errors():
    with pytest.raises(ConfigError, match="l_max"):
        layer(4, 4, kernel_dim=8)
    with pytest.raises(ConfigError, match="model.mode='cat_sum_randn'"):
        MODELS.config("sgconv", mode="cat_sum_randn")
    causal = TaskSpec("gen", "tokens", 10, 5, "bpd", vocab_size=7, output="sequence", causal=True)
    with pytest.raises(ConfigError, match="bidirectional"):
        MODELS.build(MODELS.config("sgconv", bidirectional=True), causal)


# Published counts: ctlllll/SGConv `gconv_standalone.GConv` (main 97862df, same parameters as the preview
# branch's gconv.py) placed as the layer of state-spaces/s4's SequenceModel (the preview branch's backbone),
# instantiated on CPU outside the repo with the arguments of configs/experiment/lra/gconv-lra-{listops,cifar}.yaml,
# plus Embedding(18, H) / Linear(1, H) encoder and Linear(H, 10) pooled decoder.
PUBLISHED = {
    "listops": (295_434, LISTOPS, dict(d_model=128, n_layers=8, kernel_dim=1, bidirectional=True, prenorm=False,
                                       norm="batch", mode="cat_randn", decay_min=2.0, decay_max=2.0)),
    "scifar": (4_349_962, GRAY_CIFAR, dict(d_model=512, n_layers=6, kernel_dim=32, bidirectional=True, prenorm=False,
                                           norm="layer", mode="cat_randn_learnable_fixed", decay_min=1.0,
                                           decay_max=1.0, dropout=0.2)),
}


@pytest.mark.parametrize("task", sorted(PUBLISHED))
def test_parameter_counts_equal_published(task):
    expected, spec, overrides = PUBLISHED[task]
    model = MODELS.build(MODELS.config("sgconv", **overrides), spec)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert isinstance(model.blocks[0].mixer, SGConvLayer)
