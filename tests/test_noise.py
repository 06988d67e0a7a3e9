"""fxvae.measure.noise.normal: numbers fixed by their coordinates (whatever the slice asked for), independent across
seeds and streams, and standard normal."""

from __future__ import annotations

import math

import pytest
import torch

from fxvae.measure import noise


def test_any_slice_of_rows_and_draws_gives_the_same_numbers_as_the_whole() -> None:
    whole = noise.normal(3, 0, torch.arange(40), range(9), (5,), dtype=torch.float64)
    part = noise.normal(3, 0, torch.arange(17, 23), range(4, 7), (5,), dtype=torch.float64)
    assert torch.equal(part, whole[4:7, 17:23])


def test_rows_may_be_any_indices_in_any_order() -> None:
    whole = noise.normal(0, 0, torch.arange(10), range(2), (3,))
    assert torch.equal(noise.normal(0, 0, torch.tensor([7, 2, 7]), range(2), (3,)), whole[:, [7, 2, 7]])


def test_the_elements_are_numbered_in_row_major_order_whatever_the_shape() -> None:
    flat = noise.normal(1, 0, torch.arange(4), range(3), (12,))
    assert torch.equal(noise.normal(1, 0, torch.arange(4), range(3), (2, 3, 2)), flat.view(3, 4, 2, 3, 2))


@pytest.mark.parametrize(("seed", "stream"), [(1, 0), (0, 1), (2**40, 0), (-1, 0)])
def test_another_seed_or_stream_gives_other_numbers(seed: int, stream: int) -> None:
    base = noise.normal(0, 0, torch.arange(50), range(4), (6,), dtype=torch.float64)
    other = noise.normal(seed, stream, torch.arange(50), range(4), (6,), dtype=torch.float64)
    assert abs(torch.corrcoef(torch.stack([base.flatten(), other.flatten()]))[0, 1].item()) < 4 / math.sqrt(1200)


def test_the_numbers_are_standard_normal() -> None:
    values = noise.normal(0, 0, torch.arange(2000), range(25), (8,), dtype=torch.float64).flatten()
    n = len(values)
    assert abs(values.mean().item()) < 4 / math.sqrt(n)
    assert abs(values.var().item() - 1) < 4 * math.sqrt(2 / n)
    ordered = values.sort().values
    empirical = torch.arange(1, n + 1, dtype=torch.float64) / n
    # Kolmogorov-Smirnov: the 0.1% critical value of the statistic is 1.95 / sqrt(n).
    assert (torch.special.ndtr(ordered) - empirical).abs().max().item() < 1.95 / math.sqrt(n)


@pytest.mark.parametrize("axis", ["draws", "rows", "elements"])
def test_neighbouring_draws_rows_and_elements_are_uncorrelated(axis: str) -> None:
    values = noise.normal(5, 0, torch.arange(300), range(300), (2,), dtype=torch.float64)
    values = {"draws": values, "rows": values.transpose(0, 1), "elements": values.movedim(2, 0)}[axis]
    first, second = values[0].flatten(), values[1].flatten()
    correlation = torch.corrcoef(torch.stack([first, second]))[0, 1].item()
    assert abs(correlation) < 4 / math.sqrt(len(first))


def test_the_dtype_and_device_are_those_asked_and_the_values_are_the_float64_ones_rounded() -> None:
    exact = noise.normal(0, 2, torch.arange(3), range(2), (4,), dtype=torch.float64)
    single = noise.normal(0, 2, torch.arange(3), range(2), (4,), device="cpu")
    assert single.dtype == torch.float32 and single.device.type == "cpu" and single.shape == (2, 3, 4)
    assert torch.equal(single, exact.float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_device_gives_the_cpus_numbers() -> None:
    cpu = noise.normal(0, 0, torch.arange(100), range(5), (7,), dtype=torch.float64)
    cuda = noise.normal(0, 0, torch.arange(100), range(5), (7,), dtype=torch.float64, device="cuda")
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-12, atol=1e-12)
