"""fxvae.fit_density and the densities it fits: the AE's likelihood against a linear-Gaussian model whose log p(x)
is exact, the fits against their formulas, paired noise, every capture tier, a conditional model, a calibrated
VAE, what must stay unchanged, and the inputs that are refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import fxvae
from fxvae.analysis.outputs import reconstruction_like
from fxvae.measure.density import Density, coder, codes
from tests.test_patterns import BranchesOnValues
from tests.zoo import BY_NAME, UNet, build

D, LATENT, NOISE = 6, 2, 0.5


class LinearAE(nn.Module):
    """x -> enc (the code) -> dec = W z + b."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(D, LATENT)
        self.dec = nn.Linear(LATENT, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


def linear_gaussian(samples: int = 300) -> tuple[nn.Module, Density, torch.Tensor, torch.Tensor]:
    """(the AE, the density N(m, S), data drawn from the model, the exact -log p(x) per sample).

    z ~ N(m, S), x | z ~ N(W z + b, NOISE^2 I), so p(x) = N(x; W m + b, W S W^T + NOISE^2 I). W is a generic
    matrix (its columns are not orthogonal, so the posterior is correlated and the diagonal proposal is not
    exact), and the encoder is the AE's: the pseudo-inverse W^+ (x - b), not the posterior mean.
    """
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(D, LATENT, generator=generator, dtype=torch.float64)
    b = torch.randn(D, generator=generator, dtype=torch.float64)
    m = torch.tensor([0.5, -1.0], dtype=torch.float64)
    s = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    ae = LinearAE().double().eval()
    inverse = torch.linalg.pinv(w)
    with torch.no_grad():
        ae.enc.weight.copy_(inverse)
        ae.enc.bias.copy_(-inverse @ b)
        ae.dec.weight.copy_(w)
        ae.dec.bias.copy_(b)
    z = m + torch.randn(samples, LATENT, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(s).T
    x = z @ w.T + b + NOISE * torch.randn(samples, D, generator=generator, dtype=torch.float64)
    density = Density("gaussian", 1, (LATENT,), 0, torch.ones(1), m[None], s[None])
    marginal = torch.distributions.MultivariateNormal(w @ m + b, w @ s @ w.T + NOISE**2 * torch.eye(D).double())
    return ae, density, x, -marginal.log_prob(x)


def _paired(result: fxvae.Evaluation, exact: torch.Tensor) -> tuple[float, float]:
    """The mean of nll - exact over the samples and its standard error."""
    difference = result.per_sample["nll"] - exact
    return difference.mean().item(), difference.std().item() / math.sqrt(len(difference))


@pytest.mark.parametrize("k", [1, 10, 100])
def test_the_aes_nll_under_a_density_is_never_below_the_exact_nll_of_a_linear_gaussian_model(k: int) -> None:
    ae, density, x, exact = linear_gaussian()
    result = fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE, density=density, k=k, per_sample=True)
    assert result.nll.value >= exact.mean().item() - result.nll.stderr
    mean, stderr = _paired(result, exact)
    assert mean >= -3 * stderr


def test_the_aes_nll_meets_the_exact_nll_within_its_standard_error_at_large_k() -> None:
    ae, density, x, exact = linear_gaussian()
    one = fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE, density=density, k=1, per_sample=True)
    many = fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE, density=density, k=2000, per_sample=True)
    assert abs(many.nll.value - exact.mean().item()) <= many.nll.stderr
    mean, stderr = _paired(many, exact)
    assert abs(mean) <= 3 * stderr
    # The estimator can fail this test: at k = 1 (the ELBO) the same model is 0.1 nats, over 4 paired
    # standard errors, above the exact value.
    gap, gap_stderr = _paired(one, exact)
    assert gap > 4 * gap_stderr and gap > 50 * abs(mean)


def test_the_aes_proposal_width_is_the_laplace_width_of_the_linear_decoder_under_the_density() -> None:
    ae, density, x, _ = linear_gaussian()
    result = fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE, density=density, k=4)
    w = ae.dec.weight.detach()
    width = (w.pow(2).sum(0) / NOISE**2 + 1 / density.marginal_variance()).rsqrt()
    low, high = (float(v) for v in result.proposal.rpartition("s in [")[2].rstrip("]").split(", "))
    # The decoder's sensitivity is estimated with 16 random probes per sample on 300 samples.
    assert low == pytest.approx(width.min().item(), rel=0.03) and high == pytest.approx(width.max().item(), rel=0.03)
    assert result.proposal.startswith("N(code, diag s^2), 1/s_j^2 = F_j + 1/v_j")


def test_the_aes_recon_with_a_density_is_its_deterministic_reconstruction_term() -> None:
    ae, density, x, _ = linear_gaussian(40)
    plain = fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE)
    with_density = fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE, density=density, k=3)
    assert with_density.recon == plain.recon
    assert (with_density.kind, with_density.k, with_density.kl) == ("ae", 3, None)
    assert with_density.density == "gaussian (full covariance), set by hand" and plain.density is None
    assert with_density.nll.value <= with_density.neg_elbo.value
    assert str(with_density).splitlines()[-2:] == [
        "  prior p(z): gaussian (full covariance), set by hand",
        f"  proposal q(z | x): {with_density.proposal}",
    ]


def test_a_standard_normal_density_gives_a_vae_its_own_nll_and_a_monte_carlo_kl() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    x = entry.inputs(40)[0]
    vae, _ = fxvae.convert(build(entry), x[:4], log_sigma_init=-1.0)
    standard = Density("gaussian", 1, (8,), 0, torch.ones(1), torch.zeros(1, 8), torch.eye(8)[None])
    own = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=0.7, k=5, per_sample=True)
    under = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=0.7, k=5, density=standard, per_sample=True)
    torch.testing.assert_close(under.per_sample["nll"], own.per_sample["nll"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(under.per_sample["neg_elbo"], own.per_sample["neg_elbo"], rtol=1e-5, atol=1e-5)
    assert under.kl.value == pytest.approx(own.kl.value, abs=5 * under.kl.stderr)
    assert under.recon.value + under.kl.value == pytest.approx(under.neg_elbo.value, rel=1e-12)
    assert under.kl_per_dim == () and under.latent_dims == 8 and under.density.startswith("gaussian")


def test_the_gaussian_density_is_the_maximum_likelihood_fit_plus_a_small_ridge() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    model, x = build(entry), entry.inputs(200)[0]
    density = fxvae.fit_density(model, x, batch_size=64)
    with torch.no_grad():
        found = model.enc(x).double()
    centred = found - found.mean(0)
    torch.testing.assert_close(density.means[0], found.mean(0))
    torch.testing.assert_close(density.covariances[0], centred.T @ centred / 200 + 1e-6 * torch.eye(8).double())
    assert (density.kind, density.components, density.n, density.latent_shape) == ("gaussian", 1, 200, (8,))
    assert density.describe() == "gaussian (full covariance) on 200 codes"


def test_a_one_component_gmm_equals_the_gaussian_density() -> None:
    pytest.importorskip("sklearn")
    entry = BY_NAME["mlp_sigmoid"]
    model, x = build(entry), entry.inputs(300)[0]
    gaussian = fxvae.fit_density(model, x)
    gmm = fxvae.fit_density(model, x, kind="gmm", components=1)
    torch.testing.assert_close(gmm.means, gaussian.means, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gmm.covariances, gaussian.covariances, rtol=1e-9, atol=1e-12)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gmm.log_prob(z), gaussian.log_prob(z), rtol=1e-9, atol=1e-9)
    assert gmm.describe() == "gmm (1 component, full covariance) on 300 codes"


def test_a_mixtures_log_prob_and_marginal_variance_are_those_of_its_components() -> None:
    weights = torch.tensor([0.25, 0.75], dtype=torch.float64)
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    covariances = torch.stack([torch.eye(2), torch.tensor([[2.0, 0.5], [0.5, 1.0]])]).double()
    density = Density("gmm", 2, (2,), 10, weights, means, covariances)
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    parts = torch.distributions.MultivariateNormal(means, covariances).log_prob(z[:, None])
    torch.testing.assert_close(density.log_prob(z), torch.logsumexp(parts + weights.log(), 1))
    mean = (weights[:, None] * means).sum(0)
    second = (weights[:, None, None] * (covariances + means[:, :, None] * means[:, None, :])).sum(0)
    torch.testing.assert_close(density.marginal_variance(), (second - torch.outer(mean, mean)).diagonal())


def test_a_densitys_draws_have_its_mean_and_covariance() -> None:
    density = Density(
        "gaussian", 1, (2,), 0, torch.ones(1), torch.tensor([[1.0, -2.0]]), torch.tensor([[[2.0, 0.6], [0.6, 0.5]]])
    )
    draws = density.sample(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(draws.mean(0), density.means[0], atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), density.covariances[0], atol=0.05, rtol=0)


def test_a_density_reads_back_from_its_json_record() -> None:
    pytest.importorskip("sklearn")
    entry = BY_NAME["conv_latent"]
    density = fxvae.fit_density(build(entry), entry.inputs(60)[0], kind="gmm", components=3)
    again = Density.from_dict(json.loads(json.dumps(density.to_dict())))
    assert again.to_dict() == density.to_dict() and again.latent_shape == (2, 2, 2) and again.input_shape == (3, 8, 8)
    z = density.sample(4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.log_prob(z), density.log_prob(z))


def test_codes_are_the_aes_latent_at_its_bottleneck_and_a_vaes_posterior_means() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    model, x = build(entry), entry.inputs(30)[0]
    with torch.no_grad():
        torch.testing.assert_close(codes(model, x, batch_size=7), model.enc(x))
        vae, _ = fxvae.convert(model, x[:4], log_sigma_init=-1.0)
        mu, _ = fxvae.split(vae)[0](x)
    torch.testing.assert_close(codes(vae, x), mu)


@pytest.mark.parametrize("chunk", [1, 3, None])
@pytest.mark.parametrize("batch_size", [7, 64])
def test_per_sample_values_are_the_same_for_any_chunk_and_batch_size(chunk: int | None, batch_size: int) -> None:
    ae, density, x, _ = linear_gaussian(40)
    vae, _ = fxvae.convert(ae, x[:4], log_sigma_init=-1.0)
    for model in (ae, vae):
        base = fxvae.evaluate(model, x, density=density, k=6, chunk=6, batch_size=40, seed=3, per_sample=True)
        other = fxvae.evaluate(
            model, x, density=density, k=6, chunk=chunk, batch_size=batch_size, seed=3, per_sample=True
        )
        assert base.per_sample.keys() == other.per_sample.keys()
        for name, values in base.per_sample.items():
            torch.testing.assert_close(other.per_sample[name], values, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("noise_elements", [1, 200])
def test_noise_made_a_few_chunks_at_a_time_gives_the_same_values(monkeypatch, noise_elements: int) -> None:
    ae, density, x, _ = linear_gaussian(30)
    vae, _ = fxvae.convert(ae, x[:4], log_sigma_init=-1.0)
    whole = fxvae.evaluate(vae, x, density=density, k=7, chunk=2, seed=1, per_sample=True)
    monkeypatch.setattr(fxvae.measure.evaluation, "NOISE_ELEMENTS", noise_elements)
    blocks = fxvae.evaluate(vae, x, density=density, k=7, chunk=2, seed=1, per_sample=True)
    for name, values in whole.per_sample.items():
        torch.testing.assert_close(blocks.per_sample[name], values, rtol=0, atol=0, msg=name)


def test_the_aes_proposal_is_fitted_on_the_first_512_samples_whatever_the_batching() -> None:
    ae, density, x, _ = linear_gaussian(600)
    by_100 = fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE, density=density, batch_size=100, per_sample=True)
    by_256 = fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE, density=density, batch_size=256, per_sample=True)
    assert by_100.proposal == by_256.proposal and "on the first 512 samples" in by_100.proposal
    torch.testing.assert_close(by_100.per_sample["nll"], by_256.per_sample["nll"], rtol=1e-12, atol=1e-12)


def test_a_vae_converted_from_the_ae_shares_the_aes_noise_under_one_seed() -> None:
    ae, density, x, _ = linear_gaussian(30)
    # Widths set to the AE's fitted proposal widths: the two models then make the same draws of z per sample.
    row = fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE, density=density, k=4, seed=2, per_sample=True)
    low, _ = (float(v) for v in row.proposal.rpartition("s in [")[2].rstrip("]").split(", "))
    vae, _ = fxvae.convert(ae, x[:4])
    encoder, decoder = coder(ae, (x[:4],))
    with torch.no_grad():
        code = encoder(x)
    log_s = fxvae.measure.sensitivity.auto_log_sigma(
        decoder, [code], [(x,)], fxvae.likelihoods.Gaussian(NOISE), 1 / density.marginal_variance()
    )
    with torch.no_grad():
        vae.get_parameter("log_sigma_head.bias").copy_(log_s)
    other = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=NOISE, density=density, k=4, seed=2, per_sample=True)
    assert torch.exp(log_s).min().item() == pytest.approx(low, rel=1e-3)
    torch.testing.assert_close(other.per_sample["nll"], row.per_sample["nll"], rtol=1e-9, atol=1e-9)


def _hooks_model() -> nn.Module:
    torch.manual_seed(0)
    return BranchesOnValues().eval()


@pytest.mark.parametrize(
    ("build_model", "x", "tier"),
    [
        (lambda: build(BY_NAME["mlp_sigmoid"]), BY_NAME["mlp_sigmoid"].inputs(48)[0], "fx"),
        (lambda: build(BY_NAME["shape_control_flow"]), BY_NAME["shape_control_flow"].inputs(48)[0], "export"),
        (_hooks_model, torch.randn(48, 16, generator=torch.Generator().manual_seed(0)), "hooks"),
    ],
    ids=["fx", "export", "hooks"],
)
def test_every_capture_tier_gives_codes_a_density_samples_and_an_nll(build_model, x: torch.Tensor, tier: str) -> None:
    model = build_model()
    encoder, decoder = coder(model, (x[:4],))
    assert fxvae.conversion(fxvae.convert(model, x[:4])[0]).tracer == tier
    with torch.no_grad():
        torch.testing.assert_close(reconstruction_like(decoder(encoder(x)), x), reconstruction_like(model(x), x))
    density = fxvae.fit_density(model, x)
    samples = fxvae.sample(model, 5, density=density, generator=torch.Generator().manual_seed(0))
    assert reconstruction_like(samples, x[:5]).shape == (5, *x.shape[1:])
    result = fxvae.evaluate(model, x, likelihood="gaussian", density=density, k=3)
    assert math.isfinite(result.nll.value) and result.nll.value <= result.neg_elbo.value


def test_sampling_an_ae_decodes_the_densitys_draws_with_its_decoder() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    model, x = build(entry), entry.inputs(100)[0]
    density = fxvae.fit_density(model, x)
    images = fxvae.sample(model, 6, density=density, generator=torch.Generator().manual_seed(4))
    z = density.sample(6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(images, model.dec(z))


def test_sampling_a_vae_with_a_density_decodes_the_densitys_draws_instead_of_the_priors() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    x = entry.inputs(100)[0]
    vae, _ = fxvae.convert(build(entry), x[:4])
    density = fxvae.fit_density(vae, x)
    images = fxvae.sample(vae, 6, density=density, generator=torch.Generator().manual_seed(4))
    _, decoder = fxvae.split(vae)
    with torch.no_grad():
        torch.testing.assert_close(images, decoder(density.sample(6, generator=torch.Generator().manual_seed(4))))
        prior = fxvae.sample(vae, 6, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(images, prior)


def test_a_conditional_ae_is_fitted_sampled_and_measured_with_its_labels() -> None:
    entry = BY_NAME["conditional"]
    model = build(entry)
    x, label = entry.inputs(60)
    density = fxvae.fit_density(model, [(x[:30], label[:30]), (x[30:], label[30:])])
    assert density.n == 60 and density.latent_shape == (4,)
    images = fxvae.sample(model, 6, label[:6], density=density, generator=torch.Generator().manual_seed(0))
    z = density.sample(6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(images, model.dec(torch.cat([z, model.embed(label[:6])], 1)))
    same = fxvae.evaluate(model, [(x, label)], likelihood="gaussian", sigma=1.0, density=density, k=4)
    other = fxvae.evaluate(model, [(x, (label + 1) % 10)], likelihood="gaussian", sigma=1.0, density=density, k=4)
    assert math.isfinite(same.nll.value) and other.nll.value != pytest.approx(same.nll.value)


def test_a_calibrated_vaes_codes_are_standardised_and_its_density_is_near_the_prior() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    x = entry.inputs(400)[0]
    vae, _ = fxvae.convert(build(entry), x[:4], calibration=x, standardize="whiten", log_sigma_init="auto")
    density = fxvae.fit_density(vae, x)
    torch.testing.assert_close(density.means[0], torch.zeros(8).double(), atol=1e-4, rtol=0)
    torch.testing.assert_close(density.covariances[0], torch.eye(8).double(), atol=1e-3, rtol=0)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=0.5, density=density, k=4)
    prior = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=0.5, k=4)
    assert result.nll.value == pytest.approx(prior.nll.value, abs=0.01)


def test_fitting_sampling_and_measuring_leave_the_models_mode_parameters_and_the_global_rng_unchanged() -> None:
    entry = BY_NAME["norm_dropout"]
    model = build(entry).train()
    x = entry.inputs(64)[0]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    rng = torch.get_rng_state()
    density = fxvae.fit_density(model, x)
    fxvae.sample(model, 4, density=density, generator=torch.Generator().manual_seed(0))
    fxvae.evaluate(model, x, likelihood="gaussian", density=density, k=3)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_per_sample_values_stay_out_of_the_json_record() -> None:
    ae, density, x, _ = linear_gaussian(20)
    result = fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE, density=density, k=2, per_sample=True)
    record = result.to_dict()
    assert "per_sample" not in record and record["density"] == result.density and record["proposal"]
    assert fxvae.Evaluation.from_dict(json.loads(json.dumps(record))) == result
    assert fxvae.evaluate(ae, x, likelihood="gaussian", sigma=NOISE).per_sample is None


# --- refused inputs ------------------------------------------------------------------------------------------


def test_a_density_on_a_model_with_no_bottleneck_is_refused() -> None:
    torch.manual_seed(0)
    with pytest.raises(fxvae.InputError, match=r"UNet has no bottleneck to read codes at .*fxvae\.convert\(model"):
        fxvae.fit_density(UNet().eval(), torch.randn(8, 1, 8, 8))


def test_more_components_than_codes_are_refused() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    with pytest.raises(fxvae.InputError, match=r"components=20 is more than the 12 codes in the data"):
        fxvae.fit_density(build(entry), entry.inputs(12)[0], kind="gmm", components=20)


def test_data_of_the_wrong_shape_is_refused() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    model = build(entry)
    with pytest.raises(fxvae.InputError, match=r"batch 1 of the data has shape \[4, 60\]"):
        fxvae.fit_density(model, [torch.randn(4, 64), torch.randn(4, 60)])


def test_a_density_of_another_latent_shape_is_refused_by_evaluate() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    density = Density("gaussian", 1, (3,), 0, torch.ones(1), torch.zeros(1, 3), torch.eye(3)[None])
    with pytest.raises(fxvae.InputError, match=r"codes have shape \[8\], but the density is on latents of shape \[3\]"):
        fxvae.evaluate(build(entry), entry.inputs(8)[0], density=density)


def test_sampling_with_a_density_of_another_latent_shape_is_refused() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    density = Density("gaussian", 1, (3,), 0, torch.ones(1), torch.zeros(1, 3), torch.eye(3)[None], (64,))
    vae, _ = fxvae.convert(build(entry), entry.inputs(4)[0])
    for model in (build(entry), vae):
        with pytest.raises(
            fxvae.InputError, match=r"latent has shape \[8\], but the density is on latents of shape \[3\]"
        ):
            fxvae.sample(model, 2, density=density)


def test_sampling_an_autoencoder_without_a_density_names_fit_density() -> None:
    with pytest.raises(fxvae.InputError, match=r"pass density=fxvae\.fit_density\(ae, train\)"):
        fxvae.sample(build(BY_NAME["mlp_sigmoid"]), 4)


def test_a_discrete_model_has_no_density() -> None:
    entry = BY_NAME["conv_latent"]
    x = entry.inputs(16)[0]
    model, _ = fxvae.convert(build(entry), x[:4], latent=fxvae.FSQ(levels=(4, 4, 3)))
    with pytest.raises(fxvae.InputError, match=r"has latent='fsq', no Gaussian posterior"):
        fxvae.fit_density(model, x)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kind": "flow"}, r"kind='flow' is not a density fit_density knows"),
        ({"components": 0}, r"components=0 must be a positive integer"),
    ],
)
def test_an_unknown_kind_or_a_bad_component_count_is_refused(options: dict, message: str) -> None:
    entry = BY_NAME["mlp_sigmoid"]
    with pytest.raises(fxvae.InputError, match=message):
        fxvae.fit_density(build(entry), entry.inputs(8)[0], **options)


def test_a_likelihood_without_a_fisher_weight_cannot_fit_the_aes_proposal() -> None:
    ae, density, x, _ = linear_gaussian(20)
    with pytest.raises(fxvae.InputError, match=r"custom\(<lambda>\) has none: pass likelihood='gaussian'"):
        fxvae.evaluate(ae, x, likelihood=lambda recon, x: -(recon - x).abs().sum(1), density=density)


def test_a_density_must_be_a_density() -> None:
    ae, _, x, _ = linear_gaussian(8)
    with pytest.raises(fxvae.InputError, match=r"density= takes a fxvae\.Density, got a dict"):
        fxvae.evaluate(ae, x, density={"kind": "gaussian"})


@pytest.mark.parametrize(
    ("weights", "means", "message"),
    [
        (torch.ones(1), torch.zeros(1, 3), r"Density means has shape \[1, 3\], but 1 component\(s\) on a latent"),
        (torch.full((1,), 0.5), torch.zeros(1, 2), r"Density weights \[0\.5\] must be non-negative and sum to 1"),
    ],
    ids=["shape", "weights"],
)
def test_a_density_of_inconsistent_tensors_is_refused(weights: torch.Tensor, means: torch.Tensor, message: str) -> None:
    with pytest.raises(fxvae.InputError, match=message):
        Density("gaussian", 1, (2,), 0, weights, means, torch.eye(2)[None])
