"""The models the discrete-latent tests convert: one per capture tier and latent layout, and how to convert them."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

import fxvae
from fxvae.latents.configs import config_of
from tests.helpers import with_none
from tests.zoo import ZOO, ZooEntry, build


class ItemBranch(nn.Module):
    """Branches on a value read with ``.item()``: neither symbolic_trace nor torch.export follows it."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
        self.decoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        if z.abs().max().item() > 1e6:
            z = z / 1e6
        return self.decoder(z)


BY_NAME = {e.name: e for e in ZOO}
HOOKS = ZooEntry("item_branch", ItemBranch, lambda b: (torch.randn(b, 16),), "encoder", "encoder", (4,), "hooks")
ENTRIES = (
    BY_NAME["mlp_sigmoid"],  # fx, flat latent: one code per sample
    BY_NAME["conv_latent"],  # fx, channels-first latent (B, 2, 2, 2): codes (B, 2, 2)
    BY_NAME["token_attention"],  # fx, features-last latent (B, 7, 3): codes (B, 7)
    BY_NAME["shape_control_flow"],  # the export tier
    BY_NAME["conditional"],  # a label the decoder reads
    HOOKS,
)
CODE_SHAPES = {
    "mlp_sigmoid": (),
    "conv_latent": (2, 2),
    "token_attention": (7,),
    "shape_control_flow": (),
    "conditional": (),
    "item_branch": (),
}
SETTINGS: dict[str, dict[str, Any]] = {"vq": {"codebook_size": 16}, "fsq": {"levels": (5, 4, 3)}}
"""Small enough for 256 calibration samples of a flat latent; FSQ with and without projections."""
CALIBRATION = 256


def calibration(entry: ZooEntry, n: int = CALIBRATION, seed: int = 1) -> list[tuple[Any, ...]]:
    """One calibration batch of ``n`` samples (a list of batches: a conditional entry's is a tuple)."""
    torch.manual_seed(seed)
    return [entry.inputs(n)]


def convert(entry: ZooEntry, latent: str, **options: Any) -> tuple[torch.fx.GraphModule, fxvae.QuantizerLoss]:
    """``entry``'s model converted to ``latent`` with the small test settings and calibration data."""
    config = dataclasses.replace(config_of(latent), **{**SETTINGS[latent], **options})
    return fxvae.convert(build(entry), entry.inputs(4), latent=config, calibration=calibration(entry))


def assert_same_outputs(got: Any, expected: Any) -> None:
    """The same output class, and bitwise equal tensors wherever ``got`` has one (a decoder's None aside)."""
    assert type(got) is type(expected)
    pairs = [(g, e) for g, e in zip(with_none(got), with_none(expected), strict=True) if g is not None]
    assert pairs and all(torch.equal(g, e) for g, e in pairs)
