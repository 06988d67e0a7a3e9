"""fxvae.split and fxvae.sample on every autoencoder of the zoo."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
from torch import nn

import fxvae
from tests.helpers import leaves, with_none
from tests.zoo import ZOO, ZooEntry, build

BATCH = 4
BY_NAME = {e.name: e for e in ZOO}


@pytest.fixture(scope="module")
def cache() -> dict[str, fx.GraphModule]:
    return {}


def _vae(entry: ZooEntry, cache: dict[str, fx.GraphModule]) -> fx.GraphModule:
    if entry.name not in cache:
        cache[entry.name] = fxvae.convert(build(entry), entry.inputs(BATCH))[0].eval()
    return cache[entry.name]


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_decoder_of_mu_reproduces_the_vaes_eval_output(entry: ZooEntry, cache) -> None:
    vae = _vae(entry, cache)
    encoder, decoder = fxvae.split(vae)
    args = entry.inputs(BATCH + 3)
    with torch.no_grad():
        expected = vae(*args)
        mu, _ = encoder(*args)
        got = decoder(mu, *args[1:])
    assert type(got) is type(expected)
    pairs = [(g, e) for g, e in zip(with_none(got), with_none(expected), strict=True) if g is not None]
    assert pairs and all(torch.equal(g, e) for g, e in pairs)


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_encoder_returns_the_posteriors_mu_and_log_sigma(entry: ZooEntry, cache) -> None:
    vae = _vae(entry, cache)
    encoder, _ = fxvae.split(vae)
    args = entry.inputs(BATCH)
    with torch.no_grad():
        vae(*args)
        mu, log_sigma = encoder(*args)
    post = fxvae.posterior(vae)
    assert torch.equal(mu, post.mu) and torch.equal(log_sigma, post.log_sigma)
    assert mu.shape == (BATCH, *entry.latent_shape)


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_decoder_reads_no_data_input_and_takes_the_batch_from_z(entry: ZooEntry, cache) -> None:
    _, decoder = fxvae.split(_vae(entry, cache))
    names = [n.name for n in decoder.graph.find_nodes(op="placeholder")]
    extra = build(entry).forward.__code__.co_varnames[2 : 1 + len(entry.inputs(1))]
    assert names == ["z", *extra]
    with torch.no_grad():
        out = decoder(torch.randn(5, *entry.latent_shape), *entry.inputs(5)[1:])
    assert leaves(out)[0].shape[0] == 5


def test_shape_reads_of_the_data_input_become_per_sample_constants() -> None:
    vae = fxvae.convert(build(BY_NAME["recurrent"]), torch.randn(2, 6, 3))[0]
    _, decoder = fxvae.split(vae)
    assert "(6, 3)" in decoder.code
    assert decoder.eval()(torch.randn(9, 4)).shape == (9, 6, 3)


def test_export_path_batch_size_reads_come_from_z(cache) -> None:
    _, decoder = fxvae.split(_vae(BY_NAME["shape_control_flow"], cache))
    assert "sym_size.int(z, 0)" in decoder.code
    assert decoder(torch.randn(3, 6)).recon.shape == (3, 24)


def test_side_output_that_is_the_latent_returns_z(cache) -> None:
    _, decoder = fxvae.split(_vae(BY_NAME["tuple_output"], cache))
    z = torch.randn(2, 4)
    assert decoder(z)[1] is z


def test_side_output_computed_from_the_input_values_is_none(cache) -> None:
    _, decoder = fxvae.split(_vae(BY_NAME["dict_output"], cache))
    out = decoder(torch.randn(2, 5))
    assert list(out) == ["recon", "z", "input_norm"] and out["input_norm"] is None


def test_decoder_that_mixes_input_values_into_the_reconstruction_is_refused() -> None:
    class Leaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.dec = nn.Linear(16, 2), nn.Linear(2, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dec(self.enc(x)) * x.std(dim=1, keepdim=True)

    with pytest.warns(UserWarning, match="bypassed"):
        vae = fxvae.convert(Leaky(), torch.randn(4, 16), bottleneck="enc")[0]
    with pytest.raises(fxvae.RewriteError, match="computed from the data input 'x'"):
        fxvae.split(vae)


def test_split_shares_parameters_but_not_the_train_flag(cache) -> None:
    vae = _vae(BY_NAME["norm_dropout"], cache)
    encoder, decoder = fxvae.split(vae)
    vae_params = {id(p) for p in vae.parameters()}
    assert {id(p) for p in (*encoder.parameters(), *decoder.parameters())} <= vae_params
    decoder.train()
    assert not vae.training and not any(m.training for m in vae.modules())


def test_sample_decodes_n_reproducible_draws_and_keeps_the_mode(cache) -> None:
    vae = _vae(BY_NAME["conditional"], cache).train()
    label = torch.arange(6) % 10
    first = fxvae.sample(vae, 6, label, generator=torch.Generator().manual_seed(0))
    second = fxvae.sample(vae, 6, label, generator=torch.Generator().manual_seed(0))
    vae.eval()
    assert first.shape == (6, 40) and torch.equal(first, second) and not first.requires_grad


def test_sample_uses_the_vaes_dtype() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    vae = fxvae.convert(build(entry).double(), entry.inputs(2)[0].double())[0]
    assert fxvae.sample(vae, 3).dtype == torch.float64


def test_split_refuses_a_module_not_made_by_convert() -> None:
    with pytest.raises(fxvae.FxvaeError, match=r"was not made by fxvae\.convert"):
        fxvae.split(fx.symbolic_trace(nn.Linear(2, 2)))
