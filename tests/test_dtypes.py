"""The dtype and device matrix: eval is exact in the model's dtype, the KL accumulates in float32 for
half precision (float64 stays float64), channels_last inputs work, and CUDA does the same as CPU."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import fxvae
from tests.helpers import leaves
from tests.zoo import ZOO, ValueControlFlow, ZooEntry, build

BY_NAME = {e.name: e for e in ZOO}
HOOKS_TIER = ZooEntry("value_control_flow", ValueControlFlow, lambda b: (torch.randn(b, 8),), "enc", "enc", (2,))
ENTRIES = [
    *(BY_NAME[n] for n in ("mlp_sigmoid", "conv_latent", "shape_control_flow", "tied_weights", "token_attention")),
    HOOKS_TIER,
]
"""One model per capture tier (fx, export, hooks) and per kind of layer that seeds the mu head."""
KL_ENTRIES = [BY_NAME["mlp_sigmoid"], BY_NAME["conv_latent"], HOOKS_TIER]
"""The KL's dtype rule does not depend on the tier: a fast model of each latent kind is enough."""
DTYPES = [torch.float64, torch.float16, torch.bfloat16]
KL_DTYPE = {torch.float64: torch.float64, torch.float16: torch.float32, torch.bfloat16: torch.float32}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cast(args: tuple[object, ...], dtype: torch.dtype, device: str = "cpu") -> tuple[object, ...]:
    return tuple(
        a.to(device=device, dtype=dtype if a.is_floating_point() else a.dtype) if isinstance(a, torch.Tensor) else a
        for a in args
    )


Converted = tuple[nn.Module, torch.fx.GraphModule, fxvae.KLDivergence, tuple[object, ...]]


def _convert(entry: ZooEntry, dtype: torch.dtype, device: str = "cpu") -> Converted:
    ae = build(entry).to(device=device, dtype=dtype)
    args = _cast(entry.inputs(4), dtype, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the hooks tier says why fx and export could not capture the model
        vae, kl = fxvae.convert(ae, args)
    return ae, vae, kl, args


def _kl_oracle(post: fxvae.DiagonalGaussian) -> torch.Tensor:
    """The KL in float64 from the posterior's own tensors: what an exact float32 accumulation approaches."""
    mu, log_sigma = post.mu.double(), post.log_sigma.double()
    per_element = 0.5 * (mu.square() + torch.exp(2 * log_sigma) - 2 * log_sigma - 1)
    return per_element.sum() / mu.shape[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_eval_is_exact_in_the_models_dtype(entry: ZooEntry, dtype: torch.dtype) -> None:
    ae, vae, _, args = _convert(entry, dtype)
    with torch.no_grad():
        got, want = leaves(vae.eval()(*args)), leaves(ae(*args))
    assert all(torch.equal(g, w) and g.dtype == w.dtype for g, w in zip(got, want, strict=True))
    assert {p.dtype for p in vae.parameters()} == {dtype}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("entry", KL_ENTRIES, ids=lambda e: e.name)
def test_the_kl_accumulates_in_float32_for_half_precision_and_float64_for_float64(
    entry: ZooEntry, dtype: torch.dtype
) -> None:
    _, vae, kl, args = _convert(entry, dtype)
    out = leaves(vae.train()(*args))
    value = kl()
    assert value.dtype == KL_DTYPE[dtype]
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(value.double(), _kl_oracle(fxvae.posterior(vae)), rtol=rtol, atol=0.0)
    (sum(t.float().square().mean() for t in out if t.is_floating_point()) + value).backward()
    # Gradients keep the parameters' dtype, so an optimizer steps them in place as usual.
    assert all(p.grad is None or p.grad.dtype == dtype for p in vae.parameters())
    head = vae.get_submodule(fxvae.conversion(vae).log_sigma_head)
    assert head.weight.grad is not None


CONV_ENTRIES = [BY_NAME[n] for n in ("conv_latent", "pooled_latent", "squeeze_excite", "conv_flat_linear")]


@pytest.mark.parametrize("model_layout", ["contiguous_model", "channels_last_model"])
@pytest.mark.parametrize("entry", CONV_ENTRIES, ids=lambda e: e.name)
def test_channels_last_inputs_convert_and_evaluate_exactly(entry: ZooEntry, model_layout: str) -> None:
    ae = build(entry)
    if model_layout == "channels_last_model":
        ae = ae.to(memory_format=torch.channels_last)
    x = entry.inputs(4)[0].to(memory_format=torch.channels_last)
    vae, kl = fxvae.convert(ae, x)
    with torch.no_grad():
        assert torch.equal(vae.eval()(x), ae(x))
        # The VAE does not depend on the layout it was converted with.
        assert torch.equal(vae(x.contiguous()), ae(x.contiguous()))
    vae.train()(x)
    post = fxvae.posterior(vae)
    expected = fxvae.kl_divergence(post.mu.contiguous(), post.log_sigma.contiguous())
    torch.testing.assert_close(kl(), expected, rtol=1e-6, atol=0.0)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, *DTYPES], ids=str)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_on_cuda_eval_is_exact_and_a_train_step_and_the_kl_stay_on_the_device(
    entry: ZooEntry, dtype: torch.dtype
) -> None:
    ae, vae, kl, args = _convert(entry, dtype, "cuda")
    assert all(t.device.type == "cuda" for t in vae.state_dict().values())
    with torch.no_grad():
        got, want = leaves(vae.eval()(*args)), leaves(ae(*args))
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    opt = torch.optim.SGD(vae.parameters(), lr=1e-3)
    out = leaves(vae.train()(*args))
    value = kl()
    assert value.device.type == "cuda" and value.dtype == KL_DTYPE.get(dtype, torch.float32)
    (sum(t.float().square().mean() for t in out if t.is_floating_point()) + value).backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in vae.parameters())


@CUDA
def test_a_cpu_converted_vae_moved_to_cuda_keeps_its_posterior_on_cuda() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    vae, kl = fxvae.convert(build(entry), entry.inputs(4))
    vae.cuda().train()(entry.inputs(4)[0].cuda())
    assert kl().device.type == "cuda"
    assert fxvae.posterior(vae).log_sigma.device.type == "cuda"
