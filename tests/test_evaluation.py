"""fxvae.evaluate: the ELBO and the importance-weighted bound against a model whose log p(x) is known exactly,
active units and mutual information on constructed latents, every capture tier, and what it must not change."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fxvae
from fxvae.latents.configs import LatentConfig
from tests.snapshot import assert_unchanged, snapshot
from tests.test_patterns import BranchesOnValues
from tests.zoo import BY_NAME, build

D, LATENT, NOISE = 6, 2, 0.5


def linear_gaussian(samples: int = 300) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(the VAE of z ~ N(0, I), x | z ~ N(W z + b, NOISE^2 I) with its exact posterior as encoder, data, log p(x)).

    W has orthogonal columns, so the exact posterior is a diagonal Gaussian: the family fxvae's q has. The
    autoencoder is Linear(D -> LATENT) (the posterior mean) then Linear(LATENT -> D) (the decoder mean W z + b);
    after conversion the log-sigma head's bias is set to the posterior's constant log sigma.
    """
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, LATENT, generator=generator, dtype=torch.float64))
    w = q * torch.tensor([2.0, 1.0], dtype=torch.float64)
    b = torch.randn(D, generator=generator, dtype=torch.float64)
    variance = 1 / (1 + w.pow(2).sum(0) / NOISE**2)
    gain = variance[:, None] * w.T / NOISE**2
    encoder, decoder = nn.Linear(D, LATENT).double(), nn.Linear(LATENT, D).double()
    with torch.no_grad():
        encoder.weight.copy_(gain)
        encoder.bias.copy_(-gain @ b)
        decoder.weight.copy_(w)
        decoder.bias.copy_(b)
    z = torch.randn(samples, LATENT, generator=generator, dtype=torch.float64)
    x = z @ w.T + b + NOISE * torch.randn(samples, D, generator=generator, dtype=torch.float64)
    vae, _ = fxvae.convert(nn.Sequential(encoder, decoder).eval(), x[:4])
    with torch.no_grad():
        vae.get_parameter("log_sigma_head.bias").copy_(0.5 * torch.log(variance))
    covariance = w @ w.T + NOISE**2 * torch.eye(D, dtype=torch.float64)
    log_px = torch.distributions.MultivariateNormal(b, covariance).log_prob(x)
    return vae, x, -log_px.mean()


@pytest.mark.parametrize("k", [1, 7, 64])
def test_with_the_exact_posterior_the_elbo_and_the_iwae_bound_are_log_p_x_for_every_k(k: int) -> None:
    vae, x, nll = linear_gaussian()
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=NOISE, k=k)
    assert result.neg_elbo.value == pytest.approx(nll.item(), abs=1e-9)
    assert result.nll.value == pytest.approx(nll.item(), abs=1e-9)
    assert result.recon.value + result.kl.value == pytest.approx(result.neg_elbo.value, abs=1e-9)


def test_with_a_perturbed_encoder_the_iwae_bound_lies_between_the_elbo_and_log_p_x_and_tightens_with_k() -> None:
    vae, x, nll = linear_gaussian(200)
    with torch.no_grad():
        vae.get_parameter("log_sigma_head.bias").add_(0.6)
        vae.get_parameter("mu_head.weight").mul_(0.8)
    # Draw i is the same number for every k (fxvae.measure.noise), so the bounds over k are one path of draws; at seed 0
    # that path's k = 100 estimate lies 4e-4 below log p(x), within its noise, so seed 1 shows the expected order.
    results = {k: fxvae.evaluate(vae, x, likelihood="gaussian", sigma=NOISE, k=k, seed=1) for k in (1, 10, 100, 5000)}
    assert results[1].nll.value == pytest.approx(results[1].neg_elbo.value, abs=1e-12)
    bounds = [results[k].nll.value for k in sorted(results)]
    assert all(later < earlier for earlier, later in itertools.pairwise(bounds))
    for result in results.values():
        assert result.nll.value <= result.neg_elbo.value
    gap = results[1].nll.value - nll.item()
    assert gap > 0.5
    closest = results[5000]
    assert abs(closest.nll.value - nll.item()) <= closest.nll.stderr
    assert closest.nll.value - nll.item() < 0.02 * gap


def test_mutual_info_and_active_units_of_a_latent_that_copies_x_and_one_that_ignores_it() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 4, generator=generator, dtype=torch.float64)
    encoder, decoder = nn.Linear(4, 2).double(), nn.Linear(2, 4).double()
    with torch.no_grad():
        encoder.weight.zero_()
        encoder.weight[0, 0] = 1.0  # mu_0 = x_0, mu_1 = 0.3 whatever x is
        encoder.bias.copy_(torch.tensor([0.0, 0.3], dtype=torch.float64))
    vae, _ = fxvae.convert(nn.Sequential(encoder, decoder).eval(), x[:4])
    sigma = 0.5
    with torch.no_grad():
        vae.get_parameter("log_sigma_head.bias").fill_(math.log(sigma))
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0, mixture=2000)
    assert result.active_units == 1
    assert result.unit_variance[0] == pytest.approx(x[:, 0].var().item(), rel=1e-9)
    assert result.unit_variance[1] == pytest.approx(0.0, abs=1e-12)
    # A Gaussian channel: I(x_0; x_0 + sigma eps) = 1/2 log(1 + Var x_0 / sigma^2); dimension 1 adds nothing.
    channel = 0.5 * math.log(1 + x[:, 0].var().item() / sigma**2)
    assert result.mutual_info.value == pytest.approx(channel, abs=3 * result.mutual_info.stderr + 0.02)
    assert result.kl_per_dim[1] == pytest.approx(0.5 * (0.3**2 + sigma**2 - 1) - math.log(sigma), rel=1e-9)


def test_a_latent_that_ignores_x_carries_no_information_and_no_active_unit() -> None:
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    encoder, decoder = nn.Linear(4, 3), nn.Linear(3, 4)
    with torch.no_grad():
        encoder.weight.zero_()
    vae, _ = fxvae.convert(nn.Sequential(encoder, decoder).eval(), x[:4])
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=1.0)
    assert result.active_units == 0
    assert result.mutual_info.value == pytest.approx(0.0, abs=1e-9)


def test_gaussian_terms_match_torch_distributions_on_a_converted_vae() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    model = build(entry)
    x = entry.inputs(50)[0]
    vae, _ = fxvae.convert(model, x[:4], log_sigma_init=-1.0)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=0.7, k=3, seed=5)
    encoder, decoder = fxvae.split(vae)
    with torch.no_grad():
        mu, log_sigma = encoder(x)
        eps = fxvae.measure.noise.normal(5, 0, torch.arange(50), range(3), tuple(mu.shape[1:]))
        z = mu + log_sigma.exp() * eps
        recon = decoder(z.flatten(0, 1)).view(3, 50, -1)
        log_px = torch.distributions.Normal(recon, 0.7).log_prob(x).sum(-1).double()
        q = torch.distributions.Normal(mu, log_sigma.exp())
        prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
        log_w = log_px + (prior.log_prob(z) - q.log_prob(z)).sum(-1).double()
        kl = torch.distributions.kl_divergence(q, prior).sum(-1)
    assert result.neg_elbo.value == pytest.approx(-log_w.mean().item(), rel=1e-5)
    assert result.nll.value == pytest.approx((math.log(3) - torch.logsumexp(log_w, 0)).mean().item(), rel=1e-5)
    assert result.kl.value == pytest.approx(kl.mean().item(), rel=1e-5)
    assert result.nll.stderr == pytest.approx(
        (math.log(3) - torch.logsumexp(log_w, 0)).std().item() / 50**0.5, rel=1e-4
    )


def test_an_autoencoder_is_measured_by_its_reconstruction_term_alone() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    model = build(entry)
    x = entry.inputs(40)[0]
    result = fxvae.evaluate(model, x, likelihood="gaussian", sigma=0.5)
    with torch.no_grad():
        expected = -torch.distributions.Normal(model(x), 0.5).log_prob(x).sum(1).mean()
    assert result.kind == "ae" and result.measured == ("recon",)
    assert result.recon.value == pytest.approx(expected.item(), rel=1e-5)
    assert result.k == 1 and result.nll is None and result.active_units is None


def test_the_optimal_gaussian_sigma_is_the_root_mean_squared_error_and_is_reported() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    model = build(entry)
    x = entry.inputs(40)[0]
    result = fxvae.evaluate(model, x)
    with torch.no_grad():
        rmse = (model(x) - x).pow(2).mean().sqrt().item()
    assert result.scale == pytest.approx(rmse, rel=1e-5)
    assert result.likelihood == f"gaussian(sigma={rmse:.4g}, optimal)"
    vae, _ = fxvae.convert(model, x[:4])
    assert fxvae.evaluate(vae, x, k=4).scale > 0


def test_per_dimension_and_bits_per_dimension_divide_by_the_data_size() -> None:
    vae, x, _ = linear_gaussian(50)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=NOISE, k=2)
    assert result.data_dims == D
    assert result.per_dim("nll").value == pytest.approx(result.nll.value / D)
    assert result.bits_per_dim("nll").value == pytest.approx(result.nll.value / D / math.log(2))
    assert "nll" in str(result) and "bits/dim" in str(result)


def test_the_record_round_trips_through_json_with_what_it_was_computed_with() -> None:
    vae, x, _ = linear_gaussian(30)
    result = fxvae.evaluate(vae, x, likelihood="laplace", sigma=0.4, k=5, seed=3)
    again = fxvae.Evaluation.from_dict(__import__("json").loads(result.to_json()))
    assert again == result
    assert (again.n, again.k, again.seed, again.likelihood) == (30, 5, 3, "laplace(b=0.4)")


def test_the_k_draws_run_as_one_decoder_call_per_chunk() -> None:
    vae, x, _ = linear_gaussian(20)
    decoder = vae.get_submodule("1")
    calls: list[int] = []
    handle = decoder.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    try:
        fxvae.evaluate(vae, x, likelihood="gaussian", sigma=NOISE, k=10, chunk=4)
    finally:
        handle.remove()
    assert calls == [4 * 20, 4 * 20, 2 * 20]


@pytest.mark.parametrize(
    ("k", "chunk", "batch_size"),
    [(1, None, 7), (7, 3, 20), (999, None, 20), (999, 64, 7), (1000, 100, 6), (5000, None, 20), (5000, 333, 9)],
)
def test_k_means_k_draws_for_every_sample_whatever_the_chunk_and_batch(
    k: int, chunk: int | None, batch_size: int
) -> None:
    # pythae 0.1.2's get_nll draws batch_size samples when n_samples <= batch_size and a multiple of it otherwise
    # (n_samples=999 gives 900). Each decoded draw reaches the likelihood beside its own sample: count them.
    vae, x, _ = linear_gaussian(20)
    targets: list[torch.Tensor] = []

    def log_prob(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        targets.append(target.clone())
        return -0.5 * (recon - target).pow(2).sum(1)

    result = fxvae.evaluate(vae, x, likelihood=log_prob, k=k, chunk=chunk, batch_size=batch_size)
    # The first call checks the callable's output on the first chunk, which the second then measures: once per
    # evaluation, so a callable that is slow to call is not called again for every batch.
    assert torch.equal(targets[0], targets[1])
    seen = torch.cat(targets[1:])
    which = (seen[:, None, :] == x[None]).all(-1)
    assert bool(which.any(1).all())  # every target row is one of the samples
    assert which.sum(0).tolist() == [k] * len(x) and result.k == k


def test_at_k_1_the_nll_is_the_neg_elbo_exactly() -> None:
    vae, x, _ = linear_gaussian(20)
    result = fxvae.evaluate(vae, x, likelihood="gaussian", sigma=NOISE, k=1, per_sample=True)
    assert torch.equal(result.per_sample["nll"], result.per_sample["neg_elbo"])
    assert result.nll == result.neg_elbo


@pytest.mark.parametrize("name", ["mlp_sigmoid", "shape_control_flow", "conditional", "conv_latent"])
def test_evaluate_leaves_the_mode_the_parameters_and_the_global_random_state_as_they_were(name: str) -> None:
    entry = BY_NAME[name]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4))
    vae.train()
    data = entry.inputs(30)
    before = snapshot(vae)
    state = torch.get_rng_state()
    fxvae.evaluate(vae, [data], likelihood="gaussian", sigma=1.0, k=3)
    assert_unchanged(vae, before)
    assert torch.equal(torch.get_rng_state(), state)


def _finite(result: fxvae.Evaluation) -> bool:
    return all(math.isfinite(getattr(result, name).value) for name in result.measured)


@pytest.mark.parametrize("name", ["mlp_sigmoid", "shape_control_flow", "encode_decode", "token_attention"])
def test_every_graph_tier_evaluates(name: str) -> None:
    entry = BY_NAME[name]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4))
    result = fxvae.evaluate(vae, entry.inputs(24)[0], k=4)
    assert result.n == 24 and _finite(result)
    assert result.latent_dims == math.prod(entry.latent_shape)
    assert result.nll.value <= result.neg_elbo.value


def test_the_hooks_tier_evaluates() -> None:
    torch.manual_seed(0)
    vae, _ = fxvae.convert(BranchesOnValues().eval(), torch.randn(4, 16))
    assert fxvae.conversion(vae).tracer == "hooks"
    result = fxvae.evaluate(vae, torch.randn(20, 16), k=3)
    assert _finite(result) and result.latent_dims == 3


def test_a_conditional_vae_evaluates_from_a_loader_of_data_and_labels() -> None:
    entry = BY_NAME["conditional"]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4))
    x, label = entry.inputs(30)
    loader = DataLoader(TensorDataset(x, label), batch_size=8)
    result = fxvae.evaluate(vae, loader, k=3)
    assert result.n == 30 and _finite(result)
    # The label reaches the decoder: another label gives another reconstruction term.
    other = fxvae.evaluate(vae, [(x, (label + 1) % 10)], likelihood="gaussian", sigma=1.0, k=3)
    same = fxvae.evaluate(vae, [(x, label)], likelihood="gaussian", sigma=1.0, k=3)
    assert other.recon.value != pytest.approx(same.recon.value)


def test_a_calibrated_vae_evaluates_and_starts_with_unit_spread_codes() -> None:
    entry = BY_NAME["conv_flat_linear"]
    data = entry.inputs(300)[0]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4), calibration=data)
    result = fxvae.evaluate(vae, data, k=2)
    assert _finite(result)
    assert all(v == pytest.approx(1.0, rel=0.02) for v in result.unit_variance)


def test_a_dataset_is_batched_and_a_loader_refuses_a_batch_size() -> None:
    vae, x, _ = linear_gaussian(40)
    assert fxvae.evaluate(vae, TensorDataset(x), batch_size=7, likelihood="gaussian", sigma=1.0).n == 40
    with pytest.raises(fxvae.InputError, match="makes its own batches"):
        fxvae.evaluate(vae, DataLoader(TensorDataset(x), batch_size=4), batch_size=7)


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        (torch.randn(10, 63), {}, r"batch 0 of the data has shape \[10, 63\], but the model takes \['batch', 64\]"),
        (torch.full((10, 64), float("nan")), {}, "NaN or inf"),
        (DataLoader(TensorDataset(torch.randn(0, 64)), batch_size=4), {}, "the data is empty"),
        (torch.randn(10, 64), {"k": 0}, "k=0 must be a positive integer"),
        (torch.randn(10, 64), {"likelihood": "bernoulli"}, r"needs targets in \[0, 1\]"),
        (torch.rand(10, 64), {"likelihood": "bernoulli-probs"}, "needs probabilities"),
        (torch.randn(10, 64), {"likelihood": lambda recon, x: recon}, "one log-probability per sample"),
        (torch.randn(10, 64), {"chunk": -1}, "chunk=-1"),
        (3.0, {}, "must be a tensor, a Dataset or an iterable of batches"),
    ],
    ids=["shape", "nan", "empty", "k", "bernoulli_targets", "probs", "callable", "chunk", "not_data"],
)
def test_bad_inputs_are_input_errors_and_change_nothing(data: object, options: dict, message: str) -> None:
    entry = BY_NAME["mlp_sigmoid"]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4))
    before = snapshot(vae)
    with pytest.raises(fxvae.InputError, match=message):
        fxvae.evaluate(vae, data, **options)
    assert_unchanged(vae, before)


@pytest.mark.parametrize("latent", [fxvae.VQ(codebook_size=16), fxvae.FSQ(levels=(4, 4, 3))], ids=["vq", "fsq"])
def test_a_discrete_model_is_measured_by_its_reconstruction_rate_and_code_use(latent: LatentConfig) -> None:
    entry = BY_NAME["conv_latent"]
    data = entry.inputs(64)[0]
    model, _ = fxvae.convert(build(entry), data[:4], latent=latent, calibration=data)
    model.train()
    before = snapshot(model)
    result = fxvae.evaluate(model, data, likelihood="gaussian", sigma=1.0)
    assert_unchanged(model, before)
    info = fxvae.conversion(model).quantizer
    positions = math.prod(info.code_shape)
    with torch.no_grad(), fxvae.modules.eval_mode(model):
        expected = -torch.distributions.Normal(model(data), 1.0).log_prob(data).flatten(1).sum(1).mean()
        codes = fxvae.tokenize(model, data)
    assert result.kind == latent.family and result.nll is None
    assert result.recon.value == pytest.approx(expected.item(), rel=1e-5)
    assert result.kl.value == pytest.approx(positions * math.log(info.codebook_size))
    assert result.rate_bits == pytest.approx(positions * info.rate_bits)
    assert result.codes_used == pytest.approx(codes.unique().numel() / info.codebook_size)
    assert 1 <= result.perplexity <= codes.unique().numel()


def _chunk_models() -> dict[str, tuple[nn.Module, torch.Tensor, int]]:
    """(autoencoder, data, bytes of its decoder's largest activation per row) for the chunk rule's decoders."""
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 8), nn.Linear(8, 512), nn.ReLU(), nn.Linear(512, 64), nn.Sigmoid()
    )
    conv = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 4, 1),
        nn.ConvTranspose2d(4, 16, 4, stride=2, padding=1),  # 16x16x16 floats a row: the largest
        nn.ReLU(),
        nn.Conv2d(16, 3, 3, padding=1),
    )
    conv1d = nn.Sequential(
        nn.Conv1d(1, 8, 4, stride=4),
        nn.ReLU(),
        nn.Conv1d(8, 2, 1),
        nn.ConvTranspose1d(2, 8, 4, stride=4),  # 8x128 floats a row
        nn.ReLU(),
        nn.Conv1d(8, 1, 3, padding=1),
    )
    return {
        "mlp": (mlp, torch.rand(24, 64), 512 * 4),
        "conv": (conv, torch.rand(24, 3, 16, 16), 16 * 16 * 16 * 4),
        "conv1d": (conv1d, torch.rand(24, 1, 128), 8 * 128 * 4),
    }


def test_the_chunk_rule_decodes_at_least_min_rows_a_call(monkeypatch) -> None:
    ae, x, row_bytes = _chunk_models()["conv"]
    vae, _ = fxvae.convert(ae.eval(), x[:2])
    encoder, decoder = fxvae.split(vae)
    with torch.no_grad():
        mu, _ = encoder(x[:1])
    monkeypatch.setattr(fxvae.measure.evaluation, "CACHE_BYTES", row_bytes)
    assert fxvae.measure.evaluation.chunk_rows(decoder, mu, []) == fxvae.measure.evaluation.MIN_ROWS


@pytest.mark.parametrize("name", ["mlp", "conv", "conv1d"])
def test_the_chunk_rule_keeps_the_decoders_largest_activation_within_the_cache_budget(name: str) -> None:
    ae, x, row_bytes = _chunk_models()[name]
    vae, _ = fxvae.convert(ae.eval(), x[:2])
    encoder, decoder = fxvae.split(vae)
    with torch.no_grad():
        mu, _ = encoder(x[:1])
    annotations = [node.meta.get("tensor_meta") for node in decoder.graph.nodes]
    rows = fxvae.measure.evaluation.chunk_rows(decoder, mu, [])
    assert rows == fxvae.measure.evaluation.CACHE_BYTES // row_bytes
    assert rows >= fxvae.measure.evaluation.MIN_ROWS
    # Shape propagation leaves the decoder's own annotations as they were.
    assert [node.meta.get("tensor_meta") for node in decoder.graph.nodes] == annotations


@pytest.mark.parametrize(("budget_rows", "calls"), [(5, [5] * 14 + [2]), (48, [48, 24]), (24, [24] * 3)])
def test_the_default_chunk_decodes_the_rules_rows_per_call(monkeypatch, budget_rows: int, calls: list[int]) -> None:
    ae, x, row_bytes = _chunk_models()["mlp"]
    vae, _ = fxvae.convert(ae.eval(), x[:2])
    monkeypatch.setattr(fxvae.measure.evaluation, "CACHE_BYTES", budget_rows * row_bytes)
    monkeypatch.setattr(fxvae.measure.evaluation, "MIN_ROWS", 1)
    seen: list[int] = []
    handle = vae.get_submodule("3").register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    try:
        fxvae.evaluate(vae, x[:24], likelihood="bernoulli-probs", k=3, batch_size=24)
    finally:
        handle.remove()
    # Shape propagation runs the decoder once on 1 row and once on 2. Then the 24 samples' 3 draws are 72 rows,
    # decoded 5 rows a call (the last call the 2 left), 48 a call (2 draws of the batch, then the third) or 24
    # (one draw of the batch per call).
    assert seen == [1, 2, *calls]


def test_the_chunk_rule_falls_back_to_output_elements_where_the_decoder_has_no_graph() -> None:
    torch.manual_seed(0)
    vae, _ = fxvae.convert(BranchesOnValues().eval(), torch.randn(4, 16))
    _, decoder = fxvae.split(vae)
    assert fxvae.conversion(vae).tracer == "hooks"
    assert fxvae.measure.evaluation.chunk_rows(decoder, torch.zeros(1, 3), []) is None
    first = next(m for m in vae.modules() if isinstance(m, nn.Linear) and m.in_features == 3)
    seen: list[int] = []
    handle = first.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    try:
        fxvae.evaluate(vae, torch.randn(20, 16), likelihood="gaussian", sigma=1.0, k=1000, batch_size=20)
    finally:
        handle.remove()
    draws = fxvae.measure.evaluation.CHUNK_ELEMENTS // (20 * 16)
    assert seen[: 1000 // draws] == [draws * 20] * (1000 // draws)


@pytest.mark.parametrize("name", ["mlp", "conv", "conv1d"])
def test_the_per_sample_numbers_do_not_depend_on_the_chunk(monkeypatch, name: str) -> None:
    # float64: a float32 conv's output itself changes in its last bits with the batch size (its algorithm does).
    ae, x, row_bytes = _chunk_models()[name]
    ae, x, row_bytes = ae.double(), x.double(), 2 * row_bytes
    vae, _ = fxvae.convert(ae.eval(), x[:2], log_sigma_init=-1.0)
    options = {"likelihood": "gaussian", "sigma": 0.3, "k": 7, "seed": 2, "per_sample": True}
    base = fxvae.evaluate(vae, x, chunk=7, batch_size=24, **options).per_sample
    runs = [fxvae.evaluate(vae, x, chunk=chunk, batch_size=10, **options).per_sample for chunk in (1, 3, None)]
    monkeypatch.setattr(fxvae.measure.evaluation, "CACHE_BYTES", 5 * row_bytes)  # calls of 5 rows
    monkeypatch.setattr(fxvae.measure.evaluation, "MIN_ROWS", 1)
    runs.append(fxvae.evaluate(vae, x, batch_size=24, **options).per_sample)
    for other in runs:
        for key, values in base.items():
            torch.testing.assert_close(other[key], values, rtol=1e-12, atol=1e-12, msg=key)
