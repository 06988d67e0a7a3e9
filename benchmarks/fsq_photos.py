"""FSQ's data fit on real photographs: does fitting the quantiser to the data beat the start with no data?

scikit-learn's two sample photographs (no download) are cut into 32x32 RGB patches (stride 16), a small conv AE
with a 4x8x8 latent trains on 90% of them for ``--minutes``, and the AE is converted with
``latent=fxvae.FSQ(levels=(8, 5, 5, 5))`` (4 channels: no projection) with the training patches as calibration data.
Measured on the held-out patches, in mean squared error of the pixels: the AE, the converted model as
``convert`` fits it, and the same model with the quantiser at its start without data (``reset()``). Also shown:
what each candidate range of the fit (the data's extremes, the range of least quantisation error, no data) costs.

    python benchmarks/fsq_photos.py --minutes 4 --threads 1 --cache /tmp/fsq_photos_ae.pt
    python benchmarks/fsq_photos.py --minutes 4 --threads 1 --penalty 0.1 --cache /tmp/fsq_photos_ae_penalty.pt
    python benchmarks/fsq_photos.py --cache /tmp/fsq_photos_ae.pt --latent-scale 0.3  # the first AE, latent x 0.3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import fxvae

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (8, 5, 5, 5)


def patches(size: int = 32, stride: int = 16) -> torch.Tensor:
    """Every size x size patch of the two sample photographs at ``stride``, as floats in [0, 1], (N, 3, size, size)."""
    from sklearn.datasets import load_sample_images

    out = []
    for image in load_sample_images().images:
        x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        cut = x.unfold(1, size, stride).unfold(2, size, stride)  # (3, rows, cols, size, size)
        out.append(cut.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size))
    return torch.cat(out)


def conv_ae(normalized: bool = False) -> nn.Module:
    """3x32x32 -> 4x8x8 -> 3x32x32: the shape of the trial's AE; ``normalized``: the latent is batch-normalised
    (no affine), so it has unit scale per channel, as an AE with a normalised or penalised latent has."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 4, 3, padding=1),  # the latent, 4 x 8 x 8
        nn.BatchNorm2d(4, affine=False) if normalized else nn.Identity(),
        nn.ConvTranspose2d(4, 64, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 3, 3, padding=1),
        nn.Sigmoid(),
    )


def train(ae: nn.Module, data: torch.Tensor, minutes: float, seed: int, penalty: float = 0.0) -> int:
    """Adam at 1e-3, batch 64, until ``minutes`` have passed; ``penalty`` weighs the latent's mean square into
    the loss (a latent kept near unit scale). Returns the epochs run."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
    deadline, epochs = time.monotonic() + 60 * minutes, 0
    while time.monotonic() < deadline:
        for index in torch.randperm(len(data), generator=generator).split(64):
            opt.zero_grad()
            latent = ae[:6](data[index])
            (F.mse_loss(ae[6:](latent), data[index]) + penalty * latent.pow(2).mean()).backward()
            opt.step()
        epochs += 1
    return epochs


def mse(model: nn.Module, data: torch.Tensor) -> float:
    with torch.no_grad():
        return F.mse_loss(model.eval()(data), data).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.0, help="AE training time")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--normalized", action="store_true", help="batch-normalise the AE's latent (unit scale)")
    parser.add_argument("--penalty", type=float, default=0.0, help="weight of the latent's mean square in training")
    parser.add_argument(
        "--latent-scale",
        type=float,
        default=1.0,
        help="multiply the trained AE's latent by this, and divide it back in the decoder's first layer: the same "
        "reconstructions, a latent of another scale",
    )
    parser.add_argument("--cache", type=Path, help="the trained AE's state dict: read if it exists, else written")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fsq_photos.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = patches()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))
    cut = len(data) * 9 // 10
    train_set, test_set = data[order[:cut]], data[order[cut:]]
    ae = conv_ae(args.normalized)
    epochs = None
    if args.cache is not None and args.cache.exists():
        ae.load_state_dict(torch.load(args.cache, weights_only=True))
    else:
        epochs = train(ae.train(), train_set, args.minutes, args.seed, args.penalty)
        if args.cache is not None:
            torch.save(ae.state_dict(), args.cache)
    ae.eval()
    with torch.no_grad():
        ae[4].weight.mul_(args.latent_scale)
        ae[4].bias.mul_(args.latent_scale)
        ae[6].weight.div_(args.latent_scale)
    fsq, _ = fxvae.convert(ae, train_set[:8], latent=fxvae.FSQ(levels=LEVELS), calibration=train_set)
    info = fxvae.conversion(fsq).quantizer
    quantizer = fsq.get_submodule(info.module)
    kept = {"center": quantizer.center.tolist(), "scale": quantizer.scale.tolist(), "fit": info.fit}
    kept_mse = mse(fsq, test_set)
    encoder, _ = fxvae.split(fsq)
    with torch.no_grad():
        latent = encoder(train_set)  # at the bottleneck the conversion found
    quantizer.fit([latent])  # the data fit, whether or not the conversion kept it
    fitted_mse = mse(fsq, test_set)
    quantizer.reset()
    reset_mse = mse(fsq, test_set)
    ae_mse = mse(ae, test_set)
    record = {
        "latent_scale": args.latent_scale,
        "patches": {"train": len(train_set), "test": len(test_set)},
        "ae_epochs": epochs,
        "ae_mse": ae_mse,
        "fitted_mse": fitted_mse,
        "no_data_mse": reset_mse,
        "converted_mse": kept_mse,
        "fitted_over_ae": fitted_mse / ae_mse,
        "no_data_over_ae": reset_mse / ae_mse,
        "converted_over_ae": kept_mse / ae_mse,
        "converted": kept,
        "calibration": {"ae_mse": info.ae_mse, "quantized_mse": info.quantized_mse, "unfitted_mse": info.unfitted_mse},
        "latent": {
            "min": latent.amin((0, 2, 3)).tolist(),
            "max": latent.amax((0, 2, 3)).tolist(),
            "q01": latent.transpose(0, 1).reshape(4, -1).quantile(0.01, dim=1).tolist(),
            "q99": latent.transpose(0, 1).reshape(4, -1).quantile(0.99, dim=1).tolist(),
            "std": latent.std((0, 2, 3)).tolist(),
        },
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
