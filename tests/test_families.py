"""The latent-family interface: a family added from a test file alone works through convert, save/load and evaluate."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.fx as fx
from torch import nn

import fxvae
from fxvae.latents.configs import CONFIGS, LatentConfig
from fxvae.latents.family import Batches, Family, LatentSite
from fxvae.latents.registry import FAMILIES, family_of, register_family, unregister_family
from fxvae.surgery.rewrite import Inserted
from tests.zoo import BY_NAME, build

MLP = BY_NAME["mlp_sigmoid"]


@dataclass(frozen=True)
class Identity(LatentConfig):
    """A deterministic latent: z is the AE's code itself, with no training term."""

    family: ClassVar[str] = "identity"


class _NoTerm(nn.Module):
    def forward(self) -> torch.Tensor:
        return torch.zeros(())


class IdentityFamily(Family):
    config = Identity
    kind = "identity"
    estimator = "point"
    starts = ("warm",)
    what = "an identity latent"

    def insert(
        self, site: LatentSite, config: LatentConfig, calibration: Batches | None
    ) -> tuple[fx.GraphModule, Inserted]:
        return site.insert_module(nn.Identity(), "identity")

    def term(self, vae: fx.GraphModule) -> nn.Module:
        return _NoTerm()


@pytest.fixture
def identity() -> Iterator[IdentityFamily]:
    family = IdentityFamily()
    register_family(family)
    yield family
    unregister_family(family.name)


@pytest.fixture(scope="module", autouse=True)
def _forget_config() -> Iterator[None]:
    yield
    CONFIGS.pop("identity", None)


def test_a_family_registered_from_a_test_converts_with_its_module_at_the_latent(identity: IdentityFamily) -> None:
    ae, x = build(MLP), MLP.inputs(16)[0]
    vae, term = fxvae.convert(ae, x, latent=Identity())
    recipe = fxvae.conversion(vae)
    assert recipe.options.latent == Identity()
    assert isinstance(vae.get_submodule(recipe.latent_module), nn.Identity)
    assert (recipe.reparameterize, recipe.quantizer) == (None, None)
    assert torch.equal(vae.eval()(x), ae(x))
    assert torch.equal(vae.train()(x), ae.train()(x))
    assert term().item() == 0.0


def test_a_registered_family_saves_and_loads_bit_exactly(identity: IdentityFamily, tmp_path: Path) -> None:
    ae, x = build(MLP), MLP.inputs(16)[0]
    vae, _ = fxvae.convert(ae, x, latent="identity")
    fxvae.save(vae, tmp_path / "identity.safetensors")
    loaded, _ = fxvae.load(build(MLP, seed=1), tmp_path / "identity.safetensors", x)
    assert fxvae.conversion(loaded).options.latent == Identity()
    assert torch.equal(loaded.eval()(x), vae.eval()(x))


def test_a_registered_family_is_measured_by_its_estimator(identity: IdentityFamily) -> None:
    ae, x = build(MLP), MLP.inputs(32)[0]
    vae, _ = fxvae.convert(ae, x, latent=Identity())
    row = fxvae.evaluate(vae, torch.rand(32, 64), likelihood="gaussian")
    assert (row.kind, row.measured) == ("identity", ("recon",))


def test_a_config_whose_family_is_not_registered_is_refused_naming_the_fix() -> None:
    with pytest.raises(fxvae.InputError, match="register_family"):
        family_of(Identity())


def test_the_built_in_families_are_registered_by_name() -> None:
    assert {"gaussian", "vq", "fsq"} <= set(FAMILIES)
    assert [family_of(name).config.family for name in ("gaussian", "vq", "fsq")] == ["gaussian", "vq", "fsq"]


@pytest.mark.parametrize("function", [fxvae.convert, fxvae.convert_checkpoint], ids=["convert", "convert_checkpoint"])
def test_the_overloads_tell_a_type_checker_the_training_term_from_the_config(function) -> None:
    terms = {}
    for overload in typing.get_overloads(function):
        hints = typing.get_type_hints(overload)
        configs = {a for a in typing.get_args(hints["latent"]) if isinstance(a, type)}
        terms[frozenset(configs)] = typing.get_args(hints["return"])[1]
    assert terms[frozenset({fxvae.Gaussian})] is fxvae.KLDivergence
    assert terms[frozenset({fxvae.VQ, fxvae.FSQ})] is fxvae.QuantizerLoss
