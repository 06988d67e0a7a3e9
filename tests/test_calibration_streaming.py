"""Calibration reads its data in passes, one batch at a time, wherever the data can be read again."""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import pytest
import torch

import fxvae
from tests.zoo import BY_NAME, build

# An untrained AE on noise: its reconstruction is no Gaussian mean of the data, which is not under test here.
pytestmark = pytest.mark.filterwarnings("ignore:the reconstruction is further from the data")

ENTRY = BY_NAME["mlp_sigmoid"]
BATCHES, ROWS = 20, 16


class CountedBatches:
    """``BATCHES`` batches cut from ``x`` afresh on each read, counting how many of them are alive at once."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.alive = 0
        self.most_alive = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.x), ROWS):
            batch = self.x[start : start + ROWS].clone()
            self.alive += 1
            self.most_alive = max(self.most_alive, self.alive)
            weakref.finalize(batch, self._freed)
            yield batch

    def _freed(self) -> None:
        self.alive -= 1


def _x(samples: int = BATCHES * ROWS) -> torch.Tensor:
    return torch.randn(samples, 64, generator=torch.Generator().manual_seed(0))


def _state(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in vae.state_dict().items()}


@pytest.mark.parametrize(
    "latent",
    [fxvae.Gaussian(log_sigma_init="auto"), fxvae.Gaussian(log_sigma_init="auto", fold=False), fxvae.VQ(8)],
    ids=["gaussian-auto", "gaussian-auto-unfolded", "vq"],
)
def test_calibration_holds_a_few_batches_at_once_not_the_data(latent: fxvae.LatentConfig) -> None:
    data = CountedBatches(_x())
    fxvae.convert(build(ENTRY), ENTRY.inputs(4), latent=latent, calibration=data)
    assert data.alive == 0
    assert data.most_alive <= 3


def test_recalibration_holds_a_few_batches_at_once_not_the_data() -> None:
    vae, _ = fxvae.convert(build(ENTRY), ENTRY.inputs(4))
    data = CountedBatches(_x())
    fxvae.calibrate(vae, data, log_sigma_init="auto")
    assert fxvae.conversion(vae).calibration.samples == BATCHES * ROWS
    assert data.most_alive <= 3


# Not FSQ: its random start (what a poor fit falls back to) is drawn after a DataLoader's iterator took its seed from
# the global generator, so it differs with the data's form, as it did before calibration streamed.
@pytest.mark.parametrize(
    "latent",
    [fxvae.Gaussian(log_sigma_init="auto"), fxvae.Gaussian(log_sigma_init="auto", standardize="whiten"), fxvae.VQ(8)],
    ids=["gaussian-auto", "gaussian-whiten", "vq"],
)
def test_a_tensor_a_loader_and_a_generator_of_the_same_batches_calibrate_the_same_vae(
    latent: fxvae.LatentConfig,
) -> None:
    x = _x(600)
    loader = torch.utils.data.DataLoader(x, batch_size=256, shuffle=False)
    generator = (x[start : start + 256] for start in range(0, len(x), 256))
    want = _state(fxvae.convert(build(ENTRY), ENTRY.inputs(4), latent=latent, calibration=x)[0])
    for data in (loader, generator):
        got = _state(fxvae.convert(build(ENTRY), ENTRY.inputs(4), latent=latent, calibration=data)[0])
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_one_shot_generator_is_read_once_and_calibrates_on_every_batch() -> None:
    x = _x()
    reads = []

    def one_shot() -> Iterator[torch.Tensor]:
        for start in range(0, len(x), ROWS):
            reads.append(start)
            yield x[start : start + ROWS]

    vae, _ = fxvae.convert(build(ENTRY), ENTRY.inputs(4), calibration=one_shot(), log_sigma_init="auto")
    assert len(reads) == BATCHES
    assert fxvae.conversion(vae).calibration.samples == len(x)
    encoder, _ = fxvae.split(vae)
    with torch.no_grad():
        mu = encoder.eval()(x)[0].double()
    torch.testing.assert_close(mu.mean(0), torch.zeros(8, dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("last", "message"),
    [
        (torch.randn(ROWS, 63), r"a calibration batch has shape \[16, 63\], but the model takes \['batch', 64\]"),
        (torch.full((ROWS, 64), float("nan")), "NaN or inf"),
    ],
    ids=["wrong_shape", "nan"],
)
def test_a_bad_last_batch_is_refused_before_the_vae_changes(last: torch.Tensor, message: str) -> None:
    vae, _ = fxvae.convert(build(ENTRY), ENTRY.inputs(4))
    before = _state(vae)
    data = [*_x().split(ROWS), last]
    with pytest.raises(fxvae.InputError, match=message):
        fxvae.calibrate(vae, data, log_sigma_init="auto")
    assert fxvae.conversion(vae).calibration is None
    assert all(torch.equal(vae.state_dict()[k], v) for k, v in before.items())


def test_data_of_empty_batches_is_refused_as_empty_whatever_their_shape() -> None:
    data = [torch.randn(0, 64), torch.randn(0, 63)]
    with pytest.raises(fxvae.InputError, match="the calibration data is empty"):
        fxvae.convert(build(ENTRY), ENTRY.inputs(4), calibration=data)


def test_passes_read_a_list_of_batches_again_on_each_iteration() -> None:
    batches = list(_x().split(ROWS))
    passes = fxvae.io.data.Passes(batches, 1, (64,), torch.device("cpu"))
    first, second = [args[0] for args in passes], [args[0] for args in passes]
    assert passes.samples == BATCHES * ROWS and len(first) == len(second) == BATCHES
    assert all(a is b for a, b in zip(first, second, strict=True))
