"""torch.export and torch.compile (CPU, inductor) on a converted VAE, its encoder and its decoder."""

from __future__ import annotations

import pytest
import torch

import fxvae
from fxvae.analysis.outputs import FlatOutputs, tensors
from tests.zoo import ZOO, build

BY_NAME = {e.name: e for e in ZOO}


def _parts(name: str) -> dict[str, tuple[torch.nn.Module, tuple[object, ...], tuple[object, ...]]]:
    entry = BY_NAME[name]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4))
    encoder, decoder = fxvae.split(vae)
    z = (torch.randn(4, *entry.latent_shape), *entry.inputs(4)[1:])
    z7 = (torch.randn(7, *entry.latent_shape), *entry.inputs(7)[1:])
    return {
        "vae": (vae.eval(), entry.inputs(4), entry.inputs(7)),
        "encoder": (encoder.eval(), entry.inputs(4), entry.inputs(7)),
        "decoder": (decoder.eval(), z, z7),
    }


@pytest.mark.parametrize("model", ["conditional", "shape_control_flow"])
@pytest.mark.parametrize("part", ["vae", "encoder", "decoder"])
def test_torch_export_with_a_dynamic_batch_matches_eager(model: str, part: str) -> None:
    module, example, other = _parts(model)[part]
    batch = torch.export.Dim("batch")
    dynamic = (tuple({0: batch} for _ in example),)
    # torch.export refuses record outputs (dataclasses): export the flattening wrapper, as export_onnx does.
    program = torch.export.export(FlatOutputs(module), example, dynamic_shapes=dynamic, strict=False)
    with torch.no_grad():
        got, expected = program.module()(*other), tensors(module(*other))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


def test_compiled_vae_trains_with_the_kl_of_its_latest_forward() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    vae, kl = fxvae.convert(build(entry), entry.inputs(4))
    compiled = torch.compile(vae.train(), backend="inductor", dynamic=False)
    first, second = entry.inputs(4)[0], entry.inputs(4)[0]
    compiled(first)
    eager_out = vae(second)
    eager_kl, eager_mu = kl(), fxvae.posterior(vae).mu
    out = compiled(second)
    loss = torch.nn.functional.mse_loss(out, second) + kl()
    loss.backward()
    # A stale posterior (the first input's) would give another KL and mu.
    torch.testing.assert_close(kl(), eager_kl)
    torch.testing.assert_close(fxvae.posterior(vae).mu, eager_mu)
    assert out.shape == eager_out.shape
    assert vae.get_submodule(fxvae.conversion(vae).log_sigma_head).weight.grad is not None


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_compiled_encoder_and_decoder_match_eager(part: str) -> None:
    module, example, _ = _parts("mlp_sigmoid")[part]
    compiled = torch.compile(module, backend="inductor", dynamic=False)
    with torch.no_grad():
        for g, e in zip(tensors(compiled(*example)), tensors(module(*example)), strict=True):
            torch.testing.assert_close(g, e)
