"""Our layers against numbers computed by the published code (tests/golden/, provenance in its README.md).

Each golden file holds the published module's inputs, parameters and buffers (under the published names),
output, input gradient, parameter gradients and convolution kernel, in float64. Here our layer is built with
the same settings through the model registry, loaded with the published tensors through a name mapping that
must be one-to-one (every published tensor used once, every one of our tensors set), run in float64 on the
same input, and compared: output, input gradient, every parameter gradient (mapped back to the published
name and shape) and the kernel. No reference here is computed by our own functions. The WavSpA files come
from JAX/Flax code: transforms hold an analysis and a synthesis section, blocks Flax names and layouts
(tests/golden/README.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from harness.task import TaskSpec
from models import MODELS
from models.wavspa import liftdec, liftdec_learn, liftrec, liftrec_learn, ortho_filter, wavedec, waverec

GOLDEN = Path(__file__).parent / "golden"
RTOL = 1e-9  # float64 on both sides: only the order of floating-point operations differs


@dataclass
class Golden:
    """One golden file: its arrays by kind, keyed by published name."""

    name: str
    meta: dict[str, Any]
    inputs: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]
    grad_inputs: dict[str, np.ndarray]
    output: np.ndarray
    cotangent: np.ndarray
    kernel: np.ndarray | None

    @classmethod
    def load(cls, name: str) -> Golden:
        with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        kind = lambda prefix: {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}  # noqa: E731
        return cls(name, json.loads(str(arrays["meta"])), kind("input/"), kind("param/"), kind("buffer/"),
                   kind("grad/"), kind("grad_input/"), arrays["output"], arrays["cotangent"], arrays.get("kernel"))


# ----------------------------------------------------------------------------------------------------------
# Published name -> our name, and loading through it


@dataclass
class Mapping:
    """Rules published name -> our name (first matching regex wins; the template may use its groups).

    `derived`: published buffers our module computes from its settings instead of storing them as state
    (checked equal instead of loaded). `published_only`: published bookkeeping with no counterpart, each with
    the value it must have.
    """

    rules: list[tuple[str, str]]
    derived: dict[str, str] = field(default_factory=dict)
    published_only: dict[str, Any] = field(default_factory=dict)

    def ours(self, published: str) -> str:
        for pattern, template in self.rules:
            if m := re.fullmatch(pattern, published):
                return m.expand(template)
        raise AssertionError(f"published tensor {published!r} has no rule")


def as_ours(value: np.ndarray, target: torch.Tensor, name: str) -> torch.Tensor:
    """The published tensor in our shape; the two may differ only by axes of size 1 (Conv1d 1x1 vs Linear,
    a leading rank or channel axis of 1)."""
    squeeze = lambda shape: tuple(s for s in shape if s != 1)  # noqa: E731
    assert squeeze(value.shape) == squeeze(target.shape), f"{name}: published {value.shape}, ours {tuple(target.shape)}"
    return torch.from_numpy(value).reshape(target.shape).to(target.dtype)


def load_published(module: nn.Module, golden: Golden, mapping: Mapping) -> dict[str, str]:
    """Set every tensor of `module` from the golden file; returns published parameter name -> our name."""
    state = module.state_dict()
    published = {**golden.params, **golden.buffers}
    names: dict[str, str] = {}
    for name in published:
        if name in mapping.published_only:
            np.testing.assert_array_equal(published[name], mapping.published_only[name], err_msg=name)
        elif name in mapping.derived:
            ours = state[mapping.derived[name]]
            np.testing.assert_allclose(np.broadcast_to(published[name], ours.shape), ours.numpy(), rtol=1e-15,
                                       err_msg=f"{name}: our buffer differs from the published one")
        else:
            names[name] = mapping.ours(name)
    targets = list(names.values()) + [mapping.derived[name] for name in published if name in mapping.derived]
    assert len(set(targets)) == len(targets), f"two published tensors map to one of ours: {sorted(targets)}"
    assert set(targets) == set(state), (f"ours not set: {sorted(set(state) - set(targets))}; "
                                        f"unknown targets: {sorted(set(targets) - set(state))}")
    loaded = {ours: as_ours(published[name], state[ours], name) for name, ours in names.items()}
    module.load_state_dict(loaded | {ours: state[ours] for name, ours in mapping.derived.items() if name in published})
    return {name: ours for name, ours in names.items() if name in golden.params}


def check(actual: torch.Tensor | np.ndarray, expected: np.ndarray, what: str, rtol: float = RTOL) -> None:
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else actual
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, published {expected.shape}"
    # rtol on every entry, with entries near zero judged against the tensor's scale.
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max()), err_msg=what)


def check_gradients(module: nn.Module, golden: Golden, names: dict[str, str], rtol: float = RTOL) -> None:
    """Every published parameter gradient against ours, mapped back to the published name and shape."""
    ours = dict(module.named_parameters())
    assert set(golden.grads) == set(names), "the golden file's gradients are those of its parameters"
    for published, our_name in names.items():
        grad = ours[our_name].grad
        assert grad is not None, f"no gradient reached {our_name}"
        check(grad.reshape(golden.grads[published].shape), golden.grads[published], f"gradient of {published}", rtol)


def forward_backward(call: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     golden: Golden) -> torch.Tensor:
    out = call(x)
    (out * torch.from_numpy(golden.cotangent)).sum().backward()
    return out


def spec_for(golden: Golden, **fields: Any) -> TaskSpec:
    base: dict[str, Any] = dict(name=f"golden-{golden.name}", input="signal", seq_len=golden.meta["seq_len"],
                                n_outputs=2, metric="accuracy")
    return TaskSpec(**(base | fields))


def build(model: str, spec: TaskSpec, **overrides: Any) -> nn.Module:
    return MODELS.build(MODELS.config(model, **overrides), spec)


# ----------------------------------------------------------------------------------------------------------
# MultiresNet: thjashin/multires-conv MultiresLayer and MultiresNet


MULTIRES_LAYER = Mapping(rules=[(r"(h0|h1|w)", r"\1")])
MULTIRES_NET = Mapping(rules=[
    (r"encoder\.(weight|bias)", r"encoder.proj.\1"),
    (r"seq_layers\.(\d+)\.(h0|h1|w)", r"blocks.\1.mixer.\2"),
    (r"mixing_layers\.(\d+)\.0\.(weight|bias)", r"blocks.\1.channel_mixer.0.\2"),
    (r"norms\.(\d+)\.(\w+)", r"blocks.\1.norm.norm.\2"),
    (r"output_mapping\.(weight|bias)", r"decoder.\1"),
])


@pytest.mark.parametrize("name", ["multires_layer_fading", "multires_layer_uniform", "multires_layer_db2"])
@pytest.mark.parametrize("impl", ["fft", "direct"])
def test_multires_layer(name: str, impl: str) -> None:
    golden = Golden.load(name)
    kw = golden.meta["kwargs"]
    model = build("multires", spec_for(golden, d_input=kw["d_model"]), d_model=kw["d_model"], n_layers=1,
                  kernel_size=kw["kernel_size"], depth=golden.meta["depth"], tree_select=kw["tree_select"],
                  memory_size=kw.get("memory_size"), wavelet_init=kw.get("wavelet_init"), dropout=0.0, impl=impl)
    layer = model.blocks[0].mixer.double().eval()
    names = load_published(layer, golden, MULTIRES_LAYER)

    x = torch.from_numpy(golden.inputs["x"]).transpose(1, 2).requires_grad_()  # published [B, D, L] -> [B, L, D]
    out = forward_backward(lambda v: layer(v).transpose(1, 2), x, golden)
    check(out, golden.output, "output")
    check(x.grad.transpose(1, 2), golden.grad_inputs["x"], "input gradient")
    check_gradients(layer, golden, names)
    with torch.no_grad():
        kernel = layer.impulse_response(golden.meta["seq_len"], torch.float64)
    check(kernel, golden.kernel[:, :kernel.shape[-1]], "impulse response")
    assert not golden.kernel[:, kernel.shape[-1]:].any(), "the published response ends with the receptive field"


@pytest.mark.parametrize("name", ["multires_net_linear", "multires_net_embedding"])
def test_multires_net(name: str) -> None:
    golden = Golden.load(name)
    kw = golden.meta["kwargs"]
    tokens = kw["encoder"] == "embedding"
    spec = spec_for(golden, n_outputs=kw["d_output"], **({"input": "tokens", "vocab_size": kw["n_tokens"]} if tokens
                                                          else {"d_input": kw["d_input"]}))
    model = build("multires", spec, d_model=kw["d_model"], n_layers=kw["n_layers"], kernel_size=kw["kernel_size"],
                  depth=kw.get("depth"), tree_select=kw.get("tree_select", "fading"), memory_size=kw.get("d_mem"),
                  dropout=0.0, norm="batch" if kw["batchnorm"] else "layer").double().eval()
    names = load_published(model, golden, MULTIRES_NET)
    # Our own converter (for checkpoints of the published code) gives back exactly the published names and tensors.
    converted = model.published_state_dict()
    assert set(converted) == set(golden.params) | set(golden.buffers)
    for key, value in converted.items():
        np.testing.assert_array_equal(value.numpy(), {**golden.params, **golden.buffers}[key], err_msg=key)

    x = torch.from_numpy(golden.inputs["x"])
    lengths = torch.from_numpy(golden.inputs["lengths"]) if "lengths" in golden.inputs else None
    if not tokens:
        x = x.transpose(1, 2).requires_grad_()  # published [B, d_input, L] -> [B, L, d_input]
    out = forward_backward(lambda v: model(v, lengths), x, golden)
    check(out, golden.output, "output")
    if not tokens:
        check(x.grad.transpose(1, 2), golden.grad_inputs["x"], "input gradient")
    check_gradients(model, golden, names)


# ----------------------------------------------------------------------------------------------------------
# S4, S4D: state-spaces/s4 models/s4/s4.py FFTConv; SGConv: ctlllll/SGConv gconv_standalone.py GConv


SSM = Mapping(rules=[(r"D", "D"), (r"kernel\.(\w+)", r"\1")])  # B, P: published [1, S, N/2, 2], ours [S, N/2, 2]
SGCONV = Mapping(
    rules=[(r"D", "layer.D"), (r"kernel_list\.(\d+)", r"layer.kernel_list.\1"), (r"decay", "layer.decay"),
           (r"kernel_norm", "layer.kernel_norm"), (r"output_linear\.0\.(weight|bias)", r"output_linear.linear.\1")],
    derived={"multiplier": "layer.multiplier"},
    published_only={"kernel_norm_initialized": True},  # the published layer sets kernel_norm on its first call
)


def ssm_layer(golden: Golden) -> nn.Module:
    kw = golden.meta["kwargs"]
    model = "s4" if kw["mode"] == "dplr" else "s4d"
    options = {k: kw[k] for k in ("d_model", "d_state", "n_ssm", "dt_min", "dt_max", "dt_transform", "activation",
                                  "l_max", "mode", "init")}
    if "disc" in kw:
        options["disc"] = kw["disc"]
    net = build(model, spec_for(golden, d_input=kw["d_model"]), n_layers=1, dropout=0.0,
                bidirectional=kw.get("bidirectional", False), **options)
    return net.blocks[0].mixer.double().eval()


def sgconv_layer(golden: Golden) -> nn.Module:
    kw = golden.meta["kwargs"]
    options = {k: kw[k] for k in ("d_model", "l_max", "kernel_dim", "mode", "activation", "decay_min", "decay_max")}
    net = build("sgconv", spec_for(golden, d_input=kw["d_model"]), n_layers=1, dropout=0.0,
                init_scale=kw.get("init_scale", 0), bidirectional=kw.get("bidirectional", False),
                final_act=kw["postact"], **options)
    block = net.blocks[0]
    # Published GConv = our layer followed by the block's output linear (LinearActivation with postact).
    return nn.ModuleDict({"layer": block.mixer, "output_linear": block.channel_mixer}).double().eval()


SSM_GOLDENS = ["s4_dplr", "s4_dplr_bidirectional", "s4d_zoh", "s4d_bilinear_bidirectional"]
SGCONV_GOLDENS = ["sgconv_cat", "sgconv_sum_learnable_bidirectional"]


def conv_module(name: str) -> tuple[Golden, nn.Module, dict[str, str]]:
    """The golden file, our module loaded with its tensors, published parameter name -> ours."""
    golden = Golden.load(name)
    sgconv = name.startswith("sgconv")
    module = sgconv_layer(golden) if sgconv else ssm_layer(golden)
    return golden, module, load_published(module, golden, SGCONV if sgconv else SSM)


def conv_forward_backward(golden: Golden, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(module, nn.ModuleDict):  # SGConv: the layer, then the output linear
        call: Callable[[torch.Tensor], torch.Tensor] = lambda v: module["output_linear"](module["layer"](v))  # noqa: E731
    else:
        call = module
    x = torch.from_numpy(golden.inputs["x"]).requires_grad_()
    return forward_backward(call, x, golden), x


@pytest.mark.parametrize("name", SSM_GOLDENS + SGCONV_GOLDENS)
def test_conv_layer(name: str) -> None:
    golden, module, names = conv_module(name)
    out, x = conv_forward_backward(golden, module)
    check(out, golden.output, "output")
    check(x.grad, golden.grad_inputs["x"], "input gradient")
    check_gradients(module, golden, names)


@pytest.mark.parametrize("name", SSM_GOLDENS + SGCONV_GOLDENS)
def test_conv_kernel(name: str) -> None:
    golden, module, _ = conv_module(name)
    layer = module["layer"] if isinstance(module, nn.ModuleDict) else module
    with torch.no_grad():
        check(layer.kernel(golden.meta["seq_len"]), golden.kernel, "kernel")


# ----------------------------------------------------------------------------------------------------------
# WavSpA: EvanZhuang/wavspa (JAX/Flax), the transforms and their inverses, and WavspaBlock


WAVSPA_RTOL = 1e-11  # float64 on both sides; the differences measured are below 3e-15 of each tensor's scale


def check_wavspa(actual: torch.Tensor | np.ndarray, expected: np.ndarray, what: str) -> None:
    check(actual, expected, what, rtol=WAVSPA_RTOL)


def load_sections(name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A transform golden file: its arrays (keys `analysis/...`, `synthesis/...`, `param/...`) and meta."""
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    return arrays, json.loads(str(arrays.pop("meta")))


def section(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}


def numbered(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Bands stored under 0, 1, ... (published order [A_J, D_J, ..., D_1]) as a list."""
    return [arrays[str(j)] for j in range(len(arrays))]


Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class WaveletTransform:
    """Our analysis and synthesis called with the published parameters (published name -> our argument)."""

    analysis: Callable[[torch.Tensor, Params, int], list[torch.Tensor]]
    synthesis: Callable[[list[torch.Tensor], Params], torch.Tensor]


# Published wavedec_learn/waverec_learn take the filters [wlen, D] (`adawave`, or the vmapped
# parametrized_wavelet of `thetas`); liftdec_learn/liftrec_learn take (adawave_est, adawave_pred).
WAVELET_TRANSFORMS = {
    "ada": WaveletTransform(lambda x, p, levels: wavedec(x, p["adawave"], levels),
                            lambda bands, p: waverec(bands, p["adawave"])),
    "ortho": WaveletTransform(lambda x, p, levels: wavedec(x, ortho_filter(p["thetas"]), levels),
                              lambda bands, p: waverec(bands, ortho_filter(p["thetas"]))),
    "lift": WaveletTransform(lambda x, p, levels: liftdec(x, levels), lambda bands, p: liftrec(bands)),
    "adalift": WaveletTransform(lambda x, p, levels: liftdec_learn(x, p["adawave_est"], p["adawave_pred"], levels),
                                lambda bands, p: liftrec_learn(bands, p["adawave_est"], p["adawave_pred"])),
}
WAVSPA_TRANSFORM_GOLDENS = ["wavspa_ada", "wavspa_ada_short", "wavspa_ada_haar", "wavspa_ortho", "wavspa_lift",
                            "wavspa_adalift"]


def exact_gradients(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(input gradients, parameter gradients) of a golden section to compare ours with: the forward-mode ones
    (`fwd_grad_input/`, `fwd_grad/`) where the file has them, i.e. where the published reverse-mode gradient is
    not the derivative of the published forward pass (the fixed lifting: its out-of-range neighbour index is
    clamped in the forward pass and dropped by the transposed gather, see README.md), else the reverse-mode
    ones. Where both are present they must differ: the file pins that published quirk."""
    reverse = section(arrays, "grad_input/"), section(arrays, "grad/")
    forward = section(arrays, "fwd_grad_input/"), section(arrays, "fwd_grad/")
    if not forward[0]:
        return reverse
    assert any(not np.allclose(forward[0][k], reverse[0][k], rtol=1e-6) for k in forward[0])
    return forward


def published_params(arrays: dict[str, np.ndarray]) -> Params:
    return {k: torch.from_numpy(v).requires_grad_() for k, v in section(arrays, "param/").items()}


def check_param_grads(params: Params, expected: dict[str, np.ndarray]) -> None:
    assert set(expected) == set(params)
    for name, p in params.items():
        assert p.grad is not None, f"no gradient reached {name}"
        check_wavspa(p.grad, expected[name], f"gradient of {name}")


@pytest.mark.parametrize("name", WAVSPA_TRANSFORM_GOLDENS)
def test_wavspa_analysis(name: str) -> None:
    arrays, meta = load_sections(name)
    golden = section(arrays, "analysis/")
    params = published_params(arrays)
    x = torch.from_numpy(golden["input/x"]).requires_grad_()
    bands = WAVELET_TRANSFORMS[meta["kind"]].analysis(x, params, meta["levels"])
    expected, cotangents = numbered(section(golden, "output/")), numbered(section(golden, "cotangent/"))
    assert len(bands) == len(expected) == meta["levels"] + 1
    sum((band * torch.from_numpy(c)).sum() for band, c in zip(bands, cotangents, strict=True)).backward()
    for j, (band, want) in enumerate(zip(bands, expected, strict=True)):
        check_wavspa(band, want, f"band {j}")
    grad_inputs, grads = exact_gradients(golden)
    check_wavspa(x.grad, grad_inputs["x"], "input gradient")
    check_param_grads(params, grads)


@pytest.mark.parametrize("name", WAVSPA_TRANSFORM_GOLDENS)
def test_wavspa_synthesis(name: str) -> None:
    """The inverse on independent random bands (not the analysis output), so it is pinned on its own."""
    arrays, meta = load_sections(name)
    golden = section(arrays, "synthesis/")
    params = published_params(arrays)
    bands = [torch.from_numpy(b).requires_grad_() for b in numbered(section(golden, "input/"))]
    out = WAVELET_TRANSFORMS[meta["kind"]].synthesis(bands, params)
    (out * torch.from_numpy(golden["cotangent"])).sum().backward()
    check_wavspa(out, golden["output"], "reconstruction")
    grad_inputs, grads = exact_gradients(golden)
    for j, (band, want) in enumerate(zip(bands, numbered(grad_inputs), strict=True)):
        check_wavspa(band.grad, want, f"gradient of band {j}")
    check_param_grads(params, grads)


def test_wavspa_ortho_filter() -> None:
    """Published vmap(parametrized_wavelet) over features: the filters [wlen, D] from the angles."""
    arrays, _ = load_sections("wavspa_ortho")
    check_wavspa(ortho_filter(torch.from_numpy(arrays["param/thetas"])), arrays["filter"], "filter")


# WavspaBlock(wavelet=...) -> our `wavelet`: 'db*' = free filters with db init, the rest by substring as
# published; model_type -> our `attention`.
WAVSPA_WAVELETS = {"db2": "ada", "ortho": "ortho", "lift": "lift", "adalift": "adalift"}
WAVSPA_ATTENTIONS = {"transformer": "softmax", "linear_attention": "linear"}
# wavelet='lift' creates (adawave_est, adawave_pred) but never uses them (published gradients are zero).
WAVSPA_UNUSED = {"lift": ("adawave_est", "adawave_pred")}
FLAX_PROJECTIONS = (("query", "q"), ("key", "k"), ("value", "v"), ("out", "out"))
WAVSPA_BLOCK = Mapping(rules=[
    (r"adawave", "mixer.filters"),
    (r"thetas", "mixer.thetas"),
    (r"adawave_est", "mixer.w_est"),
    (r"adawave_pred", "mixer.w_pred"),
    (r"LayerNorm_0/scale", "norm.norm.weight"),
    (r"LayerNorm_0/bias", "norm.norm.bias"),
    *[(rf"(?:Self|Linear)Attention_(\d+)/{flax}/{leaf}", rf"mixer.attn.\1.{ours}.{torch_leaf}")
      for flax, ours in FLAX_PROJECTIONS for leaf, torch_leaf in (("kernel", "weight"), ("bias", "bias"))],
    *[(rf"MlpBlock_0/Dense_{i}/{leaf}", rf"mlp.0.net.{j}.{torch_leaf}")
      for i, j in ((0, 0), (1, 3)) for leaf, torch_leaf in (("kernel", "weight"), ("bias", "bias"))],
])
WAVSPA_BLOCK_GOLDENS = ["wavspa_block_ada", "wavspa_block_ortho", "wavspa_block_lift", "wavspa_block_adalift_linear"]


def flax_as_ours(value: np.ndarray, target: torch.Tensor, name: str) -> torch.Tensor:
    """A Flax tensor in our layout: Dense/DenseGeneral kernels are (in..., out...) where a torch Linear weight is
    (out, in); q/k/v kernels (D, heads, head_dim), out (heads, head_dim, D), q/k/v biases (heads, head_dim)."""
    assert value.size == target.numel(), f"{name}: published {value.shape}, ours {tuple(target.shape)}"
    if name.endswith("/kernel"):
        return torch.from_numpy(value.reshape(target.shape[1], target.shape[0]).T.copy())
    return torch.from_numpy(value).reshape(target.shape)


@pytest.mark.parametrize("name", WAVSPA_BLOCK_GOLDENS)
def test_wavspa_block(name: str) -> None:
    golden = Golden.load(name)
    kw = golden.meta["kwargs"]
    model = build("wavspa", spec_for(golden, d_input=kw["wav_dim"]), d_model=kw["wav_dim"], n_layers=1,
                  n_heads=kw["num_heads"], qkv_dim=kw["qkv_dim"], d_ff=kw["mlp_dim"],
                  wavelet=WAVSPA_WAVELETS[kw["wavelet"]], wlen=kw["wlen"], levels=kw["level"],
                  attention=WAVSPA_ATTENTIONS[kw["model_type"]], dropout=0.0, attn_dropout=0.0)
    block = model.blocks[0].double().eval()
    unused = WAVSPA_UNUSED.get(kw["wavelet"], ())
    for published in unused:
        assert not golden.grads[published].any(), f"{published} is unused by the published block"
    names = {published: WAVSPA_BLOCK.ours(published) for published in golden.params if published not in unused}
    state = block.state_dict()
    assert len(set(names.values())) == len(names) and set(names.values()) == set(state), (
        f"not one-to-one: ours {sorted(state)}, mapped {sorted(names.values())}")
    block.load_state_dict({ours: flax_as_ours(golden.params[p], state[ours], p) for p, ours in names.items()})

    x = torch.from_numpy(golden.inputs["x"]).requires_grad_()
    lengths = torch.from_numpy(golden.inputs["lengths"])
    out = forward_backward(lambda v: block(v, lengths), x, golden)
    check_wavspa(out, golden.output, "output")
    grad_inputs, grads = exact_gradients(load_sections(name)[0])
    check_wavspa(x.grad, grad_inputs["x"], "input gradient")
    ours = dict(block.named_parameters())
    for published, our_name in names.items():
        assert ours[our_name].grad is not None, f"no gradient reached {our_name}"
        check_wavspa(ours[our_name].grad, flax_as_ours(grads[published], ours[our_name], published).numpy(),
                     f"gradient of {published}")
