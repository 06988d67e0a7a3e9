"""fxvae.convert on every autoencoder of the zoo: the contract of the core issue."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx

import fxvae
from tests.helpers import leaves, recon
from tests.zoo import ZOO, ZooEntry, build

BATCH = 4


@pytest.fixture(params=ZOO, ids=lambda e: e.name)
def entry(request: pytest.FixtureRequest) -> ZooEntry:
    return request.param


@pytest.fixture
def converted(entry: ZooEntry) -> tuple[ZooEntry, torch.nn.Module, fx.GraphModule, fxvae.KLDivergence]:
    model = build(entry)
    vae, kl = fxvae.convert(model, entry.inputs(BATCH))
    return entry, model, vae, kl


def test_find_bottleneck_picks_the_latent(entry: ZooEntry) -> None:
    b = fxvae.find_bottleneck(build(entry), entry.inputs(BATCH))
    assert (b.node, b.layer, b.shape, b.tracer) == (
        entry.bottleneck,
        entry.layer,
        entry.latent_shape,
        entry.tracer,
    )
    assert b.width == torch.Size(entry.latent_shape).numel()
    assert b.candidates[0].node == b.node and b.candidates[0].reason.startswith("chosen")


def test_vae_is_a_graph_module_with_the_same_output_structure(converted) -> None:
    entry, model, vae, _ = converted
    args = entry.inputs(BATCH)
    vae.eval()
    got, expected = vae(*args), model(*args)
    assert isinstance(vae, fx.GraphModule)
    assert type(got) is type(expected)
    if isinstance(expected, dict):
        assert list(got) == list(expected)


def test_eval_outputs_equal_the_autoencoders(converted) -> None:
    entry, model, vae, _ = converted
    args = entry.inputs(BATCH)
    vae.eval()
    with torch.no_grad():
        for got, expected in zip(leaves(vae(*args)), leaves(model(*args)), strict=True):
            assert (got - expected).abs().max() <= 1e-6


def test_train_mode_samples_the_latent(converted) -> None:
    entry, _model, vae, _ = converted
    args = entry.inputs(BATCH)
    vae.train()
    torch.manual_seed(1)
    first = recon(vae(*args))
    torch.manual_seed(2)
    second = recon(vae(*args))
    assert not torch.allclose(first, second)


def test_kl_after_a_forward_at_init_is_half_the_mean_squared_norm_of_mu(converted) -> None:
    entry, _, vae, kl = converted
    vae.train()
    vae(*entry.inputs(BATCH))
    mu = fxvae.posterior(vae).mu
    expected = 0.5 * mu.pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(kl(), expected)


def test_backward_of_recon_plus_kl_reaches_every_parameter(converted) -> None:
    entry, _, vae, kl = converted
    args = entry.inputs(BATCH)
    vae.train()
    out = vae(*args)
    loss = sum(t.float().pow(2).mean() for t in leaves(out) if t.is_floating_point()) + kl()
    loss.backward()
    recipe = fxvae.conversion(vae)
    assert vae.get_submodule(recipe.log_sigma_head).weight.grad.abs().sum() > 0
    unused = [name for name, p in vae.named_parameters() if p.grad is None]
    assert unused == []


def test_vae_runs_at_another_batch_size(converted) -> None:
    entry, model, vae, _ = converted
    args = entry.inputs(BATCH + 3)
    vae.eval()
    with torch.no_grad():
        torch.testing.assert_close(recon(vae(*args)), recon(model(*args)), atol=1e-6, rtol=0)


def test_heads_are_named_submodules_next_to_the_decoder(converted) -> None:
    _, _, vae, _ = converted
    recipe = fxvae.conversion(vae)
    assert isinstance(vae.get_submodule(recipe.reparameterize), fxvae.Reparameterize)
    head = vae.get_submodule(recipe.log_sigma_head)
    assert torch.count_nonzero(head.weight) == 0
    assert f"self._modules[{recipe.reparameterize!r}](" in vae.code


def test_log_sigma_init_sets_the_log_sigma_heads_bias(entry: ZooEntry) -> None:
    vae, _ = fxvae.convert(build(entry), entry.inputs(BATCH), log_sigma_init=-3.0)
    vae.eval()
    vae(*entry.inputs(BATCH))
    post = fxvae.posterior(vae)
    assert post.log_sigma.shape == post.mu.shape
    torch.testing.assert_close(post.log_sigma, torch.full_like(post.mu, -3.0))


def test_convert_leaves_the_model_unchanged(entry: ZooEntry) -> None:
    model = build(entry).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vae, _kl = fxvae.convert(model, entry.inputs(BATCH))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    ae_params = {id(p) for p in model.parameters()}
    assert not ae_params & {id(p) for p in vae.parameters()}
    model.eval()(*entry.inputs(BATCH))


def test_training_the_vae_leaves_the_autoencoder_as_it_was(entry: ZooEntry) -> None:
    model = build(entry)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vae, kl = fxvae.convert(model, entry.inputs(BATCH))
    vae.train()
    opt = torch.optim.SGD(vae.parameters(), lr=0.1)
    loss = recon(vae(*entry.inputs(BATCH))).pow(2).mean() + kl()
    loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_copy_false_shares_the_autoencoders_parameters(entry: ZooEntry) -> None:
    model = build(entry)
    vae, _ = fxvae.convert(model, entry.inputs(BATCH), copy=False)
    recipe = fxvae.conversion(vae)
    new = {id(p) for p in vae.get_submodule(recipe.log_sigma_head).parameters()}
    vae_params = {id(p) for p in vae.parameters()} - new
    assert vae_params <= {id(p) for p in model.parameters()}


def test_the_vae_starts_in_the_models_mode(entry: ZooEntry) -> None:
    vae, _ = fxvae.convert(build(entry).train(), entry.inputs(BATCH))
    assert vae.training
    vae, _ = fxvae.convert(build(entry).eval(), entry.inputs(BATCH))
    assert not vae.training


def test_load_ae_state_dict_maps_the_layer_onto_the_mu_head(entry: ZooEntry) -> None:
    vae, _ = fxvae.convert(build(entry, seed=0), entry.inputs(BATCH))
    trained = build(entry, seed=1)
    fxvae.load_ae_state_dict(vae, trained.state_dict())
    args = entry.inputs(BATCH)
    vae.eval()
    with torch.no_grad():
        torch.testing.assert_close(recon(vae(*args)), recon(trained(*args)), atol=1e-6, rtol=0)
