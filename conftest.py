"""Fixtures for the whole tree. The names below are what every docstring example in fxvae/ may use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _pytest.doctest import DoctestItem
from torch import nn

import fxvae


def readme_autoencoder() -> nn.Module:
    """The README's MLP autoencoder: 64 -> 32 -> 8 (sigmoid latent) -> 32 -> 64."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Sigmoid(), nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 64)
    ).eval()


@pytest.fixture(autouse=True)
def _docstring_names(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Fresh objects for each docstring example: ``ae``, ``x``, ``vae``, ``kl``, ``tmp`` and the modules."""
    if not isinstance(request.node, DoctestItem):
        return
    ae = readme_autoencoder()
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    vae, kl = fxvae.convert(ae, x)
    request.node.dtest.globs.update(
        {"torch": torch, "nn": nn, "F": F, "fxvae": fxvae, "ae": ae, "x": x, "vae": vae, "kl": kl, "tmp": tmp_path}
    )
