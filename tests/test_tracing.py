"""Tracing: which tracer runs, and what the captured module keeps of the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fxvae
from fxvae.capture.tracing import trace
from tests.zoo import ZOO, build

EXPORTED = next(e for e in ZOO if e.tracer == "export")


class NumpyShape(nn.Module):
    """A numpy integer in a reshape stops symbolic_trace, not torch.export."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(12, 3)
        self.dec = nn.Linear(3, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], np.prod((3, 4)))
        return self.dec(self.enc(flat)).reshape(x.shape)


def test_symbolic_trace_is_used_where_it_works() -> None:
    traced = trace(build(ZOO[0]), ZOO[0].inputs(2))
    assert traced.tracer == "fx" and traced.fx_failure is None


def test_the_export_fallback_records_why_fx_failed() -> None:
    vae, _ = fxvae.convert(build(EXPORTED), EXPORTED.inputs(3))
    recipe = fxvae.conversion(vae)
    assert recipe.tracer == "export" and "control flow" in recipe.fx_failure
    assert recipe.dynamic_batch


def test_an_exported_vae_keeps_the_models_input_names_and_state_dict_keys() -> None:
    model = build(EXPORTED)
    vae, _ = fxvae.convert(model, EXPORTED.inputs(3))
    assert [n.name for n in vae.graph.nodes if n.op == "placeholder"] == ["x"]
    moved = fxvae.conversion(vae).key_map
    assert {moved.get(k, k) for k in model.state_dict()} <= set(vae.state_dict())


def test_exported_dropout_and_batch_norm_follow_train_and_eval() -> None:
    vae, _ = fxvae.convert(build(EXPORTED), EXPORTED.inputs(3), log_sigma_init=-30.0)
    x = EXPORTED.inputs(6)[0]
    running_mean = vae.get_buffer("enc.1.running_mean").clone()
    vae.eval()
    assert torch.equal(vae(x).recon, vae(x).recon)
    assert torch.equal(vae.get_buffer("enc.1.running_mean"), running_mean)
    vae.train()
    torch.manual_seed(0)
    first = vae(x).recon
    assert not torch.equal(first, vae(x).recon)  # dropout is live, the latent noise is ~0
    assert not torch.equal(vae.get_buffer("enc.1.running_mean"), running_mean)


def test_a_batch_of_one_still_gives_a_dynamic_batch() -> None:
    model = NumpyShape().eval()
    vae, _ = fxvae.convert(model, torch.randn(1, 3, 4))
    assert fxvae.conversion(vae).tracer == "export"
    vae.eval()
    x = torch.randn(5, 3, 4)
    torch.testing.assert_close(vae(x), model(x), atol=1e-6, rtol=0)


def test_the_noise_is_drawn_by_the_graph_on_every_call() -> None:
    vae, _ = fxvae.convert(build(EXPORTED), EXPORTED.inputs(3))
    vae.train()
    x = EXPORTED.inputs(3)[0]
    vae(x)
    first = fxvae.posterior(vae).mu
    torch.manual_seed(3)
    a = vae(x).latent
    torch.manual_seed(4)
    b = vae(x).latent
    assert first.shape == a.shape and not torch.equal(a, b)


def test_a_model_that_fixes_its_batch_size_warns_and_records_it() -> None:
    class FixedBatch(NumpyShape):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(4, np.prod((3, 4)))
            return self.dec(self.enc(flat)).reshape(4, 3, 4)

    with pytest.warns(UserWarning, match="runs only at batch size 4"):
        vae, _ = fxvae.convert(FixedBatch().eval(), torch.randn(4, 3, 4))
    assert not fxvae.conversion(vae).dynamic_batch
