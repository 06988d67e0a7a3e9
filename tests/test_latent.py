"""The reparameterisation, the posterior and the KL module the conversion hands back."""

from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

import fxvae
from fxvae.latents.gaussian import Reparameterize


def test_eval_mode_returns_mu_itself() -> None:
    mu, log_sigma = torch.randn(3, 4), torch.randn(3, 4)
    assert Reparameterize().eval()(mu, log_sigma) is mu


def test_train_mode_draws_mu_plus_sigma_times_noise() -> None:
    mu, log_sigma = torch.zeros(20000, 1), torch.full((20000, 1), 1.0)
    z = Reparameterize().train()(mu, log_sigma)
    assert abs(z.std().item() - torch.e) < 0.1


def test_train_mode_draws_exactly_mu_plus_sigma_times_the_generators_noise() -> None:
    mu, log_sigma = torch.randn(3, 5), torch.randn(3, 5)
    torch.manual_seed(7)
    z = Reparameterize().train()(mu, log_sigma)
    torch.manual_seed(7)
    torch.testing.assert_close(z, mu + torch.exp(log_sigma) * torch.randn(3, 5), rtol=1e-6, atol=1e-6)


def test_a_log_sigma_function_reads_the_features_after_mu() -> None:
    head = torch.nn.Linear(4, 2)
    rep = Reparameterize(head).eval()
    features = torch.randn(3, 4)
    mu = torch.randn(3, 2)
    assert rep(mu, features) is mu
    torch.testing.assert_close(rep.posterior().log_sigma, head(features))


def test_kl_eval_leaves_the_vae_sampling() -> None:
    vae, kl = fxvae.convert(torch.nn.Sequential(torch.nn.Linear(6, 2), torch.nn.Linear(2, 6)), torch.randn(3, 6))
    vae.train()
    kl.eval()
    kl.to(torch.float64)
    assert vae.training and all(m.training for m in vae.modules())
    assert vae.get_parameter("log_sigma_head.weight").dtype == torch.float32
    assert list(kl.children()) == []


def test_kl_of_given_tensors_matches_torch_distributions() -> None:
    mu, log_sigma = torch.randn(5, 3, 2, dtype=torch.float64), torch.randn(5, 3, 2, dtype=torch.float64)
    kl = fxvae.KLDivergence(Reparameterize())
    expected = kl_divergence(Normal(mu, log_sigma.exp()), Normal(0.0, 1.0)).flatten(1).sum(1).mean()
    torch.testing.assert_close(kl(mu, log_sigma), expected)


def test_the_posterior_samples_with_a_generator() -> None:
    post = fxvae.DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    a = post.sample(torch.Generator().manual_seed(0))
    b = post.sample(torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.equal(post.mode(), post.mu)


def test_posterior_looks_through_a_compile_or_ddp_style_wrapper() -> None:
    vae, _ = fxvae.convert(torch.nn.Sequential(torch.nn.Linear(6, 2), torch.nn.Linear(2, 6)), torch.randn(3, 6))
    wrapper = torch.nn.Module()
    wrapper.module = vae
    vae(torch.randn(3, 6))
    assert fxvae.posterior(wrapper).mu.shape == (3, 2)
