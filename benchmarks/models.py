"""The benchmark model zoo: autoencoders of the sizes people convert, each with its input shape.

Every factory is usable from the command line, e.g. ``fxvae bench benchmarks/models.py:conv_ae_2m5
--input-shape 1,3,64,64``; ``ZOO`` maps each name to its factory and per-sample input shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# conv_ae is the CIFAR-sized AE that fxvae ships: the docs' examples and these benchmarks measure one model.
from fxvae.examples import ConvAE, conv_ae


def mlp_ae() -> nn.Module:
    """MNIST-sized MLP: 784 -> 256 -> 32 (latent) -> 256 -> 784, about 0.4M parameters."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 32),
        nn.Linear(32, 256),
        nn.ReLU(),
        nn.Linear(256, 784),
        nn.Sigmoid(),
        nn.Unflatten(1, (1, 28, 28)),
    )


def digits_mlp() -> nn.Module:
    """scikit-learn's 8x8 digits MLP of docs/compare.md: 64 -> 256 -> 128 -> 8 (latent) -> 128 -> 256 -> 64 logits."""
    return nn.Sequential(
        nn.Linear(64, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, 8),
        nn.Linear(8, 128),
        nn.ReLU(),
        nn.Linear(128, 256),
        nn.ReLU(),
        nn.Linear(256, 64),
    )


def conv_ae_2m5() -> nn.Module:
    """A small latent-diffusion-style AE: 3x64x64 -> 4x8x8 (1/8 resolution), 2.58M parameters."""
    return ConvAE(3, (64, 144, 288), latent=4)


class _ResidualUnit1d(nn.Module):
    """EnCodec/DAC-style residual unit: dilated 7-tap conv, 1x1 conv, skip; the skip stays inside a stage."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ELU(),
            nn.Conv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation),
            nn.ELU(),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class CodecAE(nn.Module):
    """A neural-audio-codec-shaped AE (SoundStream/EnCodec without quantiser): mono waveform in, a
    ``latent x T/prod(strides)`` sequence at the bottleneck, the mirror image back.

    Each encoder stage is a residual unit then a strided Conv1d (kernel 2s, stride s) that doubles the
    channels; each decoder stage a ConvTranspose1d (kernel 2s, stride s) that halves them, then a
    residual unit. With even strides every length divides exactly, so the output has the input's length.
    """

    def __init__(self, channels: int, strides: tuple[int, ...], latent: int) -> None:
        super().__init__()
        enc: list[nn.Module] = [nn.Conv1d(1, channels, 7, padding=3)]
        c = channels
        for s in strides:
            enc += [_ResidualUnit1d(c, 1), nn.ELU(), nn.Conv1d(c, 2 * c, 2 * s, stride=s, padding=s // 2)]
            c *= 2
        enc += [nn.ELU(), nn.Conv1d(c, latent, 3, padding=1)]
        dec: list[nn.Module] = [nn.Conv1d(latent, c, 7, padding=3)]
        for s in reversed(strides):
            dec += [nn.ELU(), nn.ConvTranspose1d(c, c // 2, 2 * s, stride=s, padding=s // 2)]
            c //= 2
            dec.append(_ResidualUnit1d(c, 1))
        dec += [nn.ELU(), nn.Conv1d(c, 1, 7, padding=3), nn.Tanh()]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def codec_ae() -> nn.Module:
    """Audio codec-like 1-d conv AE: 1x16384 (about 1 s at 16 kHz) -> 8x128 (1/128 rate)."""
    return CodecAE(8, (2, 4, 4, 4), latent=8)


ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp_ae": (mlp_ae, (1, 28, 28)),
    "conv_ae": (conv_ae, (3, 32, 32)),
    "conv_ae_2m5": (conv_ae_2m5, (3, 64, 64)),
    "codec_ae": (codec_ae, (1, 16384)),
}
