"""Capture tiers are one interface: a tier registered from outside fxvae converts, splits, calibrates and
loads, and the callers never ask which tier they hold."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.fx as fx
from torch import nn

import fxvae
from fxvae.capture.graph_tier import GraphTier
from fxvae.capture.tier import Captured, Site, Tier, TierRefused
from fxvae.capture.tiers import TIERS, register_tier, tier_of, unregister_tier
from fxvae.errors import CheckpointError, FxvaeError, InputError
from tests.helpers import recon
from tests.zoo import ZOO, ZooEntry, build

BY_NAME = {e.name: e for e in ZOO}
ROOT = Path(__file__).resolve().parents[1]
MARKER = "captured_by_toy"


class ToyTier(Tier):
    """Captures only models carrying ``MARKER``; the graph work is the graph tier's, under the tracer "toy"."""

    tracers = ("toy",)

    def __init__(self) -> None:
        self.graph = GraphTier()

    def capture(self, model: nn.Module, args: tuple[Any, ...]) -> Captured:
        if not getattr(model, MARKER, False):
            raise TierRefused(f"{type(model).__name__} carries no {MARKER!r}")
        return dataclasses.replace(self.graph.capture(model, args), tier=self, tracer="toy")

    def locate(self, captured: Captured, forced: str | None, model_name: str) -> Site:
        return self.graph.locate(captured, forced, model_name)

    def insert_posterior(
        self, captured: Captured, site: Site, log_sigma_init: float, device: torch.device, head_kind: Any
    ) -> tuple[fx.GraphModule, Any]:
        return self.graph.insert_posterior(captured, site, log_sigma_init, device, head_kind)

    def insert_module(
        self, captured: Captured, site: Site, module: nn.Module, device: torch.device, name: str
    ) -> tuple[fx.GraphModule, Any]:
        return self.graph.insert_module(captured, site, module, device, name)

    def split(self, vae: fx.GraphModule, recipe: Any) -> tuple[nn.Module, nn.Module]:
        return self.graph.split(vae, recipe)

    def fold(self, vae: fx.GraphModule, recipe: Any, affine: Any) -> tuple[str | None, str | None]:
        return self.graph.fold(vae, recipe, affine)

    def unfold(self, vae: fx.GraphModule, info: Any, old: Any) -> None:
        self.graph.unfold(vae, info, old)

    def place(
        self, vae: fx.GraphModule, recipe: Any, affine: Any, name: str, *, standardize: bool, destandardize: bool
    ) -> None:
        self.graph.place(vae, recipe, affine, name, standardize=standardize, destandardize=destandardize)


@pytest.fixture
def toy() -> Iterator[ToyTier]:
    tier = ToyTier()
    register_tier(tier, first=True)
    yield tier
    if tier in TIERS:
        unregister_tier(tier)


def _marked(entry: ZooEntry) -> nn.Module:
    model = build(entry)
    setattr(model, MARKER, True)
    return model


@pytest.mark.parametrize("name", ["mlp_sigmoid", "conv_latent"])
def test_a_registered_tier_converts_the_models_it_takes_with_eval_outputs_unchanged(toy: ToyTier, name: str) -> None:
    entry = BY_NAME[name]
    model = _marked(entry)
    vae, _ = fxvae.convert(model, entry.inputs(4))
    assert fxvae.conversion(vae).tracer == "toy" and fxvae.conversion(vae).bottleneck.tracer == "toy"
    args = entry.inputs(7)
    with torch.no_grad():
        assert torch.equal(recon(vae.eval()(*args)), recon(model(*args)))


def test_a_model_the_registered_tier_refuses_goes_to_the_next_tier(toy: ToyTier) -> None:
    entry = BY_NAME["mlp_sigmoid"]
    vae, _ = fxvae.convert(build(entry), entry.inputs(4))
    assert fxvae.conversion(vae).tracer == "fx"


@pytest.mark.parametrize("name", ["mlp_sigmoid", "conv_latent"])
def test_a_registered_tiers_vae_splits_into_a_decoder_that_reproduces_it(toy: ToyTier, name: str) -> None:
    entry = BY_NAME[name]
    vae = fxvae.convert(_marked(entry), entry.inputs(4))[0].eval()
    encoder, decoder = fxvae.split(vae)
    args = entry.inputs(6)
    with torch.no_grad():
        mu, _ = encoder(*args)
        assert torch.equal(recon(decoder(mu, *args[1:])), recon(vae(*args)))


@pytest.mark.filterwarnings("ignore:the reconstruction is further from the data")
@pytest.mark.parametrize("name", ["mlp_sigmoid", "conv_latent"])
def test_a_registered_tiers_vae_calibrates_keeping_its_eval_outputs(toy: ToyTier, name: str) -> None:
    entry = BY_NAME[name]
    model = _marked(entry)
    vae, _ = fxvae.convert(model, entry.inputs(4))
    fxvae.calibrate(vae, entry.inputs(200)[0], log_sigma_init="auto")
    fxvae.calibrate(vae, entry.inputs(100)[0], standardize="whiten")
    assert fxvae.conversion(vae).calibration.standardize == "whiten"
    args = entry.inputs(9)
    with torch.no_grad():
        got, want = recon(vae.eval()(*args)), recon(model(*args))
    assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-5


def test_a_file_saved_by_a_registered_tier_loads_only_while_it_is_registered(toy: ToyTier, tmp_path: Path) -> None:
    entry = BY_NAME["mlp_sigmoid"]
    vae, _ = fxvae.convert(_marked(entry), entry.inputs(4), calibration=entry.inputs(64)[0])
    fxvae.save(vae, tmp_path / "toy.safetensors")
    loaded, _ = fxvae.load(_marked(entry), tmp_path / "toy.safetensors", entry.inputs(4))
    args = entry.inputs(5)
    with torch.no_grad():
        assert torch.equal(recon(loaded.eval()(*args)), recon(vae.eval()(*args)))
    unregister_tier(toy)
    unknown = r"'toy', which no registered tier owns \(known tracers: fx, export, hooks\)"
    with pytest.raises(CheckpointError, match=unknown):
        fxvae.load(_marked(entry), tmp_path / "toy.safetensors", entry.inputs(4))


def test_tier_of_an_unknown_tracer_names_the_known_ones() -> None:
    with pytest.raises(FxvaeError, match=r"'nope' \(known tracers: fx, export, hooks\)"):
        tier_of("nope")


def test_a_tier_cannot_take_a_tracer_name_another_tier_owns() -> None:
    class Export(ToyTier):
        tracers = ("export",)

    with pytest.raises(InputError, match=r"\['export'\] already belong to a registered tier"):
        register_tier(Export())


@pytest.mark.parametrize("path", ["fxvae/convert.py", "fxvae/surgery/calibration.py", "fxvae/surgery/split.py"])
def test_callers_never_ask_which_tier_they_hold(path: str) -> None:
    text = (ROOT / path).read_text()
    assert "HookPlan" not in text and '"hooks"' not in text and "hooks_tier" not in text
