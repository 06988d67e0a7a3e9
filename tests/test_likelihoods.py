"""The likelihoods against torch.distributions, their checks, and the fit of an "optimal" scale."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import fxvae
from fxvae.measure import likelihoods
from fxvae.measure.likelihoods import Bernoulli, Gaussian, Laplace, LogProb

RECON = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0))
X = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(1))


def _summed(distribution: torch.distributions.Distribution, x: torch.Tensor) -> torch.Tensor:
    return distribution.log_prob(x).flatten(1).sum(1)


def test_bernoulli_logits_is_torch_bernoulli_on_binary_targets() -> None:
    binary = (X > 0).float()
    expected = _summed(torch.distributions.Bernoulli(logits=RECON), binary)
    torch.testing.assert_close(Bernoulli().log_prob(RECON, binary), expected)


def test_bernoulli_on_soft_targets_is_the_cross_entropy() -> None:
    soft = torch.sigmoid(X)
    p = torch.sigmoid(RECON)
    expected = (soft * torch.log(p) + (1 - soft) * torch.log1p(-p)).flatten(1).sum(1)
    torch.testing.assert_close(Bernoulli().log_prob(RECON, soft), expected)


def test_bernoulli_probabilities_is_torch_bernoulli_with_probs() -> None:
    binary = (X > 0).float()
    p = torch.sigmoid(RECON)
    expected = _summed(torch.distributions.Bernoulli(probs=p), binary)
    torch.testing.assert_close(Bernoulli(logits=False).log_prob(p, binary), expected)


@pytest.mark.parametrize("sigma", [0.3, 2.0])
def test_gaussian_is_torch_normal_summed_over_dimensions(sigma: float) -> None:
    expected = _summed(torch.distributions.Normal(RECON, sigma), X)
    torch.testing.assert_close(Gaussian(sigma).log_prob(RECON, X), expected)


def test_a_per_dimension_sigma_broadcasts_against_each_sample() -> None:
    sigma = torch.rand(3, 4) + 0.1
    expected = _summed(torch.distributions.Normal(RECON, sigma), X)
    torch.testing.assert_close(Gaussian(sigma).log_prob(RECON, X), expected)


def test_laplace_is_torch_laplace_summed_over_dimensions() -> None:
    expected = _summed(torch.distributions.Laplace(RECON, 0.7), X)
    torch.testing.assert_close(Laplace(0.7).log_prob(RECON, X), expected)


@pytest.mark.parametrize(("cls", "statistic"), [(Gaussian, lambda e: e.pow(2).mean().sqrt()), (Laplace, torch.mean)])
def test_the_optimal_scale_fitted_to_data_maximises_the_likelihood(cls: type, statistic: object) -> None:
    recon = 0.8 * X + 0.1 * RECON
    fitted = likelihoods.fit(cls(), [(recon, X)])
    best = statistic((X - recon).abs()).item()
    assert fitted.scale == pytest.approx(best, rel=1e-6)
    total = fitted.log_prob(recon, X).sum()
    for nearby in (best * 0.9, best * 1.1):
        assert cls(nearby).log_prob(recon, X).sum() < total
    assert "optimal" in fitted.describe()


def test_the_optimal_gaussian_trains_with_its_batchs_detached_error() -> None:
    recon = RECON.clone().requires_grad_(True)
    loss = Gaussian().nll(recon, X)
    sigma = (X - RECON).pow(2).mean().sqrt()
    torch.testing.assert_close(loss, -_summed(torch.distributions.Normal(RECON, sigma), X).mean())
    loss.backward()
    torch.testing.assert_close(recon.grad, -(X - RECON) / sigma**2 / len(X))


def test_a_callable_is_a_likelihood_and_its_result_is_checked() -> None:
    lik = likelihoods.get(lambda recon, x: -(recon - x).pow(2).flatten(1).sum(1))
    assert isinstance(lik, LogProb)
    torch.testing.assert_close(lik.log_prob(RECON, X), -(RECON - X).pow(2).flatten(1).sum(1))
    with pytest.raises(fxvae.InputError, match="one log-probability per sample"):
        likelihoods.get(lambda recon, x: recon.sum()).check(RECON, X)


@pytest.mark.parametrize(
    ("likelihood", "recon", "x", "message"),
    [
        ("bernoulli", RECON, X, r"needs targets in \[0, 1\]"),
        ("bernoulli-probs", RECON, torch.rand(5, 3, 4), "needs probabilities"),
        ("gaussian", RECON, X[:, :2], "which differ"),
    ],
    ids=["bernoulli_targets", "probs_on_logits", "shape"],
)
def test_a_likelihood_that_does_not_fit_the_output_is_an_input_error(
    likelihood: str, recon: torch.Tensor, x: torch.Tensor, message: str
) -> None:
    with pytest.raises(fxvae.InputError, match=message):
        likelihoods.get(likelihood).check(recon, x)


def test_logits_that_all_lie_in_the_unit_interval_warn_towards_probabilities() -> None:
    with pytest.warns(UserWarning, match="likelihood='bernoulli-probs'"):
        Bernoulli().check(torch.rand(5, 3, 4), torch.rand(5, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Bernoulli().check(RECON, torch.rand(5, 3, 4))


@pytest.mark.parametrize(
    ("likelihood", "sigma", "message"),
    [
        ("poisson", None, "is not one of"),
        ("bernoulli", 0.5, "has none"),
        ("gaussian", -1.0, "positive"),
        ("laplace", "best", "positive"),
        (Gaussian(1.0), 0.5, "carries its own scale"),
    ],
)
def test_unknown_likelihoods_and_bad_scales_are_input_errors(likelihood: object, sigma: object, message: str) -> None:
    with pytest.raises(fxvae.InputError, match=message):
        likelihoods.get(likelihood, sigma=sigma)


def test_gaussian_fisher_weight_is_the_inverse_variance() -> None:
    torch.testing.assert_close(Gaussian(0.5).fisher(RECON), torch.full_like(RECON, 4.0))


def test_bernoulli_fisher_weights_for_logits_and_for_probabilities_agree_through_the_sigmoid() -> None:
    p = torch.sigmoid(RECON)
    # d p / d logit = p (1 - p): the information about the logit is the probability's scaled by its square.
    torch.testing.assert_close(Bernoulli().fisher(RECON), Bernoulli(logits=False).fisher(p) * (p * (1 - p)) ** 2)


class SigmoidDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        self.dec = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 16), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


def test_calibrating_a_sigmoid_decoder_as_logits_warns_and_probabilities_fit_it() -> None:
    torch.manual_seed(0)
    model, data = SigmoidDecoder().eval(), torch.rand(64, 16)
    with pytest.warns(UserWarning, match="likelihood='bernoulli-probs'"):
        fxvae.convert(model, data[:4], calibration=data, log_sigma_init="auto", likelihood="bernoulli")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vae, _ = fxvae.convert(model, data[:4], calibration=data, log_sigma_init="auto", likelihood="bernoulli-probs")
    bias = vae.get_parameter("log_sigma_head.bias")
    assert torch.isfinite(bias).all() and bool((bias <= 0).all())


def test_log_prob_of_a_constant_gaussian_is_the_entropy_term() -> None:
    value = Gaussian(1.0).log_prob(torch.zeros(1, 10), torch.zeros(1, 10))
    assert value.item() == pytest.approx(-5 * math.log(2 * math.pi))


@pytest.mark.parametrize(
    "lik",
    [Bernoulli(), Bernoulli(logits=False), Gaussian(0.3), Gaussian(), Gaussian(torch.rand(3, 4) + 0.1), Laplace(0.5)],
    ids=["bernoulli", "probs", "gaussian", "optimal", "per_dimension", "laplace"],
)
def test_the_training_loss_is_the_mean_negative_log_likelihood(lik: likelihoods.Likelihood) -> None:
    recon = torch.sigmoid(RECON) if lik.name == "bernoulli-probs" else RECON
    target = torch.sigmoid(X) if lik.name.startswith("bernoulli") else X
    torch.testing.assert_close(lik.nll(recon, target), -lik.log_prob(recon, target).mean())
