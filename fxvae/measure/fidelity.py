"""Reconstruction in the data's own units: PSNR for any data, SSIM for images (torchmetrics, the ``metrics``
extra: ``pip install 'fxvae[metrics]'``).

Neither clamps the reconstruction into ``data_range``: the range sets the peak signal (PSNR) and SSIM's
constants, and a reconstruction that overshoots it is measured as it is, so that PSNR and the MSE beside it
in a report describe the same errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import torch

from fxvae.errors import InputError

IMAGE_CHANNELS = (1, 3, 4)
"""Channel counts of an image: grey, RGB, RGBA."""
SSIM_WINDOW = 11
"""Wang et al. 2004's Gaussian window (11 x 11, sigma 1.5); smaller images get a window of their shorter side."""
MIN_IMAGE_SIDE = 7
"""The smallest side SSIM is measured on: the local statistics need a 7 x 7 window (scikit-image's default)."""


def is_image(shape: Sequence[int]) -> bool:
    """Whether a batch of this shape holds images: ``[N, C, H, W]`` with 1, 3 or 4 channels and both sides at
    least 7 pixels (so a conv AE's 64-channel features or a 1-d signal are not images).

    >>> from fxvae.measure.fidelity import is_image
    >>> is_image((100, 1, 8, 8)), is_image((100, 64)), is_image((100, 3, 24)), is_image((100, 64, 8, 8))
    (True, False, False, False)
    """
    return len(shape) == 4 and shape[1] in IMAGE_CHANNELS and min(shape[2], shape[3]) >= MIN_IMAGE_SIDE


def psnr(recon: torch.Tensor, x: torch.Tensor, *, data_range: tuple[float, float]) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(R^2 / MSE), with R = ``data_range[1] - data_range[0]`` and
    the MSE over every element of the set (torchmetrics' default; inf for a perfect reconstruction).

    >>> from fxvae.measure.fidelity import psnr
    >>> target = torch.zeros(4, 1, 8, 8)
    >>> round(psnr(target + 0.1, target, data_range=(0.0, 1.0)), 3)  # MSE 0.01 on a range of 1: 20 dB
    20.0
    """
    span = _check(recon, x, data_range)
    functional = _torchmetrics().functional.image
    value = functional.peak_signal_noise_ratio(recon.double(), x.double(), data_range=span).item()
    return value if math.isfinite(value) else math.inf


def ssim(recon: torch.Tensor, x: torch.Tensor, *, data_range: tuple[float, float]) -> float | None:
    """The mean structural similarity (Wang et al. 2004) of images ``[N, C, H, W]``: 1 for identical images;
    None when ``x`` is not a batch of images (see :func:`is_image`). The Gaussian window is Wang et al.'s
    11 x 11 with sigma 1.5, narrowed on small images to the largest odd size that fits their shorter side,
    sigma in proportion (8 x 8 digits: 7 x 7, sigma 0.95).

    >>> from fxvae.measure.fidelity import ssim
    >>> images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> ssim(images, images, data_range=(0.0, 1.0)), ssim(images.flatten(1), images.flatten(1), data_range=(0.0, 1.0))
    (1.0, None)
    """
    span = _check(recon, x, data_range)
    if not is_image(x.shape):
        return None
    window = min(SSIM_WINDOW, min(x.shape[2], x.shape[3]))
    window -= 1 - window % 2
    sigma = 1.5 * window / SSIM_WINDOW
    functional = _torchmetrics().functional.image
    value = functional.structural_similarity_index_measure(recon.double(), x.double(), sigma=sigma, data_range=span)
    return value.item()


def _check(recon: torch.Tensor, x: torch.Tensor, data_range: tuple[float, float]) -> float:
    if tuple(recon.shape) != tuple(x.shape):
        raise InputError(
            f"the reconstruction has shape {list(recon.shape)} but the data has {list(x.shape)}: pass one "
            "reconstruction per sample, in the data's shape"
        )
    if len(data_range) != 2 or not data_range[1] > data_range[0]:
        raise InputError(f"data_range={tuple(data_range)}: pass (low, high) with high > low, e.g. (0.0, 1.0)")
    return float(data_range[1] - data_range[0])


def _torchmetrics() -> ModuleType:
    try:
        import torchmetrics
        import torchmetrics.functional.image
    except ImportError as err:
        raise InputError("PSNR and SSIM need torchmetrics: pip install 'fxvae[metrics]'") from err
    return torchmetrics
