"""Calibrated conversion: mu standardised over the user's data, eval outputs still the AE's."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import fxvae
from fxvae.cli.app import app
from tests.helpers import recon
from tests.zoo import ZOO, ZooEntry, build

BY_NAME = {e.name: e for e in ZOO}
SAMPLES = 300


def _data(entry: ZooEntry, args: tuple[torch.Tensor, ...] | None = None) -> object:
    """Calibration data for ``entry``: its example inputs for ``SAMPLES`` samples (or ``args``)."""
    args = entry.inputs(SAMPLES) if args is None else args
    return args[0] if len(args) == 1 else [args]


def _relative_error(vae: torch.nn.Module, model: torch.nn.Module, args: tuple[object, ...]) -> float:
    with torch.no_grad():
        got, want = recon(vae.eval()(*args)), recon(model(*args))
    return ((got - want).abs().max() / want.abs().max()).item()


def _mu(vae: torch.nn.Module, args: tuple[object, ...]) -> torch.Tensor:
    encoder, _ = fxvae.split(vae)
    with torch.no_grad():
        return encoder.eval()(*args)[0]


@pytest.mark.parametrize("fold", [True, False], ids=["fold", "no_fold"])
@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_a_calibrated_vae_returns_the_aes_outputs_in_eval_mode(entry: ZooEntry, fold: bool) -> None:
    model = build(entry)
    vae, _ = fxvae.convert(model, entry.inputs(4), latent=fxvae.Gaussian(fold=fold), calibration=_data(entry))
    assert _relative_error(vae, model, entry.inputs(9)) <= 1e-5


@pytest.mark.parametrize("mode", ["element", "channel", "whiten"])
@pytest.mark.parametrize("name", ["mlp_sigmoid", "conv_latent", "functional_linear", "token_attention"])
def test_every_standardisation_keeps_eval_outputs(name: str, mode: str) -> None:
    entry = BY_NAME[name]
    model = build(entry)
    vae, _ = fxvae.convert(model, entry.inputs(4), calibration=_data(entry), standardize=mode)
    assert fxvae.conversion(vae).calibration.standardize == mode
    assert _relative_error(vae, model, entry.inputs(9)) <= 1e-5


@pytest.mark.parametrize("fold", [True, False], ids=["fold", "no_fold"])
@pytest.mark.parametrize("name", ["mlp_sigmoid", "conv_flat_linear", "dict_output", "recurrent"])
def test_mu_over_the_calibration_data_has_mean_zero_and_unit_spread_per_element(name: str, fold: bool) -> None:
    entry = BY_NAME[name]
    data = entry.inputs(SAMPLES)
    latent = fxvae.Gaussian(standardize="element", fold=fold)
    vae, _ = fxvae.convert(build(entry), entry.inputs(4), latent=latent, calibration=_data(entry, data))
    mu = _mu(vae, data).flatten(1).double()
    torch.testing.assert_close(mu.mean(0), torch.zeros(mu.shape[1], dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(mu.std(0, correction=0), torch.ones(mu.shape[1], dtype=torch.float64), atol=1e-4, rtol=0)


def test_channel_standardisation_of_a_conv_latent_is_per_channel() -> None:
    entry = BY_NAME["conv_latent"]
    data = entry.inputs(SAMPLES)
    vae, _ = fxvae.convert(build(entry), entry.inputs(4), calibration=_data(entry, data))
    assert fxvae.conversion(vae).calibration.standardize == "channel"
    per_channel = _mu(vae, data).transpose(0, 1).flatten(1).double()
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1, correction=0), torch.ones(2, dtype=torch.float64), atol=1e-4, rtol=0)


def test_whitening_gives_mu_an_identity_covariance() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    data = entry.inputs(SAMPLES)
    vae, _ = fxvae.convert(build(entry), entry.inputs(4), calibration=_data(entry, data), standardize="whiten")
    mu = _mu(vae, data).double()
    centred = mu - mu.mean(0)
    covariance = centred.T @ centred / len(mu)
    torch.testing.assert_close(covariance, torch.eye(8, dtype=torch.float64), atol=1e-4, rtol=0)


def test_the_map_folds_into_a_plain_mu_head_and_first_decoder_layer() -> None:
    entry = BY_NAME["conv_flat_linear"]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4), calibration=_data(entry))
    info = fxvae.conversion(vae).calibration
    assert (info.folded_mu, info.folded_decoder) == ("mu_head", "dec.0")
    assert "_modules['calibration']" not in vae.code


def _codes_scaled(model: nn.Module, scale: float) -> nn.Module:
    """conv_flat_linear computing the same function with codes ``scale`` times larger."""
    twin = build(BY_NAME["conv_flat_linear"])
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        twin.enc[3].weight.mul_(scale)
        twin.enc[3].bias.mul_(scale)
        twin.dec[0].weight.div_(scale)
    return twin


@pytest.mark.parametrize(("fold", "same"), [(True, True), (False, False)], ids=["fold", "no_fold"])
def test_a_folded_calibration_makes_the_vaes_weights_independent_of_the_aes_code_scale(fold: bool, same: bool) -> None:
    # An AE is free to scale its codes (its bottleneck layer times c, the decoder's first layer over c): folded,
    # the calibrated VAE an optimiser sees is the same; unfolded, it keeps the AE's scale.
    entry = BY_NAME["conv_flat_linear"]
    model, data = build(entry), _data(entry)
    weights = []
    for ae in (model, _codes_scaled(model, 10.0)):
        vae, _ = fxvae.convert(ae, entry.inputs(4), latent=fxvae.Gaussian(fold=fold), calibration=data)
        weights.append({k: v for k, v in vae.state_dict().items() if not k.startswith("calibration.")})
    close = [torch.allclose(weights[0][k], weights[1][k], rtol=1e-4, atol=1e-6) for k in weights[0]]
    assert all(close) == same


def test_the_map_is_a_named_node_where_an_activation_follows_the_layer() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4), calibration=_data(entry))
    assert fxvae.conversion(vae).calibration.folded_mu is None
    assert "calibration = self._modules['calibration'](enc_3)" in vae.code


@pytest.mark.parametrize("name", ["mlp_sigmoid", "conv_latent"])
def test_kl_at_init_equals_its_closed_form(name: str) -> None:
    entry = BY_NAME[name]
    vae, kl = fxvae.convert(build(entry), entry.inputs(4), calibration=_data(entry), log_sigma_init=-1.0)
    vae.train()(*entry.inputs(16))
    mu = fxvae.posterior(vae).mu.flatten(1)
    expected = 0.5 * (mu.pow(2) + torch.exp(torch.tensor(-2.0)) + 2.0 - 1.0).sum(1).mean()
    torch.testing.assert_close(kl(), expected)


@pytest.mark.parametrize("fold", [True, False], ids=["fold", "no_fold"])
@pytest.mark.parametrize("name", ["mlp_sigmoid", "conv_flat_linear", "conv_latent", "conditional"])
def test_save_and_load_round_trip_the_calibration(name: str, fold: bool, tmp_path: Path) -> None:
    entry = BY_NAME[name]
    latent = fxvae.Gaussian(standardize="whiten", fold=fold)
    vae, _ = fxvae.convert(build(entry), entry.inputs(4), latent=latent, calibration=_data(entry))
    fxvae.save(vae, tmp_path / "vae.safetensors")
    loaded, _ = fxvae.load(build(entry, seed=5), tmp_path / "vae.safetensors", entry.inputs(4))
    assert fxvae.conversion(loaded).calibration == fxvae.conversion(vae).calibration
    assert fxvae.conversion(loaded).options.latent.fold is fold
    assert loaded.state_dict().keys() == vae.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in vae.state_dict().items())
    args = entry.inputs(7)
    assert torch.equal(recon(loaded.eval()(*args)), recon(vae.eval()(*args)))


@pytest.mark.parametrize("fold", [True, False], ids=["fold", "no_fold"])
@pytest.mark.parametrize("name", ["mlp_sigmoid", "conv_flat_linear", "tuple_output"])
def test_split_puts_the_inverse_map_on_the_decoder_side(name: str, fold: bool) -> None:
    entry = BY_NAME[name]
    model = build(entry)
    vae, _ = fxvae.convert(model, entry.inputs(4), latent=fxvae.Gaussian(fold=fold), calibration=_data(entry))
    encoder, decoder = fxvae.split(vae)
    args = entry.inputs(6)
    with torch.no_grad():
        mu, _ = encoder(*args)
        decoded = recon(decoder(mu, *args[1:]))
        want = recon(model(*args))
    assert torch.equal(decoded, recon(vae.eval()(*args)))
    assert ((decoded - want).abs().max() / want.abs().max()).item() <= 1e-5


def test_recalibrating_undoes_the_old_map_first() -> None:
    entry = BY_NAME["conv_flat_linear"]
    model = build(entry)
    vae, _ = fxvae.convert(model, entry.inputs(4), calibration=_data(entry))
    shifted = entry.inputs(SAMPLES)[0] * 3.0 + 1.0
    fxvae.calibrate(vae, shifted, standardize="whiten")
    assert _relative_error(vae, model, entry.inputs(9)) <= 1e-5
    mu = _mu(vae, (shifted,)).double()
    torch.testing.assert_close(mu.mean(0), torch.zeros(10, dtype=torch.float64), atol=1e-4, rtol=0)


# Names of zoo models where the default fold=True folds the map into the mu head or the decoder's first layer.
FOLDING = ["mlp_sigmoid", "conv_flat_linear", "conv_latent", "functional_linear", "token_attention", "recurrent"]


@pytest.mark.parametrize("name", FOLDING)
def test_without_fold_every_weight_of_the_ae_is_the_vaes_exactly(name: str) -> None:
    entry = BY_NAME[name]
    model = build(entry)
    vae, _ = fxvae.convert(model, entry.inputs(4), latent=fxvae.Gaussian(fold=False), calibration=_data(entry))
    recipe = fxvae.conversion(vae)
    ae_weights, vae_weights = model.state_dict(), vae.state_dict()
    kept = [k for k in ae_weights if k not in recipe.dropped_keys]
    assert recipe.bottleneck.layer is not None and recipe.key_map  # the AE's bottleneck layer is the mu head
    assert all(torch.equal(vae_weights[recipe.key_map.get(k, k)], ae_weights[k]) for k in kept)


@pytest.mark.parametrize("name", FOLDING)
def test_without_fold_the_map_runs_as_a_frozen_module_on_both_sides_of_the_reparameterisation(name: str) -> None:
    entry = BY_NAME[name]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4), latent=fxvae.Gaussian(fold=False), calibration=_data(entry))
    info = fxvae.conversion(vae).calibration
    assert (info.folded_mu, info.folded_decoder) == (None, None)
    assert vae.code.count(f"self._modules['{info.module}']") == 2
    assert list(vae.get_submodule(info.module).parameters()) == []


@pytest.mark.parametrize(("first", "then"), [(True, False), (False, True)], ids=["fold_then_not", "not_then_fold"])
def test_recalibrating_with_the_other_fold_undoes_the_old_map_and_keeps_outputs(first: bool, then: bool) -> None:
    entry = BY_NAME["conv_flat_linear"]
    model = build(entry)
    vae, _ = fxvae.convert(model, entry.inputs(4), latent=fxvae.Gaussian(fold=first), calibration=_data(entry))
    shifted = entry.inputs(SAMPLES)[0] * 3.0 + 1.0
    fxvae.calibrate(vae, shifted, fold=then)
    recipe = fxvae.conversion(vae)
    assert recipe.options.latent.fold is then
    folded = ("mu_head", "dec.0") if then else (None, None)
    assert (recipe.calibration.folded_mu, recipe.calibration.folded_decoder) == folded
    assert _relative_error(vae, model, entry.inputs(9)) <= 1e-5
    mu = _mu(vae, (shifted,)).double()
    torch.testing.assert_close(mu.mean(0), torch.zeros(10, dtype=torch.float64), atol=1e-4, rtol=0)


def test_recalibrating_without_a_fold_keeps_the_vaes_own() -> None:
    entry = BY_NAME["conv_flat_linear"]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4), latent=fxvae.Gaussian(fold=False), calibration=_data(entry))
    fxvae.calibrate(vae, _data(entry), standardize="whiten")
    recipe = fxvae.conversion(vae)
    assert recipe.options.latent.fold is False
    assert (recipe.calibration.folded_mu, recipe.calibration.folded_decoder) == (None, None)


def test_a_fold_that_is_not_a_bool_is_refused_before_anything_changes() -> None:
    with pytest.raises(fxvae.InputError, match=r"fold='no' must be True .* or False .*: pass a bool"):
        fxvae.Gaussian(fold="no")
    entry = BY_NAME["mlp_sigmoid"]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4))
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    with pytest.raises(fxvae.InputError, match=r"fold=1 must be True"):
        fxvae.calibrate(vae, _data(entry), fold=1)
    assert fxvae.conversion(vae).calibration is None
    assert all(torch.equal(vae.state_dict()[k], v) for k, v in before.items())


def test_a_dataloader_of_labelled_batches_calibrates_the_data_input() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    x = entry.inputs(SAMPLES)[0]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(SAMPLES)), batch_size=64)
    from_loader, _ = fxvae.convert(build(entry), entry.inputs(4), calibration=loader)
    from_tensor, _ = fxvae.convert(build(entry), entry.inputs(4), calibration=x)
    assert fxvae.conversion(from_loader).calibration.samples == SAMPLES
    torch.testing.assert_close(from_loader.get_buffer("calibration.mean"), from_tensor.get_buffer("calibration.mean"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (torch.randn(50, 63), r"a calibration batch has shape \[50, 63\], but the model takes \['batch', 64\]"),
        (torch.randn(0, 64), "the calibration data is empty"),
        (torch.full((50, 64), float("nan")), "NaN or inf"),
        (torch.randn(1, 64), "at least 2 samples"),
        (3.0, "must be a tensor, a Dataset or an iterable of batches"),
    ],
    ids=["wrong_shape", "empty", "nan", "one_sample", "not_data"],
)
def test_bad_calibration_data_is_an_input_error(data: object, message: str) -> None:
    entry = BY_NAME["mlp_sigmoid"]
    with pytest.raises(fxvae.InputError, match=message):
        fxvae.convert(build(entry), entry.inputs(4), calibration=data)


def test_auto_log_sigma_needs_calibration_data() -> None:
    entry = BY_NAME["mlp_sigmoid"]
    with pytest.raises(fxvae.InputError, match="log_sigma_init='auto' sets log sigma from data"):
        fxvae.convert(build(entry), entry.inputs(4), log_sigma_init="auto")


class IgnoresHalf(nn.Module):
    """The decoder's weights for the last two of four latent dimensions are zero."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(16, 4)
        self.dec = nn.Linear(4, 16)
        with torch.no_grad():
            self.dec.weight[:, 2:] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_auto_log_sigma_is_the_prior_where_the_decoder_ignores_a_dimension(likelihood: str) -> None:
    torch.manual_seed(0)
    model = IgnoresHalf().eval()
    data = torch.randn(SAMPLES, 16)
    vae, _ = fxvae.convert(model, data[:4], calibration=data, log_sigma_init="auto", likelihood=likelihood)
    bias = vae.get_parameter("log_sigma_head.bias").detach()
    assert torch.all(bias[:2] < -0.01)
    torch.testing.assert_close(bias[2:], torch.zeros(2), atol=1e-6, rtol=0)
    assert fxvae.conversion(vae).options.latent.log_sigma_init == "auto"


def test_a_calibrated_vae_samples_the_aes_codes_from_the_prior() -> None:
    entry = BY_NAME["conv_flat_linear"]
    model = build(entry)
    data = entry.inputs(2000)[0]
    vae, _ = fxvae.convert(model, entry.inputs(4), calibration=data)
    samples = fxvae.sample(vae, 2000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoded = model(data)
    # Decoding N(0, I) draws lands where decoding the AE's own codes does: same per-pixel mean and spread.
    torch.testing.assert_close(samples.mean(0), decoded.mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(samples.std(0), decoded.std(0), atol=0.1, rtol=0.2)


@pytest.mark.parametrize("fold", [True, False], ids=["fold", "no_fold"])
def test_the_hooks_tier_calibrates_through_its_latent_hook(fold: bool, tmp_path: Path) -> None:
    from tests.test_patterns import BranchesOnValues

    torch.manual_seed(0)
    model = BranchesOnValues().eval()
    data = torch.randn(SAMPLES, 16)
    vae, _ = fxvae.convert(model, data[:4], latent=fxvae.Gaussian(fold=fold), calibration=data)
    assert fxvae.conversion(vae).tracer == "hooks"
    assert _relative_error(vae, model, (data[:9],)) <= 1e-5
    mu = _mu(vae, (data,)).double()
    torch.testing.assert_close(mu.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    fxvae.save(vae, tmp_path / "vae.safetensors")
    loaded, _ = fxvae.load(BranchesOnValues().eval(), tmp_path / "vae.safetensors", data[:4])
    assert torch.equal(recon(loaded.eval()(data[:5])), recon(vae.eval()(data[:5])))
    assert fxvae.conversion(loaded).options.latent.fold is fold


@pytest.mark.parametrize("flag", ["--fold", "--no-fold"])
def test_the_command_line_calibrates_from_a_data_file(flag: str, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from tests import cli_models

    save_file(cli_models.mlp_ae().state_dict(), tmp_path / "ae.safetensors")
    torch.save(torch.randn(200, 16), tmp_path / "data.pt")
    out = tmp_path / "vae.safetensors"
    result = CliRunner().invoke(
        app,
        [
            "convert",
            "tests/cli_models.py:mlp_ae",
            "--checkpoint",
            str(tmp_path / "ae.safetensors"),
            "--input-shape",
            "2,16",
            "--out",
            str(out),
            "--calibration",
            str(tmp_path / "data.pt"),
            "--standardize",
            "whiten",
            flag,
        ],
    )
    assert result.exit_code == 0, result.stderr
    vae, _ = fxvae.load(cli_models.mlp_ae(), out, torch.randn(2, 16))
    assert fxvae.conversion(vae).calibration.standardize == "whiten"
    assert fxvae.conversion(vae).calibration.samples == 200
    assert fxvae.conversion(vae).options.latent.fold is (flag == "--fold")


def test_auto_log_sigma_warns_when_a_gaussian_reconstruction_looks_like_logits() -> None:
    class Logits(IgnoresHalf):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 50.0 * super().forward(x)

    torch.manual_seed(0)
    data = torch.rand(SAMPLES, 16)
    with pytest.warns(UserWarning, match="pass likelihood='bernoulli'"):
        fxvae.convert(Logits().eval(), data[:4], calibration=data, log_sigma_init="auto")


class MaskedEncoder(nn.Module):
    """A second input that only the encoder reads: the decoder of the split takes z alone."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        self.dec = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 16))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x * mask))


def test_an_input_only_the_encoder_reads_is_not_given_to_the_decoder() -> None:
    torch.manual_seed(0)
    x, mask = torch.randn(SAMPLES, 16), (torch.rand(SAMPLES, 16) > 0.2).float()
    vae, _ = fxvae.convert(MaskedEncoder().eval(), (x[:4], mask[:4]), calibration=[(x, mask)], log_sigma_init="auto")
    assert torch.isfinite(vae.get_parameter("log_sigma_head.bias")).all()
    result = fxvae.evaluate(vae, [(x, mask)], sigma=1.0, k=2)
    assert math.isfinite(result.nll.value)
