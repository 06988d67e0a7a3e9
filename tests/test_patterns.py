"""Patterns of real third-party autoencoders, each in a few lines: they convert, exactly, on every tier."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

import fxvae
from tests.helpers import leaves, recon


def _roundtrip(model: nn.Module, x: torch.Tensor, tmp_path: Path) -> fxvae.Conversion:
    """Convert, then check what every conversion must give: eval equality at two batch sizes, the KL at
    init, gradients on every parameter, save/load and split. Returns the recipe."""
    model.eval()
    vae, kl = fxvae.convert(model, x)
    for batch in (x, torch.cat([x, x[:1]])):
        with torch.no_grad():
            assert torch.equal(recon(vae.eval()(batch)), recon(model(batch)))
    vae.train()
    out = vae(x)
    mu = fxvae.posterior(vae).mu
    torch.testing.assert_close(kl(), 0.5 * mu.pow(2).flatten(1).sum(1).mean())
    (sum(t.pow(2).mean() for t in leaves(out)) + kl()).backward()
    assert [name for name, p in vae.named_parameters() if p.grad is None] == []
    fxvae.save(vae, tmp_path / "vae.safetensors")
    loaded, _ = fxvae.load(model, tmp_path / "vae.safetensors", x)
    assert torch.equal(recon(loaded.eval()(x)), recon(vae.eval()(x)))
    encoder, decoder = fxvae.split(vae)
    with torch.no_grad():
        assert torch.equal(recon(decoder(encoder(x)[0])), recon(vae.eval()(x)))
    return fxvae.conversion(vae)


# --- latents that no single layer produces ---------------------------------------------------------------


class ResidualLatent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, 2, 1), nn.Conv2d(1, 2, 3, 2, 1)
        self.dec = nn.ConvTranspose2d(2, 1, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.a(x) + self.b(x))


class AttentionEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return self.attn(h, h, h, need_weights=False)[0]


class AttentionLatent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = AttentionEncoder()
        self.dec = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.encoder(x))


class NormalisedLatent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv1d(2, 4, 4, stride=4), nn.GroupNorm(2, 4))
        self.dec = nn.ConvTranspose1d(4, 2, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


LATENTS: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    ("residual_sum", ResidualLatent, (1, 16, 16)),
    ("attention", AttentionLatent, (5, 6)),
    ("group_norm", NormalisedLatent, (2, 32)),
]


@pytest.mark.parametrize(("name", "build", "shape"), LATENTS, ids=[entry[0] for entry in LATENTS])
def test_a_latent_no_single_layer_makes_gets_a_pointwise_head(name, build, shape, tmp_path: Path) -> None:
    torch.manual_seed(0)
    recipe = _roundtrip(build(), torch.randn(3, *shape), tmp_path)
    assert recipe.head_kind == "pointwise" and recipe.mu_head is None


def test_the_pointwise_head_mixes_channels_of_a_conv_latent_and_features_of_a_token_latent() -> None:
    conv, _ = fxvae.convert(ResidualLatent(), torch.randn(2, 1, 16, 16))
    tokens, _ = fxvae.convert(AttentionLatent(), torch.randn(2, 5, 6))
    assert isinstance(conv.get_submodule("log_sigma_head"), nn.Conv2d)
    assert isinstance(tokens.get_submodule("log_sigma_head"), nn.Linear)
    assert conv.get_submodule("log_sigma_head").weight.shape == (2, 2, 1, 1)


def test_the_pointwise_head_makes_sigma_depend_on_the_sample_once_trained() -> None:
    vae, _ = fxvae.convert(ResidualLatent(), torch.randn(4, 1, 16, 16))
    head = vae.get_submodule("log_sigma_head")
    with torch.no_grad():
        head.weight.normal_()
    vae.eval()(torch.randn(4, 1, 16, 16))
    log_sigma = fxvae.posterior(vae).log_sigma
    assert not torch.allclose(log_sigma[0], log_sigma[1])


# --- weight norm, both styles, both tracers --------------------------------------------------------------


def _weight_normed(wrap: Callable[[nn.Module], nn.Module], branch_on_shape: bool) -> nn.Module:
    class Codec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = wrap(nn.Conv1d(1, 4, 8, stride=8))
            self.dec = nn.ConvTranspose1d(4, 1, 8, stride=8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if branch_on_shape and x.shape[-1] % 8:  # symbolic_trace fails here: the export tier runs
                x = F.pad(x, (0, 8 - x.shape[-1] % 8))
            return self.dec(self.enc(x))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # old-style weight_norm is deprecated
        return Codec()


NORMS = {
    "weight_norm": (nn.utils.weight_norm, {"weight_g", "weight_v", "bias"}),
    "parametrizations.weight_norm": (
        parametrizations.weight_norm,
        {"parametrizations.weight.original0", "parametrizations.weight.original1", "bias"},
    ),
    "spectral_norm": (nn.utils.spectral_norm, {"weight_orig", "weight_u", "weight_v", "bias"}),
    "parametrizations.spectral_norm": (
        parametrizations.spectral_norm,
        {"parametrizations.weight.original", "parametrizations.weight.0._u", "parametrizations.weight.0._v", "bias"},
    ),
}


@pytest.mark.parametrize("tracer", ["fx", "export"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_a_weight_normed_latent_layer_keeps_its_parametrisation_in_the_mu_head(norm, tracer, tmp_path) -> None:
    wrap, keys = NORMS[norm]
    torch.manual_seed(0)
    model = _weight_normed(wrap, branch_on_shape=tracer == "export")
    recipe = _roundtrip(model, torch.randn(3, 1, 64), tmp_path)
    assert recipe.tracer == tracer and recipe.head_kind == "layer"
    assert {new.removeprefix("mu_head.") for new in recipe.key_map.values()} == keys
    assert {old.removeprefix("enc.") for old in recipe.key_map} == keys


def test_an_old_style_weight_norm_model_converts_before_its_first_forward() -> None:
    model = _weight_normed(nn.utils.weight_norm, branch_on_shape=False)
    assert not model.enc.weight.is_leaf  # as after construction or load_state_dict: deepcopy refuses it
    x = torch.randn(2, 1, 64)
    vae, _ = fxvae.convert(model, x)
    assert torch.equal(vae.eval()(x), model.eval()(x))


def test_fine_tuning_moves_the_weight_norm_parameters_the_ae_had() -> None:
    model = _weight_normed(parametrizations.weight_norm, branch_on_shape=False)
    vae, kl = fxvae.convert(model, torch.randn(2, 1, 64))
    vae.train()
    (vae(torch.randn(2, 1, 64)).pow(2).mean() + kl()).backward()
    magnitude = vae.get_parameter("mu_head.parametrizations.weight.original0")
    assert magnitude.grad is not None and magnitude.grad.abs().sum() > 0


# --- tensors built from the batch size are not data ----------------------------------------------------------


class ZerosFromBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(16, 4), nn.Linear(4, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x)) + torch.zeros(x.size(0), 16)


class RecurrentExported(nn.Module):
    """An LSTM decoder whose zero initial state torch.export builds from the batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(3 * 6, 4)
        self.dec = nn.LSTM(4, 3, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.enc(x.flatten(1))
        steps = x.shape[1] if x.dim() == 3 else 1  # symbolic_trace fails on this branch
        return self.dec(z.unsqueeze(1).repeat(1, steps, 1))[0]


@pytest.mark.parametrize("build", [ZerosFromBatch, RecurrentExported], ids=["zeros_of_batch", "lstm_state"])
def test_split_keeps_tensors_made_from_the_batch_size(build, tmp_path: Path) -> None:
    torch.manual_seed(0)
    shape = (16,) if build is ZerosFromBatch else (6, 3)
    model = build().eval()
    _roundtrip(model, torch.randn(3, *shape), tmp_path)
    # Converted and split at a batch of 3, run at 5 and 1: the decoder reads the batch size from z, not the trace.
    encoder, decoder = fxvae.split(fxvae.convert(model, torch.randn(3, *shape))[0].eval())
    for batch in (5, 1):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            assert torch.equal(recon(decoder(encoder(x)[0])), recon(model(x)))


# --- the encoder's output, not the first narrow node ----------------------------------------------------------


def test_the_latent_is_the_encoders_output_when_it_ends_in_blocks_of_the_latents_width() -> None:
    ae = nn.Sequential(
        nn.Sequential(nn.Conv1d(1, 4, 8, stride=8), nn.Conv1d(4, 4, 3, padding=1)),
        nn.ConvTranspose1d(4, 1, 8, stride=8),
    )
    b = fxvae.find_bottleneck(ae, torch.randn(2, 1, 64))
    assert (b.layer, b.module, b.head_kind) == ("0.1", "0", "layer")
    reasons = {c.node: c.reason for c in b.candidates}
    assert reasons["_0_0"] == "same width, inside '0': the latent is that module's output"


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(torch.relu(x))


class CodecLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv1d(1, 2, 4, stride=4), ResBlock(2))
        self.decoder = nn.Sequential(nn.ReLU(), nn.ConvTranspose1d(2, 1, 4, stride=4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def test_an_encoder_ending_in_a_residual_block_gives_its_output_and_leaves_the_decoders_activation() -> None:
    model = CodecLike().eval()
    x = torch.randn(2, 1, 32)
    vae, _ = fxvae.convert(model, x)
    assert fxvae.conversion(vae).bottleneck.module == "encoder"
    vae.eval()(x)
    assert torch.equal(fxvae.posterior(vae).mu, model.encoder(x))


def test_without_module_structure_the_first_layer_of_the_run_and_its_activation_win() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1, self.w2 = nn.Parameter(torch.randn(4, 16)), nn.Parameter(torch.randn(16, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(torch.tanh(F.linear(x, self.w1)), self.w2)

    b = fxvae.find_bottleneck(Functional(), torch.randn(2, 16))
    assert (b.node, b.chain, b.layer) == ("tanh", ("linear", "tanh"), "w1")


# --- output classes on the export path, and what each tracer stopped on ---------------------------------------


class Output(dict):
    """A ModelOutput-like dict subclass whose constructor takes fields, not a mapping."""

    def __init__(self, recon: torch.Tensor, latent: torch.Tensor) -> None:
        super().__init__(recon=recon, latent=latent)


class IteratesOverShape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(12, 3), nn.Linear(3, 12)

    def forward(self, x: torch.Tensor) -> Output:
        batch, *rest = x.shape  # symbolic_trace cannot iterate over a shape
        z = self.enc(x.reshape(batch, -1))
        return Output(self.dec(z).reshape(batch, *rest), z)


def test_a_dict_subclass_output_is_rebuilt_as_its_class_on_the_export_path(tmp_path: Path) -> None:
    model = IteratesOverShape().eval()
    x = torch.randn(3, 3, 4)
    vae, _ = fxvae.convert(model, x)
    out = vae.eval()(x)
    assert fxvae.conversion(vae).tracer == "export"
    assert type(out) is Output and list(out) == ["recon", "latent"]
    assert torch.equal(out["recon"], model(x)["recon"])


def test_the_recipe_says_what_symbolic_trace_stopped_on() -> None:
    vae, _ = fxvae.convert(IteratesOverShape(), torch.randn(3, 3, 4))
    failure = fxvae.conversion(vae).fx_failure
    assert failure.startswith("stopped on iteration over a tensor or its shape")
    assert "batch, *rest = x.shape" in failure


# --- forwards no tracer follows: the hooks tier ---------------------------------------------------------------


class BranchesOnValues(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        self.decoder = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 16))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        if z.abs().max().item() > 100.0:  # .item(): neither tracer follows this
            z = z / 100.0
        scale = float(np.linalg.norm(x.detach().numpy()) > -1.0)  # numpy on a tensor
        return self.decoder(z) * scale, x.mean(1)


def test_a_forward_no_tracer_follows_converts_with_hooks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    recipe = _roundtrip(BranchesOnValues(), torch.randn(4, 16), tmp_path)
    assert (recipe.tracer, recipe.bottleneck.node, recipe.head_kind) == ("hooks", "encoder", "pointwise")
    assert "item()" in recipe.export_failure


def test_the_hooks_tier_decoder_returns_none_for_outputs_read_from_the_input() -> None:
    vae, _ = fxvae.convert(BranchesOnValues(), torch.randn(4, 16))
    _, decoder = fxvae.split(vae)
    recon_out, statistic = decoder(torch.randn(5, 3))
    assert recon_out.shape == (5, 16) and statistic is None


def test_the_hooks_tier_refuses_a_model_whose_skip_bypasses_every_narrow_module() -> None:
    class Skip(BranchesOnValues):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out, stat = super().forward(x)
            return out + x, stat

    with pytest.raises(fxvae.BottleneckError, match=r"no module of Skip narrower than the input \(16\)"):
        fxvae.convert(Skip(), torch.randn(4, 16))


def test_a_hooks_tier_refusal_names_the_modules_that_bottleneck_can_force() -> None:
    class Mask(nn.Module):
        """An over-complete filterbank whose mask multiplies it: every module is wider than the input."""

        def __init__(self) -> None:
            super().__init__()
            self.bank = nn.Linear(16, 64)
            self.mask = nn.Sequential(nn.Linear(64, 64), nn.Sigmoid())
            self.synthesis = nn.Linear(64, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bank = self.bank(x)
            if float(np.linalg.norm(x.detach().numpy())) < -1.0:  # numpy on a tensor: no tracer follows
                bank = -bank
            return self.synthesis(bank * self.mask(bank))

    with pytest.raises(fxvae.BottleneckError) as refused:
        fxvae.convert(Mask(), torch.randn(4, 16))
    message = str(refused.value)
    assert "at least as wide as it" in message
    assert "bottleneck=<module path>, narrowest first: 'bank' [64], 'mask.0' [64]" in message


def test_the_hooks_tier_refuses_random_eval_forwards() -> None:
    class Noisy(BranchesOnValues):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out, stat = super().forward(x)
            return out + torch.randn_like(out), stat

    with pytest.raises(fxvae.BottleneckError, match="random operations stay active"):
        fxvae.convert(Noisy(), torch.randn(4, 16))
