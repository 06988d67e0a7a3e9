"""fxvae.evaluate's numbers against direct computations: standard errors, per-dimension KL and unit variances
merged over batches, the mutual information over chunks of the mixture, a discrete model's code use, and the
record's text and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fxvae
from fxvae.measure.evaluation import Estimate, Evaluation
from tests.zoo import BY_NAME, build

D, LATENT = 5, 3


def _vae(samples: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A small float64 VAE with spread-out posteriors (log sigma varies per sample), and its data."""
    torch.manual_seed(seed)
    ae = nn.Sequential(nn.Linear(D, LATENT), nn.Linear(LATENT, D)).double().eval()
    x = torch.randn(samples, D, dtype=torch.float64)
    vae, _ = fxvae.convert(ae, x[:4])
    with torch.no_grad():
        head = vae.get_submodule("log_sigma_head")
        head.weight.copy_(0.3 * torch.randn_like(head.weight))
        head.bias.fill_(-0.5)
    return vae, x


def _posterior(vae: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    encoder, _ = fxvae.split(vae)
    with torch.no_grad():
        return encoder(x)


def _one_draw(vae: nn.Module, x: torch.Tensor, seed: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, the decoder's output on it): each sample's draw 0 of ``stream`` under ``seed``, as evaluate draws it."""
    mu, log_sigma = _posterior(vae, x)
    _, decoder = fxvae.split(vae)
    eps = fxvae.measure.noise.normal(seed, stream, torch.arange(len(x)), range(1), (LATENT,), dtype=torch.float64)[0]
    z = mu + torch.exp(log_sigma) * eps
    with torch.no_grad():
        return z, decoder(z)


def test_an_estimate_is_the_mean_and_the_sample_standard_deviation_over_root_n() -> None:
    values = torch.tensor([1.0, 2.0, 4.0, 9.0])
    estimate = Estimate.of(values)
    assert estimate.value == pytest.approx(4.0)
    assert estimate.stderr == pytest.approx(values.double().std().item() / 2)
    assert math.isnan(Estimate.of(torch.tensor([3.0])).stderr) and Estimate.of(torch.tensor([3.0])).value == 3.0
    assert Estimate.of(torch.tensor([1.0, 3.0])).stderr == pytest.approx(math.sqrt(2) / math.sqrt(2))
    assert Estimate(2.0, 0.5).scaled(3) == Estimate(6.0, 1.5)
    assert str(Estimate(24.3149, 0.4219)) == "24.31 ± 0.42"


def test_kl_per_dimension_and_unit_variances_merged_over_batches_are_those_of_all_the_data() -> None:
    vae, x = _vae(45)
    mu, log_sigma = _posterior(vae, x)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0, batch_size=7, k=2)
    kl = 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1) - log_sigma
    assert result.kl_per_dim == pytest.approx(kl.mean(0).tolist(), rel=1e-9)
    assert result.kl.value == pytest.approx(kl.sum(1).mean().item(), rel=1e-9)
    assert result.kl.stderr == pytest.approx(kl.sum(1).std().item() / math.sqrt(45), rel=1e-9)
    assert result.unit_variance == pytest.approx(mu.var(0).tolist(), rel=1e-9)
    assert result.latent_dims == LATENT and result.n == 45


def test_active_units_count_the_unit_variances_above_the_threshold() -> None:
    vae, x = _vae(30)
    variance = sorted(_posterior(vae, x)[0].var(0).tolist())
    threshold = (variance[0] + variance[1]) / 2
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0, active_threshold=threshold)
    assert (result.active_units, result.active_threshold) == (LATENT - 1, threshold)
    assert fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0, active_threshold=variance[0]).active_units == 2


def _mutual_info_by_hand(mu: torch.Tensor, log_sigma: torch.Tensor, seed: int) -> torch.Tensor:
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    z = mu + torch.exp(log_sigma) * eps
    log_q = torch.distributions.Normal(mu[None], torch.exp(log_sigma)[None]).log_prob(z[:, None]).sum(2)  # [i, j]
    return log_q.diagonal() - (torch.logsumexp(log_q, 1) - math.log(len(mu)))


@pytest.mark.parametrize(("samples", "mixture"), [(700, 4096), (300, 120)], ids=["two_row_chunks", "first_m"])
def test_the_mutual_information_is_the_hoffman_johnson_estimate_over_the_first_m_posteriors(samples, mixture) -> None:
    vae, x = _vae(samples)
    mu, log_sigma = _posterior(vae, x)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0, mixture=mixture, batch_size=64, seed=4)
    m = min(samples, mixture)
    expected = _mutual_info_by_hand(mu[:m], log_sigma[:m], seed=4)
    assert result.mixture == m
    assert result.mutual_info.value == pytest.approx(expected.mean().item(), rel=1e-9)
    assert result.mutual_info.stderr == pytest.approx(expected.std().item() / math.sqrt(m), rel=1e-9)


def test_the_elbo_of_one_draw_is_the_reconstruction_at_that_draw_plus_the_kl() -> None:
    vae, x = _vae(12)
    mu, log_sigma = _posterior(vae, x)
    z, recon = _one_draw(vae, x, seed=7, stream=0)
    log_px = torch.distributions.Normal(recon, 0.5).log_prob(x).sum(1)
    kl = (0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1) - log_sigma).sum(1)
    log_w = log_px + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    log_w -= torch.distributions.Normal(mu, torch.exp(log_sigma)).log_prob(z).sum(1)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=0.5, seed=7)
    assert result.neg_elbo.value == pytest.approx(-log_w.mean().item(), rel=1e-9)
    assert result.nll.value == pytest.approx(-log_w.mean().item(), rel=1e-9)
    assert result.kl.value == pytest.approx(kl.mean().item(), rel=1e-9)
    assert result.recon.value == pytest.approx((-log_w - kl).mean().item(), rel=1e-9)
    assert (result.kind, result.k, result.seed, result.data_dims, result.scale) == ("vae", 1, 7, D, 0.5)


def test_the_iwae_bound_of_k_draws_is_the_log_mean_of_their_weights() -> None:
    vae, x = _vae(6)
    mu, log_sigma = _posterior(vae, x)
    _, decoder = fxvae.split(vae)
    k = 5
    eps = fxvae.measure.noise.normal(0, 0, torch.arange(6), range(k), (LATENT,), dtype=torch.float64)
    z = mu + torch.exp(log_sigma) * eps
    with torch.no_grad():
        recon = decoder(z.flatten(0, 1)).view(k, *x.shape)
    log_w = (
        torch.distributions.Normal(recon, 0.5).log_prob(x).sum(2)
        + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(2)
        - torch.distributions.Normal(mu, torch.exp(log_sigma)).log_prob(z).sum(2)
    )
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=0.5, k=k, chunk=k)
    assert result.neg_elbo.value == pytest.approx(-log_w.mean().item(), rel=1e-9)
    expected = -(torch.logsumexp(log_w, 0) - math.log(k))
    assert result.nll.value == pytest.approx(expected.mean().item(), rel=1e-9)
    assert result.nll.stderr == pytest.approx(expected.std().item() / math.sqrt(6), rel=1e-9)


def test_draws_in_chunks_give_the_same_bound_shape_as_one_chunk_and_stay_below_the_elbo() -> None:
    vae, x = _vae(20)
    chunked = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=0.5, k=9, chunk=2)
    assert chunked.nll.value <= chunked.neg_elbo.value
    assert chunked.recon.value + chunked.kl.value == pytest.approx(chunked.neg_elbo.value, rel=1e-12)


def test_an_empty_batch_in_the_data_is_skipped() -> None:
    vae, x = _vae(10)
    result = fxvae.evaluate(vae, [x[:4], x[:0], x[4:]], likelihood="gaussian", sigma=1.0)
    whole = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0)
    assert result.n == 10 and result.kl == whole.kl


def test_a_one_shot_iterator_is_read_twice_for_the_optimal_scale() -> None:
    vae, x = _vae(10)
    result = fxvae.evaluate(vae, iter([x[:5], x[5:]]))
    assert result.n == 10 and result.scale == fxvae.evaluate(vae, [x[:5], x[5:]]).scale


def test_a_conditional_vaes_conditions_are_tiled_with_its_draws() -> None:
    entry = BY_NAME["conditional"]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4))
    x, label = entry.inputs(12)
    many = fxvae.evaluate(vae, [(x, label)], likelihood="gaussian", sigma=1.0, k=6, chunk=3)
    assert many.n == 12 and math.isfinite(many.nll.value)


def test_a_batch_with_fewer_inputs_than_the_model_takes_is_named() -> None:
    entry = BY_NAME["conditional"]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4))
    with pytest.raises(fxvae.InputError, match=r"batch 0 holds 1 inputs, but the model takes 2 \(x, "):
        fxvae.evaluate(vae, DataLoader(TensorDataset(entry.inputs(8)[0]), batch_size=4))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": True}, "k=True must be a positive integer"),
        ({"k": 2.0}, "k=2.0 must be a positive integer"),
        ({"chunk": 0}, "chunk=0 must be a positive integer"),
        ({"chunk": 1.5}, "chunk=1.5 must be a positive integer"),
        ({"mixture": 0}, "mixture=0 must be a positive integer"),
        ({"mixture": 2.0}, "mixture=2.0 must be a positive integer"),
    ],
)
def test_counts_must_be_positive_integers(options: dict, message: str) -> None:
    vae, x = _vae(4)
    with pytest.raises(fxvae.InputError, match=message):
        fxvae.evaluate(vae, x, **options)


def test_a_model_that_is_no_module_is_refused() -> None:
    with pytest.raises(fxvae.InputError, match=r"the model is a function, not a torch\.nn\.Module"):
        fxvae.evaluate(lambda x: x, torch.zeros(2, 2))


def test_chunk_1_and_mixture_1_are_accepted() -> None:
    vae, x = _vae(4)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0, k=2, chunk=1, mixture=1)
    assert result.mixture == 1 and result.mutual_info.value == pytest.approx(0.0, abs=1e-12)


def test_a_value_that_was_not_measured_is_an_error_naming_what_was() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    result = fxvae.evaluate(build(entry), entry.inputs(8)[0], likelihood="gaussian", sigma=1.0)
    assert result.data_dims == 64 and result.latent_dims == 0
    with pytest.raises(fxvae.FxvaeError, match=r"^'nll' was not measured for this ae; measured: recon$"):
        result.per_dim("nll")
    with pytest.raises(fxvae.FxvaeError, match="'scale' was not measured"):
        result.bits_per_dim("scale")


def test_the_rows_give_each_value_per_sample_per_dimension_and_in_bits_but_mutual_information_per_sample() -> None:
    vae, x = _vae(20)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0, k=2)
    rows = {name: (value, per, bits) for name, value, per, bits in result.rows()}
    assert list(rows) == ["recon", "kl", "neg_elbo", "nll", "mutual_info"]
    value, per, bits = rows["kl"]
    assert (value, per, bits) == (result.kl, result.kl.scaled(1 / D), result.kl.scaled(1 / (D * math.log(2))))
    assert rows["mutual_info"][1:] == (None, None)
    text = str(result).splitlines()
    assert text[0] == f"vae on n=20, k=2, likelihood {result.likelihood}, seed 0"
    assert text[3].split() == ["kl", *str(result.kl).split(), f"{per.value:.4g}", f"{bits.value:.4g}"]
    assert text[-1] == f"  active units: {result.active_units} of {LATENT} (Var_x E_q[z] > 0.01)"
    assert text[6].split() == ["mutual_info", *str(result.mutual_info).split()]


def test_a_record_from_an_older_run_without_per_dimension_lists_reads_back() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    record = fxvae.evaluate(build(entry), entry.inputs(8)[0], likelihood="gaussian", sigma=1.0).to_dict()
    del record["kl_per_dim"], record["unit_variance"]
    again = Evaluation.from_dict(record)
    assert again.kl_per_dim == () and again.unit_variance == () and isinstance(again.recon, Estimate)


@pytest.mark.parametrize("latent", [fxvae.VQ(codebook_size=16), fxvae.FSQ(levels=(4, 4, 3))], ids=["vq", "fsq"])
def test_a_discrete_models_perplexity_and_code_use_are_those_of_its_codes_histogram(
    latent: fxvae.VQ | fxvae.FSQ,
) -> None:
    entry = BY_NAME["conv_latent"]
    data = entry.inputs(48)[0]
    model, _ = fxvae.convert(build(entry), data[:4], latent=latent, calibration=data)
    result = fxvae.evaluate(model, data, likelihood="gaussian", sigma=1.0, batch_size=20)
    info = fxvae.conversion(model).quantizer
    codes = fxvae.tokenize(model, data).reshape(-1)
    share = torch.bincount(codes, minlength=info.codebook_size).double() / codes.numel()
    entropy = -(share[share > 0] * share[share > 0].log()).sum()
    assert result.perplexity == pytest.approx(math.exp(entropy.item()), rel=1e-9)
    assert result.codes_used == pytest.approx((share > 0).double().mean().item())
    assert result.neg_elbo.value == pytest.approx(result.recon.value + result.kl.value)
    assert result.kl.stderr == 0.0 and (result.n, result.k, result.data_dims) == (48, 1, math.prod(data.shape[1:]))
    assert str(result).splitlines()[-1] == (
        f"  rate: {result.rate_bits:.4g} bits per sample; codebook perplexity {result.perplexity:.4g}, "
        f"{100 * result.codes_used:.1f}% of the codes used"
    )


def test_an_autoencoders_record_says_how_many_samples_with_which_seed_and_no_scale_for_a_callable() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    lik = fxvae.likelihoods.LogProb(lambda recon, x: -(recon - x).abs().sum(1))
    result = fxvae.evaluate(build(entry), entry.inputs(9)[0], likelihood=lik, seed=5)
    assert (result.n, result.seed, result.scale, result.likelihood) == (9, 5, None, "custom(<lambda>)")


def test_a_discrete_models_optimal_sigma_is_fitted_to_its_deterministic_reconstruction() -> None:
    entry = BY_NAME["conv_latent"]
    data = entry.inputs(24)[0]
    model, _ = fxvae.convert(build(entry), data[:4], latent=fxvae.FSQ(levels=(4, 4, 3)))
    result = fxvae.evaluate(model, data, seed=3)
    with torch.no_grad(), fxvae.modules.eval_mode(model):
        rmse = (model(data) - data).pow(2).mean().sqrt().item()
    assert result.scale == pytest.approx(rmse, rel=1e-5) and result.likelihood == f"gaussian(sigma={rmse:.4g}, optimal)"
    assert (result.seed, result.n) == (3, 24)
    with pytest.raises(fxvae.FxvaeError, match=r"^'nll' was not measured for this fsq; measured: recon, kl, neg_elbo$"):
        result.per_dim()


def test_a_conditional_discrete_models_decoder_gets_the_condition() -> None:
    entry = BY_NAME["conditional"]
    x, label = entry.inputs(32)
    model, _ = fxvae.convert(build(entry), (x[:4], label[:4]), latent=fxvae.FSQ(levels=(4, 4, 3)))
    same = fxvae.evaluate(model, [(x, label)], likelihood="gaussian", sigma=1.0)
    other = fxvae.evaluate(model, [(x, (label + 1) % 10)], likelihood="gaussian", sigma=1.0)
    with torch.no_grad(), fxvae.modules.eval_mode(model):
        expected = -torch.distributions.Normal(model(x, label), 1.0).log_prob(x).sum(1).mean()
    assert same.recon.value == pytest.approx(expected.item(), rel=1e-5)
    assert other.recon.value != pytest.approx(same.recon.value)


def test_the_unit_variance_of_two_samples_divides_by_one() -> None:
    vae, x = _vae(2)
    mu, _ = _posterior(vae, x)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0)
    assert result.unit_variance == pytest.approx((mu[0] - mu[1]).pow(2).div(2).tolist(), rel=1e-9)


def test_per_dimension_values_default_to_the_nll_and_an_unknown_name_is_an_fxvae_error() -> None:
    vae, x = _vae(8)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0, k=2)
    assert result.per_dim() == result.per_dim("nll") and result.bits_per_dim() == result.bits_per_dim("nll")
    with pytest.raises(fxvae.FxvaeError, match=r"^'elbo' was not measured for this vae; measured: recon, kl, "):
        result.per_dim("elbo")
    header = str(result).splitlines()[1]
    assert header.split() == ["nats/sample", "nats/dim", "bits/dim"] and header.startswith(" " * 15)


def test_a_vaes_optimal_sigma_is_fitted_on_one_draw_per_sample_from_the_seeds_noise_stream_1() -> None:
    vae, x = _vae(30)
    rmse = (_one_draw(vae, x, seed=6, stream=1)[1] - x).pow(2).mean().sqrt().item()
    assert fxvae.evaluate(vae, x, seed=6).scale == pytest.approx(rmse, rel=1e-12)


def test_a_one_dimensional_latent_is_measured() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 4)
    vae, _ = fxvae.convert(nn.Sequential(nn.Linear(4, 1), nn.Linear(1, 4)).eval(), x[:4])
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0, k=3)
    assert result.latent_dims == 1 and result.nll.value <= result.neg_elbo.value
