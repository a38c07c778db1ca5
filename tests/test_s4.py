"""S4 / S4D: kernels against the recurrence and the dense SSM, the shared FFT convolution (models.longconv) against
direct convolution and finite differences, parameter counts of the published configs. The contract every model
keeps (shapes, causality, stepping, padding) is in test_models.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.optim import make_optimizer
from harness.preflight import task_spec
from harness.registry import MODELS, compose_config
from harness.task import TaskSpec
from harness.timing import dispatched_ops
from models import s4, s4d
from models.longconv import circular_kernel, fft_conv, next_fast_len
from models.s4 import S4Config, S4Layer, dense_discretisation, exp_sum, hippo_legs_nplr
from models.s4d import S4DConfig, S4DLayer
from tests.references import direct_conv, legs_dense

LISTOPS = TaskSpec("listops", "tokens", 2048, 10, "accuracy", vocab_size=18, variable_length=True)
SCIFAR = TaskSpec("scifar", "signal", 1024, 10, "accuracy", d_input=3)
SC = TaskSpec("speech_commands", "signal", 16000, 35, "accuracy", d_input=1)


def test_hippo_legs_nplr_is_legs():
    lam, P, B = hippo_legs_nplr(8)
    # N=8: Lambda ~ -0.5 - i {19.857, 5.354, 1.958, 0.427}, and A = Lambda - P P^* has the spectrum of dense LegS
    assert torch.allclose(lam.real, torch.full((4,), -0.5, dtype=torch.float64))
    assert torch.allclose(lam.imag, -torch.tensor([19.857, 5.354, 1.958, 0.427], dtype=torch.float64), atol=1e-3)
    full = lambda z: torch.cat([z, z.conj()])  # noqa: E731
    A = torch.diag(full(lam)) - full(P)[:, None] * full(P).conj()[None, :]
    eig = torch.linalg.eigvals(A).real.sort().values
    assert torch.allclose(eig, torch.linalg.eigvals(legs_dense(8)).real.sort().values, atol=1e-6)
    assert torch.allclose(eig, -torch.arange(8, 0, -1, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("L", [1, 7, 16, 37])
def test_exp_sum_equals_naive(L):
    torch.manual_seed(0)
    v = torch.randn(3, 4, 5, dtype=torch.complex64)
    x = torch.complex(-torch.rand(4, 5) * 0.3, torch.randn(4, 5))
    naive = 2 * (v[..., None] * torch.exp(x[..., None] * torch.arange(L))).sum(-2).real
    assert torch.allclose(exp_sum(v, x, L), naive, atol=1e-5)


def recurrent_s4d_kernel(layer: S4DLayer, L: int) -> torch.Tensor:
    """Impulse response [Ch, H, L] of x_{k+1} = A_bar x_k + B_bar u_k, y = 2 Re C x, discretised independently of the
    layer per diagonal mode, in float64."""
    p = layer.params()
    dtA = p["dt"].double() * p["A"].cdouble()
    if layer.disc == "zoh":
        a_bar, b_bar = torch.exp(dtA), (torch.exp(dtA) - 1) / p["A"].cdouble() * p["B"].cdouble()
    else:
        a_bar = (1 + dtA / 2) / (1 - dtA / 2)
        b_bar = p["dt"].double() / (1 - dtA / 2) * p["B"].cdouble()
    state, ks = b_bar.clone(), []
    for _ in range(L):
        ks.append(2 * (p["C"].cdouble() * state).sum(-1).real)
        state = a_bar * state
    return torch.stack(ks, -1).detach()


@pytest.mark.parametrize("init", ["diag-lin", "diag-inv", "legs"])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_kernel_equals_unrolled_recurrence(init, disc):
    torch.manual_seed(0)
    layer = S4DLayer(S4DConfig(d_model=4, d_state=8, init=init, disc=disc, n_ssm=2, dt_min=0.01, dt_max=0.5),
                     l_max=40)
    with torch.no_grad():
        assert torch.allclose(layer.kernel(40).double(), recurrent_s4d_kernel(layer, 40), atol=1e-5)


def assert_same_gradients(got: torch.Tensor, want: torch.Tensor, inputs: list[torch.Tensor]) -> None:
    """The gradients of two float64 computations of one function with respect to `inputs`, under one random loss."""
    weights = torch.randn_like(want)
    for g, w in zip(torch.autograd.grad((got * weights).sum(), inputs),
                    torch.autograd.grad((want * weights).sum(), inputs), strict=True):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_kernel_in_real_pairs_equals_the_recurrence_and_the_complex_kernel(disc):
    """What torch.compile traces (`_s4d_taps_pairs`: no complex tensor) against the unrolled recurrence, and its
    gradients against those of the complex arithmetic eager code runs, in float64, bidirectional (two C rows)."""
    torch.manual_seed(0)
    layers = [S4DLayer(S4DConfig(d_model=4, d_state=8, disc=disc, n_ssm=2, dt_min=0.01, dt_max=0.5,
                                 bidirectional=True), l_max=40).double() for _ in range(2)]
    tensors = [t.detach().requires_grad_() for t in S4DLayer.stacked_params(layers, ("A_real", "A_imag", "B", "C"))]
    pairs, complex_ = s4d._s4d_taps_pairs(tensors, 40, disc), s4d._s4d_taps_complex(tensors, 40, disc)
    for i, layer in enumerate(layers):
        assert torch.allclose(pairs[i], recurrent_s4d_kernel(layer, 40), rtol=1e-10, atol=1e-12)
    assert_same_gradients(pairs, complex_, tensors)


def dense_s4_kernel(layer: S4Layer, L: int) -> torch.Tensor:
    """K_l = C A_bar^l B_bar from materialised 2N x 2N matrices, C = C~ (I - A_bar^Lk)^-1, float64."""
    p = layer.params()
    A_bar, B_bar = dense_discretisation(p["A"], p["P"], p["B"], p["dt"])
    C_t = torch.cat([p["C"], p["C"].conj()], -1).cdouble()
    eye = torch.eye(A_bar.shape[-1], dtype=torch.complex128)
    M = eye - torch.linalg.matrix_power(A_bar, int(layer.l_kernel))
    C = torch.linalg.solve(M.transpose(-1, -2)[None], C_t[..., None])[..., 0]
    x, ks = B_bar, []
    for _ in range(L):
        ks.append((C * x).sum(-1).real)
        x = torch.einsum("hnm,hm->hn", A_bar, x)
    return torch.stack(ks, -1)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_s4_kernel_in_real_pairs_equals_the_dense_ssm_and_the_complex_kernel(bidirectional):
    """What torch.compile traces (`_s4_taps_pairs`: complex values only inside the FFTs) against the materialised
    SSM, and its gradients against those of the complex arithmetic eager code runs, in float64."""
    torch.manual_seed(1)
    layers = [S4Layer(S4Config(d_model=3, d_state=8, bidirectional=bidirectional, n_ssm=None, dt_min=0.01,
                               dt_max=0.3), l_max=32).double() for _ in range(2)]
    names = ("A_real", "A_imag", "B", "P", "C")
    tensors = [t.detach().requires_grad_() for t in S4Layer.stacked_params(layers, names)]
    pairs, complex_ = s4._s4_taps_pairs(tensors, 32), s4._s4_taps_complex(tensors, 32)
    for i, layer in enumerate(layers):
        assert torch.allclose(pairs[i], dense_s4_kernel(layer, 32), rtol=1e-8, atol=1e-10)
    assert_same_gradients(pairs, complex_, tensors)


@pytest.mark.parametrize("N,L,bidirectional", [(4, 16, False), (8, 32, True), (16, 20, False)])
def test_s4_kernel_equals_dense_ssm(N, L, bidirectional):
    torch.manual_seed(1)
    layer = S4Layer(S4Config(d_model=3, d_state=N, bidirectional=bidirectional, n_ssm=None, dt_min=0.01,
                             dt_max=0.3), l_max=L)
    with torch.no_grad():
        k = layer.kernel(L).double()
        assert k.shape == (2 if bidirectional else 1, 3, L)
        assert torch.allclose(k, dense_s4_kernel(layer, L), atol=2e-5)
        assert torch.allclose(layer.kernel(L - 5).double(), k[..., : L - 5])  # shorter = truncated


KERNELS_BY_MODEL = {  # layer class, config, independent kernel of its first L taps
    "s4": (S4Layer, S4Config(d_model=2, d_state=8, dt_min=0.05, dt_max=0.2), dense_s4_kernel),
    "s4d": (S4DLayer, S4DConfig(d_model=2, d_state=8, dt_min=0.05, dt_max=0.2), recurrent_s4d_kernel),
}


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name", sorted(KERNELS_BY_MODEL))
def test_input_longer_than_l_max_sees_the_l_max_kernel_then_zeros(name, bidirectional):
    """As published (state-spaces/s4 models/s4/s4.py, FFTConv.forward: l_kernel = min(L, l_max)): an input longer
    than l_max is convolved with the l_max-tap kernel, zero beyond, and S4's C-tilde stays attuned to l_max."""
    torch.manual_seed(2)
    cls, cfg, reference = KERNELS_BY_MODEL[name]
    layer = cls(dataclasses.replace(cfg, bidirectional=bidirectional), l_max=16).eval()
    x = torch.randn(2, 40, 2)
    with torch.no_grad():
        k = F.pad(reference(layer, 16), (0, 24))
        assert torch.allclose(layer.kernel(40).double(), k, atol=2e-5)
        assert torch.equal(layer.kernel(40)[..., 16:], torch.zeros(k.shape[0], 2, 24))
        u = x.transpose(1, 2)
        ref = direct_conv(u, k, bidirectional) + layer.D.double()[0, :, None] * u.double()
        assert torch.allclose(layer(x).double(), F.gelu(ref).transpose(1, 2), atol=1e-4)
    if name == "s4":
        assert int(layer.l_kernel) == layer._lk == 16


def test_s4_attuned_length_survives_a_state_dict_round_trip():
    """The attuned length lives in the buffer l_kernel and its Python mirror (no GPU sync per call)."""
    torch.manual_seed(2)
    cfg = S4Config(d_model=2, d_state=8, dt_min=0.05, dt_max=0.2)
    long = S4Layer(cfg, l_max=64)
    with torch.no_grad():
        fresh = S4Layer(cfg, l_max=16)
        fresh.load_state_dict(long.state_dict())
        assert fresh._lk == 64 and torch.equal(fresh.kernel(16), long.kernel(16))
        assert torch.allclose(fresh.kernel(16).double(), dense_s4_kernel(long, 16), atol=2e-5)


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("act", ["id", "gelu", "silu"])
def test_fft_conv_equals_direct_convolution(bidirectional, act, paired):
    """conv + D skip (folded into the kernel's lag 0) + mask + activation against the brute-force loop, with the
    two examples transformed one by one and as one complex signal (`paired`, the CUDA default)."""
    torch.manual_seed(0)
    x, k, D = torch.randn(2, 13, 3), torch.randn(2 if bidirectional else 1, 3, 13), torch.randn(1, 3)
    mask = torch.tensor([[1.0] * 13, [1.0] * 9 + [0.0] * 4])
    u = (x * mask[..., None]).transpose(1, 2)
    ref = direct_conv(u, k, bidirectional) + D.double()[0, :, None] * u.double()
    ref = {"id": lambda t: t, "gelu": F.gelu, "silu": F.silu}[act](ref).transpose(1, 2)
    got = fft_conv(x, circular_kernel(k, D, bidirectional), mask, act, paired=paired)
    assert got.shape == x.shape and got.is_contiguous()
    assert torch.allclose(got.double(), ref, atol=1e-4)


@pytest.mark.parametrize(("batch", "paired"), [(1, False), (2, False), (4, True)])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("act", ["id", "gelu"])
def test_fft_conv_hand_written_backward_passes_gradcheck(batch, paired, bidirectional, act):
    """The custom backward (correlations in the spectrum) against finite differences, float64; batch 1 takes the
    strided (no transpose) FFT path, `paired` the complex transforms of two examples at once."""
    torch.manual_seed(0)
    x = torch.randn(batch, 6, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2 if bidirectional else 1, 3, 6, dtype=torch.float64, requires_grad=True)
    D = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1.0] * 6, [1.0] * 4 + [0.0] * 2] * 2, dtype=torch.float64)[:batch]
    fn = lambda x, k, D: fft_conv(x, circular_kernel(k, D, bidirectional), mask, act, paired=paired)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, k, D))


@pytest.mark.parametrize(("batch", "paired"), [(1, False), (3, False), (2, True)])
@pytest.mark.parametrize("taps", [1, 4, 9])
def test_fft_conv_with_a_causal_kernel_equals_direct_convolution(batch, paired, taps):
    """The MultiresNet layout: Lk taps, FFT size n >= L + Lk - 1 (not a power of two), 1/n in the kernel."""
    torch.manual_seed(0)
    L = 9
    n = next_fast_len(L + taps - 1)
    x = torch.randn(batch, L, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, taps, dtype=torch.float64, requires_grad=True)
    full = torch.nn.functional.pad(k, (0, L - taps))[None]  # [1, H, L]: lags >= taps are zero
    ref = direct_conv(x.transpose(1, 2), full, False).transpose(1, 2)
    torch.testing.assert_close(fft_conv(x, k / n, n=n, scaled=True, paired=paired), ref)
    assert torch.autograd.gradcheck(lambda x, k: fft_conv(x, k / n, n=n, scaled=True, paired=paired), (x, k))


def test_fft_conv_rejects_a_kernel_of_the_wrong_length():
    with pytest.raises(ConfigError, match=r"\[H, 2L\]"):
        fft_conv(torch.randn(1, 8, 2), torch.randn(2, 8))
    with pytest.raises(ConfigError, match=r"n >= L \+ Lk - 1"):
        fft_conv(torch.randn(1, 8, 2), torch.randn(2, 4), n=10)
    with pytest.raises(ConfigError, match="even batch"):
        fft_conv(torch.randn(3, 8, 2), torch.randn(2, 16), paired=True)


def test_layer_gradients_equal_autograd_through_the_direct_convolution():
    """Whole S4D layer (dropout active, so the unfused path runs too) against autograd of the brute-force loop."""
    torch.manual_seed(0)
    for dropout in (0.0, 0.3):
        layer = S4DLayer(S4DConfig(d_model=3, d_state=8, bidirectional=True, dropout=dropout), l_max=10).train()
        x = torch.randn(2, 10, 3, requires_grad=True)
        lengths = torch.tensor([10, 7])
        torch.manual_seed(1)
        y = layer(x, lengths)
        g = torch.randn_like(y)
        grads = torch.autograd.grad(y, [x, layer.C, layer.D], g)
        mask = (torch.arange(10)[None] < lengths[:, None]).double()
        u = (x.double() * mask[..., None]).transpose(1, 2)
        pre = direct_conv(u, layer.kernel(10), True) + layer.D.double()[0, :, None] * u
        torch.manual_seed(1)  # same dropout masks: fp32, [B, L, H] contiguous as in the layer
        ref = layer.drop(F.gelu(layer.drop_inner(pre.float().transpose(1, 2).contiguous())))
        assert torch.allclose(y, ref, atol=1e-4)
        ref_grads = torch.autograd.grad(ref, [x, layer.C, layer.D], g.double())
        for a, b in zip(grads, ref_grads):
            assert torch.allclose(a.double(), b.double(), atol=1e-3, rtol=1e-4)


def test_causal_layer_ignores_the_future_and_bidirectional_does_not():
    torch.manual_seed(0)
    x = torch.randn(2, 24, 8)
    x2 = x.clone()
    x2[:, 15:] += 1.0
    for layer, cfg in [(S4Layer, S4Config(d_model=8, d_state=8)), (S4DLayer, S4DConfig(d_model=8, d_state=8,
                                                                                       init="diag-inv"))]:
        causal = layer(cfg, l_max=24).eval()
        assert torch.allclose(causal(x)[:, :15], causal(x2)[:, :15], atol=1e-5)
        bi = layer(dataclasses.replace(cfg, bidirectional=True), l_max=24).eval()
        assert not torch.allclose(bi(x)[:, :15], bi(x2)[:, :15], atol=1e-3)


def test_layer_output_equals_conv_plus_D_then_gelu():
    torch.manual_seed(0)
    layer = S4DLayer(S4DConfig(d_model=3, d_state=8, bidirectional=True), l_max=11).eval()
    x = torch.randn(2, 11, 3)
    with torch.no_grad():
        ref = direct_conv(x.transpose(1, 2), layer.kernel(11), True) + layer.D.double()[0, :, None] * x.transpose(
            1, 2).double()
        assert torch.allclose(layer(x).double(), F.gelu(ref).transpose(1, 2), atol=1e-4)


def test_padding_is_masked_at_each_block_input_even_bidirectional():
    """ListOps: positions >= length are zeroed before the SSM, so padding values cannot leak back through the
    bidirectional kernel."""
    torch.manual_seed(0)
    model = MODELS.build(MODELS.config("s4", d_model=16, n_layers=2, bidirectional=True, d_state=8, norm="layer"),
                         LISTOPS).eval()
    x = torch.randint(3, 18, (2, 30))
    lengths = torch.tensor([30, 17])
    x2 = x.clone()
    x2[1, 17:] = torch.randint(3, 18, (13,))
    out1, out2 = model(x, lengths=lengths), model(x2, lengths=lengths)
    assert torch.allclose(out1, out2, atol=1e-5)


def test_config_errors():
    gen = TaskSpec("gen", "tokens", 12, 7, "bpd", vocab_size=9, output="sequence", causal=True)
    with pytest.raises(ConfigError, match="bidirectional"):
        MODELS.build(MODELS.config("s4d", bidirectional=True), gen)
    with pytest.raises(ConfigError, match="n_ssm"):
        MODELS.build(MODELS.config("s4", d_model=10, n_ssm=3), SCIFAR)
    with pytest.raises(ConfigError, match="init"):
        MODELS.build(MODELS.config("s4d", init="fourier"), SCIFAR)
    with pytest.raises(ConfigError, match="bilinear"):
        MODELS.build(MODELS.config("s4", disc="zoh"), SCIFAR)
    with pytest.raises(ConfigError, match="model.mode='diag'"):
        MODELS.config("s4", mode="diag")  # S4D is model=s4d
    with pytest.raises(ConfigError, match="model.d_state=7"):
        MODELS.config("s4d", d_state=7)
    with pytest.raises(ConfigError, match="model.dt_min"):
        MODELS.config("s4", dt_min=0.5, dt_max=0.1)


def test_ssm_parameters_carry_their_optimizer_settings():
    layer = S4Layer(S4Config(d_model=8, d_state=8, ssm_lr=0.001, dt_lr=None), l_max=16)
    for name in ("A_real", "A_imag", "B", "P"):
        assert getattr(layer, name)._optim == {"lr": 0.001, "weight_decay": 0.0}
    assert layer.inv_dt._optim == {"weight_decay": 0.0}  # dt at the global lr (v3 ListOps config)
    assert not hasattr(layer.C, "_optim") and not hasattr(layer.D, "_optim")
    dt = torch.nn.functional.softplus(layer.inv_dt.detach())
    assert float(dt.min()) >= 0.001 - 1e-6 and float(dt.max()) <= 0.1 + 1e-6


def test_kernel_and_fft_stay_fp32_under_bf16_autocast():
    layer = S4DLayer(S4DConfig(d_model=8, d_state=8), l_max=32)
    x = torch.randn(2, 32, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), layer(x), atol=0.05)


# Published parameter counts, obtained by instantiating state-spaces/s4 HEAD e757cef (src/models/sequence/
# backbones/model.py SequenceModel with the S4Block layer config of each experiment file, CPU, outside the repo,
# pytorch_lightning/rich stubbed) plus the encoder (Embedding(18, H) / Linear(d_input, H)) and the pooled decoder
# Linear(H, n_classes) that the configs use.
PUBLISHED = {
    # lra/old/v3-s4-listops (8 x 128, N 64, n_ssm = H, bidirectional, post BatchNorm)
    ("s4", "listops"): (599_562, LISTOPS, dict(d_model=128, n_layers=8, n_ssm=None, prenorm=False, norm="batch",
                                               bidirectional=True)),
    ("s4d", "listops"): (534_026, LISTOPS, dict(d_model=128, n_layers=8, n_ssm=None, prenorm=False, norm="batch",
                                                bidirectional=True)),
    # cifar/s4-cifar (RGB, 6 x 512, n_ssm 2, bidirectional, post LayerNorm)
    ("s4", "scifar"): (3_566_858, SCIFAR, dict(d_model=512, n_layers=6, n_ssm=2, prenorm=False, norm="layer",
                                               bidirectional=True)),
    ("s4d", "scifar"): (3_566_090, SCIFAR, dict(d_model=512, n_layers=6, n_ssm=2, prenorm=False, norm="layer",
                                                bidirectional=True)),
    # sc/s4-sc (6 x 128, n_ssm 2, bidirectional, pre BatchNorm + final norm, 35 classes)
    ("s4", "speech_commands"): (306_851, SC, dict(d_model=128, n_layers=6, n_ssm=2, prenorm=True, norm="batch",
                                                  bidirectional=True)),
    ("s4d", "speech_commands"): (306_083, SC, dict(d_model=128, n_layers=6, n_ssm=2, prenorm=True, norm="batch",
                                                   bidirectional=True)),
}


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_parameter_counts_equal_published(key):
    expected, spec, overrides = PUBLISHED[key]
    model = MODELS.build(MODELS.config(key[0], d_state=64, **overrides), spec)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert isinstance(model.blocks[0].mixer, S4Layer if key[0] == "s4" else S4DLayer)


# state-spaces/s4 v3.0.0's S4D kernel (SSKernelDiag, dt = exp(log_dt)), float64, made outside the repo
# (tests/golden/README.md): its parameters, kernel and the gradients of sum(kernel * cotangent).
V3_NAMES = {"log_dt": "inv_dt", "inv_A_real": "A_real", "A_imag": "A_imag", "B": "B", "C": "C"}


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_exp_dt_equals_published_v3(disc):
    with np.load(Path(__file__).parent / "golden" / f"s4d_v3_{disc}.npz") as z:
        golden = {k: torch.from_numpy(z[k]) for k in z.files if k != "meta"}
        kw = json.loads(str(z["meta"]))["kwargs"]
    assert S4DConfig().dt_transform == "exp"  # the default: v3, as the cited S4D results
    cfg = S4DConfig(d_model=kw["H"], d_state=kw["N"], n_ssm=kw["n_ssm"], init=kw["measure"], disc=disc,
                    bidirectional=kw["channels"] == 2)
    layer = S4DLayer(cfg, l_max=kw["L"]).double()
    # v3 writes A = -exp(inv_A_real) + i A_imag, we write A = -exp(A_real) - i A_imag: the same A.
    sign = {"A_imag": -1.0}
    with torch.no_grad():
        for theirs, ours in V3_NAMES.items():
            getattr(layer, ours).copy_(sign.get(ours, 1.0) * golden[f"param/{theirs}"].view_as(getattr(layer, ours)))
    k = layer.kernel(kw["L"])
    torch.testing.assert_close(k, golden["kernel"], rtol=1e-9, atol=1e-12)
    (k * golden["cotangent"]).sum().backward()
    for theirs, ours in V3_NAMES.items():  # d/d log_dt included: the exp parameterisation's chain rule
        grad = sign.get(ours, 1.0) * golden[f"grad/{theirs}"].view_as(getattr(layer, ours))
        torch.testing.assert_close(getattr(layer, ours).grad, grad, rtol=1e-9, atol=1e-12, msg=ours)


def test_s4d_exp_dt_is_log_uniform_between_dt_min_and_dt_max():
    torch.manual_seed(0)
    layer = S4DLayer(S4DConfig(d_model=4096, d_state=4, dt_min=0.001, dt_max=0.1), l_max=8)
    log_dt = layer.inv_dt.detach().double()  # exp: the parameter is log dt itself
    torch.testing.assert_close(layer.params()["dt"].double(), torch.exp(log_dt))
    u = (log_dt - np.log(0.001)) / (np.log(0.1) - np.log(0.001))  # U[0, 1) if log dt ~ U[log dt_min, log dt_max)
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.02 and abs(float(u.var()) - 1 / 12) < 0.01


def test_s4d_listops_step_dispatches_under_1000_operators():
    """One training step of the s4d_listops model (batch 2, length 512, fp32: forward, backward, AdamW) dispatches
    fewer than 1,000 operators (harness.timing.dispatched_ops, a proxy for a GPU step's kernel launches; 1,690
    before the layers' kernels were made in one batch and AdamW ran foreach)."""
    cfg = compose_config(["+experiment=s4d_listops"])
    spec = dataclasses.replace(task_spec(cfg), seq_len=512)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model, spec)
    optimizer = make_optimizer(model, cfg.optim)
    x = torch.randint(1, spec.vocab_size, (2, 512))
    lengths, y = torch.tensor([512, 300]), torch.tensor([3, 7])

    def step() -> None:
        loss = F.cross_entropy(model(x, lengths=lengths), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # the optimizer's state exists from here on
    assert sum(dispatched_ops(step).values()) < 1000
