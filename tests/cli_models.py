"""Tiny model factories the CLI tests load by path, e.g. ``tests/cli_models.py:mlp_ae``.

``mlp_ae`` and ``skip_ae`` are the ones fxvae ships (:mod:`fxvae.examples`), so the tests and the docs load
the same architectures; ``conv_ae`` here is smaller than the shipped one, for speed.
"""

from __future__ import annotations

import torch
from torch import nn

from fxvae.examples import mlp_ae, skip_ae

__all__ = ["broken", "conv_ae", "mlp_ae", "not_a_module", "skip_ae"]


class _ConvAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(4, 2, 1))
        self.dec = nn.Sequential(nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


def conv_ae() -> nn.Module:
    """3x8x8 -> 2x4x4 -> 3x8x8."""
    return _ConvAE()


def broken() -> nn.Module:
    raise RuntimeError("weights server unreachable")


def not_a_module() -> int:
    return 3


class _Fails(nn.Module):
    """Reads 16 features, then fails whatever the input: a bug in the model, not in the data (exit code 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"unsupported batch of {len(self.enc(x))}")


def fails_on_any_input() -> nn.Module:
    return _Fails()


def bold_failure() -> nn.Module:
    """A factory whose error carries terminal escape codes, as torch's own messages sometimes do."""
    raise RuntimeError("\x1b[1mdo not trust this\x1b[0m")
