"""Small autoencoders that ship with fxvae: the models of the docs' examples, to try a command on before your own.

Each factory takes no arguments and returns the untrained architecture, so it is a MODEL for every command
(``fxvae.examples:<factory>``; the weights come from ``--checkpoint``):

```bash
python -c "import torch; from fxvae.examples import mlp_ae; torch.save(mlp_ae().state_dict(), 'ae.pt')"
fxvae convert fxvae.examples:mlp_ae --checkpoint ae.pt --input-shape 2,16 --out vae.safetensors
```

| factory | input per sample | latent | what it is |
| --- | --- | --- | --- |
| `mlp_ae` | 16 | 4 | the smallest MLP with an obvious bottleneck (a sigmoid latent) |
| `digits_ae` | 64 (8x8 images) | 4 | an MLP with pixel logits out, for images in [0, 1] |
| `conv_ae` | 3x32x32 | 8x8x8 | a CIFAR-sized conv AE (about 0.14M parameters) |
| `signal_ae` | 1x128 | 4x16 | a 1-d conv AE for signals and time series |
| `skip_ae` | 16 | none | a skip connection around its narrow layer: fxvae refuses it |

The docs' measurements depend on these architectures (benchmarks/models.py's ``conv_ae`` and the AE-vs-VAE
study's signal AE are the same classes), so change one only with the numbers that were measured on it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvAE", "DigitsAE", "SignalAE", "conv_ae", "digits_ae", "mlp_ae", "signal_ae", "skip_ae"]


def mlp_ae() -> nn.Module:
    """16 -> 8 -> 4 (sigmoid latent) -> 16: the smallest autoencoder with an obvious bottleneck.

    >>> ae = mlp_ae()
    >>> fxvae.find_bottleneck(ae, torch.randn(2, 16)).node  # the sigmoid's output, 4 wide
    '_3'
    """
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4), nn.Sigmoid(), nn.Linear(4, 16))


class DigitsAE(nn.Module):
    """64 -> 32 -> 4 (latent) -> 32 -> 64 pixel logits: an MLP for flattened 8x8 images in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
        self.decoder = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def digits_ae() -> nn.Module:
    """:class:`DigitsAE`: its output is logits, so its likelihood is ``"bernoulli"``.

    >>> vae, kl = fxvae.convert(digits_ae(), torch.rand(2, 64))
    >>> fxvae.conversion(vae).key_map  # the encoder's last layer became the mu head
    {'encoder.2.weight': 'mu_head.weight', 'encoder.2.bias': 'mu_head.bias'}
    """
    return DigitsAE()


class ConvAE(nn.Module):
    """Strided-conv encoder down to a ``latent x H/f x W/f`` map, transposed-conv decoder back up.

    ``channels`` lists the encoder widths (multiples of 8, for GroupNorm's 8 groups); each stage halves the
    resolution, so the latent sits at 1/2**len(channels). The latent is the output of a 1x1 conv, as in
    Stable Diffusion's VAE.

    >>> ConvAE(1, (16,), latent=2)(torch.randn(2, 1, 8, 8)).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], latent: int) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        c = in_channels
        for out in channels:
            enc += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.GroupNorm(8, out), nn.SiLU()]
            enc += [nn.Conv2d(out, out, 3, padding=1), nn.SiLU()]
            c = out
        enc.append(nn.Conv2d(c, latent, 1))
        dec: list[nn.Module] = [nn.Conv2d(latent, c, 3, padding=1), nn.SiLU()]
        for out in (*reversed(channels[:-1]), channels[0]):
            dec += [nn.ConvTranspose2d(c, out, 4, stride=2, padding=1), nn.GroupNorm(8, out), nn.SiLU()]
            dec += [nn.Conv2d(out, out, 3, padding=1), nn.SiLU()]
            c = out
        dec.append(nn.Conv2d(c, in_channels, 3, padding=1))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def conv_ae() -> nn.Module:
    """A CIFAR-sized conv AE, 3x32x32 -> 8x8x8 -> 3x32x32 (:class:`ConvAE`, about 0.14M parameters).

    >>> vae, kl = fxvae.convert(conv_ae(), torch.randn(2, 3, 32, 32))
    >>> _ = vae.eval()(torch.randn(2, 3, 32, 32))
    >>> fxvae.posterior(vae).mu.shape  # one 8x8x8 latent map per image
    torch.Size([2, 8, 8, 8])
    """
    return ConvAE(3, (32, 64), latent=8)


class SignalAE(nn.Module):
    """1x128 -> a Conv1d, three strided Conv1d -> a 4x16 latent -> the mirror image -> 1x128 (the signal's mean).

    For a series of another length, the length must be a multiple of 8 (three stride-2 stages).
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv1d(1, 16, 5, padding=2),
            nn.ELU(),
            nn.Conv1d(16, 32, 4, stride=2, padding=1),
            nn.ELU(),
            nn.Conv1d(32, 32, 4, stride=2, padding=1),
            nn.ELU(),
            nn.Conv1d(32, 32, 4, stride=2, padding=1),
            nn.ELU(),
            nn.Conv1d(32, 4, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv1d(4, 32, 3, padding=1),
            nn.ELU(),
            nn.ConvTranspose1d(32, 32, 4, stride=2, padding=1),
            nn.ELU(),
            nn.ConvTranspose1d(32, 32, 4, stride=2, padding=1),
            nn.ELU(),
            nn.ConvTranspose1d(32, 16, 4, stride=2, padding=1),
            nn.ELU(),
            nn.Conv1d(16, 1, 5, padding=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def signal_ae() -> nn.Module:
    """A 1-d conv AE for signals, 1x128 -> 4x16 -> 1x128 (:class:`SignalAE`); its output is a Gaussian mean.

    >>> fxvae.find_bottleneck(signal_ae(), torch.randn(2, 1, 128)).shape  # per sample
    (4, 16)
    """
    return SignalAE()


class _Skip(nn.Module):
    """x + up(down(x)): the identity carries the data around every narrow node."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Linear(16, 4)
        self.up = nn.Linear(4, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.down(x))


def skip_ae() -> nn.Module:
    """A residual MLP, 16 -> 4 -> 16 plus its input: no bottleneck, so fxvae refuses it (CLI exit code 5).

    >>> fxvae.convert(skip_ae(), torch.randn(2, 16))
    Traceback (most recent call last):
    ...
    fxvae.errors.BottleneckError: no node narrower than the input (16) lies on every path from 'x' to 'add': ...
    """
    return _Skip()
