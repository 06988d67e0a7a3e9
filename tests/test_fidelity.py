"""psnr, ssim and is_image against values worked out by hand."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from fxvae.errors import InputError
from fxvae.measure.fidelity import is_image, psnr, ssim

pytest.importorskip("torchmetrics", reason="PSNR and SSIM need torchmetrics: pip install 'fxvae[metrics]'")


def images(shape: tuple[int, ...] = (6, 1, 8, 8), seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def signs(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=torch.Generator().manual_seed(1)).double() * 2 - 1


@pytest.mark.parametrize(("error", "data_range"), [(0.1, (0.0, 1.0)), (0.05, (-1.0, 1.0)), (3.0, (0.0, 255.0))])
def test_psnr_is_ten_log10_of_the_range_squared_over_the_mse(error: float, data_range: tuple[float, float]) -> None:
    x = images()
    recon = x + error * signs(x.shape)  # every element off by exactly `error`: MSE = error^2
    expected = 10 * math.log10((data_range[1] - data_range[0]) ** 2 / error**2)
    assert psnr(recon, x, data_range=data_range) == pytest.approx(expected, rel=1e-6)


def test_psnr_does_not_clamp_a_reconstruction_outside_the_range() -> None:
    x = images()
    assert psnr(x + 0.5, x, data_range=(0.0, 1.0)) == pytest.approx(10 * math.log10(1 / 0.25), rel=1e-6)


def test_psnr_of_a_perfect_reconstruction_is_infinite() -> None:
    x = images()
    assert psnr(x, x, data_range=(0.0, 1.0)) == math.inf


def test_psnr_takes_any_shape() -> None:
    x = images((5, 24))
    assert psnr(x + 0.1, x, data_range=(0.0, 1.0)) == pytest.approx(20.0, rel=1e-6)


def test_ssim_of_identical_images_is_one() -> None:
    x = images((4, 3, 28, 28))
    assert ssim(x, x, data_range=(0.0, 1.0)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("side", [8, 28])
def test_ssim_of_constant_images_is_the_luminance_term(side: int) -> None:
    # Constant images have no variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 R)^2, whatever the window.
    a, b, c1 = 0.2, 0.6, 0.01**2
    x, recon = torch.full((2, 1, side, side), a, dtype=torch.float64), torch.full((2, 1, side, side), b)
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)
    assert ssim(recon.double(), x, data_range=(0.0, 1.0)) == pytest.approx(expected, rel=1e-6)


def test_ssim_falls_as_the_noise_grows() -> None:
    x = images((8, 1, 8, 8))
    values = [ssim(x + s * signs(x.shape), x, data_range=(0.0, 1.0)) for s in (0.02, 0.1, 0.3)]
    assert values[0] > values[1] > values[2]


def test_ssim_of_data_that_is_not_images_is_none() -> None:
    x = images((6, 64))
    assert ssim(x, x, data_range=(0.0, 1.0)) is None


@pytest.mark.parametrize(
    ("shape", "image"),
    [
        ((10, 1, 8, 8), True),
        ((10, 3, 32, 32), True),
        ((10, 4, 7, 9), True),
        ((10, 64), False),  # flattened digits
        ((10, 1, 24), False),  # a 1-d signal
        ((10, 64, 8, 8), False),  # feature maps
        ((10, 1, 6, 8), False),  # too small for SSIM's window
    ],
)
def test_is_image(shape: tuple[int, ...], image: bool) -> None:
    assert is_image(shape) is image


def test_shapes_that_differ_raise_naming_both() -> None:
    with pytest.raises(InputError, match=r"reconstruction has shape \[4, 64\] but the data has \[4, 1, 8, 8\]"):
        psnr(torch.rand(4, 64), torch.rand(4, 1, 8, 8), data_range=(0.0, 1.0))


def test_an_empty_data_range_raises() -> None:
    with pytest.raises(InputError, match=r"data_range=\(1.0, 1.0\)"):
        ssim(torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8), data_range=(1.0, 1.0))


def test_without_torchmetrics_psnr_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchmetrics.functional.image", None)
    with pytest.raises(InputError, match=r"need torchmetrics: pip install 'fxvae\[metrics\]'"):
        psnr(torch.rand(2, 4), torch.rand(2, 4), data_range=(0.0, 1.0))
