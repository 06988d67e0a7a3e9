"""convert(..., latent="vq" | "fsq") over the capture tiers: the recipe and its step-0 report, split, files, CLI,
and every bad input refused with the model unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from safetensors.torch import save_file
from torch import nn

import fxvae
from fxvae.cli.app import app
from fxvae.cli.errors import ExitCode
from tests import cli_models
from tests.discrete_zoo import BY_NAME, CODE_SHAPES, ENTRIES, HOOKS, assert_same_outputs, calibration, convert
from tests.helpers import leaves, recon
from tests.snapshot import assert_unchanged, snapshot
from tests.zoo import build

MLP = BY_NAME["mlp_sigmoid"]
LATENTS = ["vq", "fsq"]


def _mse(out: object, x: torch.Tensor) -> float:
    return F.mse_loss(recon(out).reshape(x.shape).double(), x.double()).item()


@pytest.mark.parametrize("latent", LATENTS)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_capture_tier_converts_to_a_discrete_latent(entry, latent: str) -> None:
    model, loss = convert(entry, latent)
    recipe = fxvae.conversion(model)
    info = recipe.quantizer
    assert (recipe.tracer, info.family, info.code_shape) == (entry.tracer, latent, CODE_SHAPES[entry.name])
    assert (recipe.mu_head, recipe.log_sigma_head, recipe.reparameterize, recipe.key_map.get("enc.2.weight")) == (
        None,
        None,
        None,
        None,
    )
    quantizer = model.get_submodule(info.module)
    assert isinstance(quantizer, fxvae.VectorQuantize if latent == "vq" else fxvae.FiniteScalarQuantize)
    assert {f"{info.module}.{k}" for k in quantizer.state_dict()} <= set(recipe.new_keys)
    args = entry.inputs(8)
    model.train()
    total = sum(t.float().pow(2).mean() for t in leaves(model(*args)) if t.is_floating_point()) + loss()
    total.backward()
    assert fxvae.quantized(model).codes.shape == (8, *info.code_shape)


@pytest.mark.parametrize("latent", LATENTS)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_split_decodes_the_quantised_latent_into_the_eval_output(entry, latent: str) -> None:
    model, _ = convert(entry, latent)
    quantizer = model.get_submodule(fxvae.conversion(model).quantizer.module)
    encoder, decoder = fxvae.split(model)
    args = entry.inputs(5)
    with torch.no_grad():
        expected = model.eval()(*args)
        latent_value = encoder(*args)
        got = decoder(quantizer(latent_value), *args[1:])
    assert latent_value.shape == (5, *entry.latent_shape)
    assert_same_outputs(got, expected)


@pytest.mark.parametrize("latent", LATENTS)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_the_recipe_reports_the_rate_and_the_step_0_cost_on_the_calibration_data(entry, latent: str) -> None:
    model, _ = convert(entry, latent)
    info = fxvae.conversion(model).quantizer
    args = calibration(entry)[0]
    with torch.no_grad():
        ae_mse, model_mse = _mse(build(entry)(*args), args[0]), _mse(model.eval()(*args), args[0])
    expected_rate = 4.0 if latent == "vq" else float(np.log2(5 * 4 * 3))
    assert info.rate_bits == pytest.approx(expected_rate)
    assert info.codebook_size == (16 if latent == "vq" else 60)
    assert info.samples == len(args[0])
    assert info.ae_mse == pytest.approx(ae_mse, rel=1e-5)
    assert info.quantized_mse == pytest.approx(model_mse, rel=1e-5)


def test_the_recipe_with_its_quantizer_round_trips_through_json() -> None:
    model, _ = convert(MLP, "fsq")
    recipe = fxvae.conversion(model)
    again = fxvae.Conversion.from_json(recipe.to_json())
    assert again == recipe and again.options.latent.levels == (5, 4, 3)
    assert json.loads(recipe.to_json())["quantizer"]["family"] == "fsq"


def test_fsq_converts_without_calibration_from_the_latent_as_it_is() -> None:
    model, _ = fxvae.convert(build(MLP), MLP.inputs(4), latent=fxvae.FSQ(levels=(4,) * 8))
    info = fxvae.conversion(model).quantizer
    assert (info.samples, info.ae_mse, info.projected) == (0, None, False)
    fsq = model.get_submodule(info.module)
    assert torch.equal(fsq.center, torch.zeros(8)) and torch.equal(fsq.scale, torch.ones(8))


@pytest.mark.parametrize(
    ("latent", "options"),
    [("vq", {}), ("vq", {"ema": False}), ("fsq", {})],
    ids=["vq-ema", "vq-gradient", "fsq"],
)
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_save_then_load_is_bit_exact_with_the_codebook_and_the_recipe(entry, latent, options, tmp_path: Path) -> None:
    model, loss = convert(entry, latent, **options)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    (sum(t.float().pow(2).mean() for t in leaves(model(*entry.inputs(8))) if t.is_floating_point()) + loss()).backward()
    opt.step()  # moves the codebook (EMA in the forward, or by gradient) and the projections
    fxvae.save(model, tmp_path / "m.safetensors")
    loaded, loaded_loss = fxvae.load(build(entry, seed=3), tmp_path / "m.safetensors", entry.inputs(4))
    expected, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    assert fxvae.conversion(loaded).quantizer == fxvae.conversion(model).quantizer
    assert isinstance(loaded_loss, fxvae.QuantizerLoss)
    args = entry.inputs(5)
    with torch.no_grad():
        pairs = zip(leaves(loaded.eval()(*args)), leaves(model.eval()(*args)), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)


def test_load_ae_state_dict_brings_new_autoencoder_weights_and_keeps_the_codebook() -> None:
    model, _ = convert(MLP, "vq")
    codebook = model.get_buffer("quantize.codebook").clone()
    newer = build(MLP, seed=5)
    fxvae.load_ae_state_dict(model, newer.state_dict())
    assert torch.equal(model.get_parameter("enc.2.weight"), newer.enc[2].weight)
    assert torch.equal(model.get_buffer("quantize.codebook"), codebook)


def test_convert_checkpoint_makes_a_vq_model(tmp_path: Path) -> None:
    torch.save(build(MLP, seed=1).state_dict(), tmp_path / "ae.pt")
    model, loss = fxvae.convert_checkpoint(
        build(MLP),
        tmp_path / "ae.pt",
        MLP.inputs(4),
        out=tmp_path / "vq.safetensors",
        latent=fxvae.VQ(codebook_size=16),
        calibration=calibration(MLP),
    )
    assert isinstance(loss, fxvae.QuantizerLoss)
    loaded, _ = fxvae.load(build(MLP), tmp_path / "vq.safetensors", MLP.inputs(4))
    x = MLP.inputs(4)[0]
    assert torch.equal(loaded.eval()(x), model.eval()(x))


def test_the_command_line_converts_to_vq_with_calibration_data(tmp_path: Path) -> None:
    save_file(cli_models.mlp_ae().state_dict(), str(tmp_path / "ae.safetensors"))
    np.save(tmp_path / "data.npy", np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32))
    models = str(Path(cli_models.__file__))
    common = [f"{models}:mlp_ae", "--checkpoint", str(tmp_path / "ae.safetensors"), "--input-shape", "2,16"]
    result = CliRunner().invoke(
        app,
        [
            "convert",
            *common,
            "--out",
            str(tmp_path / "vq.safetensors"),
            "--latent",
            "vq",
            "--codebook-size",
            "32",
            "--calibration",
            str(tmp_path / "data.npy"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "vq quantiser 'quantize': 32 codes, 5 bits per position" in " ".join(result.stderr.split())
    assert "(quantised, before training)" in " ".join(result.stderr.split())
    loaded, _ = fxvae.load(cli_models.mlp_ae(), tmp_path / "vq.safetensors", torch.randn(2, 16))
    assert fxvae.conversion(loaded).options.latent.codebook_size == 32
    fsq = CliRunner().invoke(
        app, ["convert", *common, "--out", str(tmp_path / "f.safetensors"), "--latent", "fsq", "--levels", "5,3"]
    )
    assert fsq.exit_code == 0, fsq.stderr
    loaded, _ = fxvae.load(cli_models.mlp_ae(), tmp_path / "f.safetensors", torch.randn(2, 16))
    assert fxvae.conversion(loaded).options.latent.levels == (5, 3)


def test_the_command_line_refuses_vq_without_calibration_data(tmp_path: Path) -> None:
    save_file(cli_models.mlp_ae().state_dict(), str(tmp_path / "ae.safetensors"))
    result = CliRunner().invoke(
        app,
        [
            "convert",
            f"{Path(cli_models.__file__)}:mlp_ae",
            "--checkpoint",
            str(tmp_path / "ae.safetensors"),
            "--input-shape",
            "2,16",
            "--out",
            str(tmp_path / "vq.safetensors"),
            "--latent",
            "vq",
        ],
    )
    assert result.exit_code == ExitCode.CONVERSION
    assert "--calibration FILE" in result.stderr
    assert not (tmp_path / "vq.safetensors").exists()


# --- refused, with the model unchanged ------------------------------------------------------------------------


class ScalarLatent(nn.Module):
    """The latent squeezed to one number per sample: nothing to quantise along."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(8, 1), nn.Linear(1, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x).squeeze(1).unsqueeze(1))


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            lambda: {"latent": "vq"},
            fxvae.InputError,
            r"latent='vq' starts its codebook at the k-means centres.*calibration=",
        ),
        (
            lambda: {"latent": fxvae.VQ(codebook_size=300), "calibration": torch.randn(256, 64)},
            fxvae.InputError,
            r"codebook_size=300 is more than the 256 codes in the calibration data \(256 samples x 1 per sample at "
            r"the latent 'enc_3'\).*smaller codebook_size",
        ),
        (
            lambda: {"latent": fxvae.FSQ(levels=(8, 1, 5))},
            fxvae.InputError,
            r"levels=\(8, 1, 5\) has a dimension with fewer than 2",
        ),
        (lambda: {"latent": fxvae.FSQ(levels=())}, fxvae.InputError, r"levels=\(\) must be a non-empty sequence"),
        (lambda: {"latent": fxvae.VQ(codebook_size=1)}, fxvae.InputError, r"codebook_size=1 must be an integer of"),
        (lambda: {"latent": fxvae.VQ(decay=1.0)}, fxvae.InputError, r"decay=1.0 must be a number between 0 and 1"),
        (
            lambda: {"latent": "codebook"},
            fxvae.InputError,
            r"latent='codebook' must be a latent config .* one of \('gaussian', 'vq', 'fsq'",
        ),
        (
            lambda: {"latent": "fsq", "log_sigma_init": -1.0},
            fxvae.InputError,
            r"log_sigma_init=-1.0 applies to a Gaussian latent.*latent='fsq': leave log_sigma_init out",
        ),
        (
            lambda: {"latent": "fsq", "standardize": "whiten"},
            fxvae.InputError,
            r"standardize='whiten' applies to a Gaussian latent",
        ),
        (
            lambda: {"latent": fxvae.Gaussian(), "log_sigma_init": -1.0},
            fxvae.InputError,
            r"log_sigma_init is given twice.*set it on fxvae.Gaussian\(...\) only",
        ),
        (
            lambda: {"options": fxvae.Options(), "latent": fxvae.FSQ()},
            fxvae.InputError,
            r"options= makes another conversion's choices again: leave bottleneck, latent",
        ),
        (
            lambda: {"latent": "vq", "calibration": torch.randn(64, 32)},
            fxvae.InputError,
            r"a calibration batch has shape \[64, 32\], but the model takes \['batch', 64\]",
        ),
    ],
    ids=[
        "vq-without-data",
        "codebook-larger-than-the-codes",
        "a-level-below-2",
        "no-levels",
        "codebook-of-1",
        "decay-1",
        "unknown-family",
        "log-sigma-for-fsq",
        "standardize-for-fsq",
        "a-gaussian-shorthand-beside-its-config",
        "options-beside-keywords",
        "data-of-another-shape",
    ],
)
def test_a_bad_discrete_conversion_is_refused_and_leaves_the_model_unchanged(options, error, match) -> None:
    model = build(MLP)
    before = snapshot(model)
    with pytest.raises(error, match=match):
        fxvae.convert(model, MLP.inputs(4), **options())
    assert_unchanged(model, before)


def test_a_latent_with_no_feature_dimension_is_refused_and_leaves_the_model_unchanged() -> None:
    model = ScalarLatent()
    before = snapshot(model)
    with pytest.raises(
        fxvae.RewriteError, match=r"the latent 'squeeze' is one number per sample.*no feature dimension"
    ):
        fxvae.convert(model, torch.randn(4, 8), bottleneck="squeeze", latent="fsq")
    assert_unchanged(model, before)


def test_the_hooks_tier_refuses_too_large_a_codebook_and_leaves_the_model_unchanged() -> None:
    model = build(HOOKS)
    before = snapshot(model)
    with pytest.raises(fxvae.InputError, match=r"codebook_size=64 is more than the 32 codes"):
        fxvae.convert(model, HOOKS.inputs(4), latent=fxvae.VQ(codebook_size=64), calibration=torch.randn(32, 16))
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (fxvae.posterior, r"fxvae.posterior needs a Gaussian latent.*latent='vq'\): fxvae.quantized\(model\)"),
        (lambda m: fxvae.sample(m, 4), r"fxvae.sample needs a Gaussian latent.*fxvae.detokenize\(model, codes\)"),
        (lambda m: fxvae.calibrate(m, torch.randn(8, 64)), r"fxvae.calibrate needs a Gaussian latent.*latent='vq'"),
    ],
    ids=["posterior", "sample", "calibrate"],
)
def test_gaussian_only_calls_on_a_discrete_model_say_what_to_use_instead(call, match) -> None:
    model, _ = convert(MLP, "vq")
    model(MLP.inputs(4)[0])
    with pytest.raises(fxvae.FxvaeError, match=match):
        call(model)


def test_quantized_on_a_gaussian_vae_says_what_to_use_instead() -> None:
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(4))
    with pytest.raises(fxvae.FxvaeError, match=r"fxvae.quantized needs a discrete latent.*latent='vq'"):
        fxvae.quantized(vae)


def _heavy_tailed_ae(outliers: float) -> tuple[nn.Module, torch.Tensor]:
    """An AE whose 2-d latent is the data's first two coordinates, and data whose latent lies mostly in [-1, 1]
    with a few values at +-``outliers``: the data's extremes then set FSQ's steps."""
    ae = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 4))
    with torch.no_grad():
        ae[0].weight.copy_(torch.eye(2, 4))
        ae[1].weight.copy_(torch.eye(4, 2))
        ae[0].bias.zero_()
        ae[1].bias.zero_()
    generator = torch.Generator().manual_seed(0)
    data = torch.zeros(512, 4)
    data[:, :2] = 0.4 * torch.randn(512, 2, generator=generator)
    data[:4, :2] = outliers * torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    return ae, data


def test_fsq_keeps_its_start_without_data_where_the_fit_reconstructs_worse() -> None:
    ae, data = _heavy_tailed_ae(outliers=3.0)
    model, _ = fxvae.convert(ae, data[:4], latent=fxvae.FSQ(levels=(5, 5)), calibration=data)
    info = fxvae.conversion(model).quantizer
    fsq = model.get_submodule(info.module)
    assert info.fit == "none" and info.quantized_mse == info.unfitted_mse
    assert torch.equal(fsq.center, torch.zeros(2)) and torch.equal(fsq.scale, torch.ones(2))
    with torch.no_grad():
        assert info.quantized_mse == pytest.approx(_mse(model.eval()(data), data), rel=1e-6)


def test_fsq_keeps_its_fit_where_it_reconstructs_better() -> None:
    ae, data = _heavy_tailed_ae(outliers=1.5)
    model, _ = fxvae.convert(ae, data[:4], latent=fxvae.FSQ(levels=(5, 5)), calibration=5 * data)
    info = fxvae.conversion(model).quantizer
    assert info.fit == "data" and info.quantized_mse < info.unfitted_mse
    latent = 5 * data[:, :2]
    torch.testing.assert_close(model.get_submodule(info.module).scale, (latent.amax(0) - latent.amin(0)) / 2)


@pytest.mark.parametrize("outliers", [1.0, 2.0, 4.0, 8.0, 16.0])
@pytest.mark.parametrize("spread", [0.2, 1.0, 5.0])
def test_the_fsq_start_reconstructs_the_calibration_data_no_worse_than_no_fit(outliers: float, spread: float) -> None:
    ae, data = _heavy_tailed_ae(outliers)
    model, _ = fxvae.convert(ae, data[:4], latent=fxvae.FSQ(levels=(8, 3)), calibration=spread * data)
    info = fxvae.conversion(model).quantizer
    assert info.quantized_mse <= info.unfitted_mse
    assert info.fit == ("data" if info.quantized_mse < info.unfitted_mse else "none")


@pytest.mark.parametrize("latent", LATENTS)
def test_head_kind_of_a_discrete_conversion_is_refused_naming_the_option(latent: str) -> None:
    model, _ = convert(MLP, latent)
    recipe = fxvae.conversion(model)
    with pytest.raises(fxvae.InputError, match=rf"head_kind .* latent='{latent}', which has none: read .latent_module"):
        _ = recipe.head_kind
    assert recipe.bottleneck.head_kind in ("layer", "pointwise")  # the search's own finding stays readable
