"""The torch backend's whole-tensor path for inputs of at most ``fxvae.ops.kl._SMALL`` elements.

Inputs up to the threshold run as a handful of whole-tensor ops, larger ones stream tiles; both must
give the oracle's values on either side of the threshold and exactly at it.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

import fxvae.ops.kl as kl_module
from fxvae.ops.kl import kl_divergence
from tests.ops.kl_oracle import REDUCTIONS, assert_matches_oracle, free_bits_between, latents

SMALL = kl_module._SMALL
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# The table runs under a threshold of 96 elements, so that its many cases stay cheap; odd shapes on
# either side of it and exactly at it, each with whether it streams tiles.
TABLE_SMALL = 96
TABLE_SIZES = {
    "well below": ((2, 3, 5), False),
    "just below": ((5, 19), False),
    "exactly at": ((4, 24), False),
    "at, 4-d": ((2, 3, 4, 4), False),
    "just above": ((7, 14), True),
    "well above": ((3, 5, 7, 11), True),
}
# The same around the shipped threshold.
SIZES = {
    "just below": ((3, SMALL // 3), False),
    "exactly at": ((2, SMALL // 2), False),
    "just above": ((7, SMALL // 7 + 1), True),
}
# (beta, free bits on); the floor is chosen per input, between two dimensions' KL.
OPTIONS = {"plain": (1.0, False), "beta": (0.3, False), "beta and free bits": (0.3, True)}


def _assert_torch_backend_matches_oracle(
    shape: tuple[int, ...], dtype: torch.dtype, reduction: str, beta: float, free_bits_on: bool
) -> None:
    mu, log_sigma = latents(shape, dtype)
    free_bits = free_bits_between(mu, log_sigma) if free_bits_on else 0.0
    fn = partial(kl_divergence, backend="torch")
    assert_matches_oracle(fn, mu, log_sigma, reduction=reduction, beta=beta, free_bits=free_bits)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size", TABLE_SIZES.values(), ids=TABLE_SIZES.keys())
def test_both_sides_of_the_threshold_match_the_oracle(
    monkeypatch: pytest.MonkeyPatch,
    size: tuple[tuple[int, ...], bool],
    dtype: torch.dtype,
    reduction: str,
    options: tuple[float, bool],
) -> None:
    monkeypatch.setattr(kl_module, "_SMALL", TABLE_SMALL)
    _assert_torch_backend_matches_oracle(size[0], dtype, reduction, *options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_both_sides_of_the_shipped_threshold_match_the_oracle(
    size: tuple[tuple[int, ...], bool], reduction: str
) -> None:
    _assert_torch_backend_matches_oracle(size[0], torch.float32, reduction, *OPTIONS["beta and free bits"])


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_only_inputs_above_the_threshold_stream_tiles(
    monkeypatch: pytest.MonkeyPatch, size: tuple[tuple[int, ...], bool]
) -> None:
    shape, streams = size
    tiled: list[tuple[int, int, int]] = []
    tiles = kl_module._tiles
    monkeypatch.setattr(kl_module, "_tiles", lambda *args: tiled.append(args) or tiles(*args))
    mu, log_sigma = latents(shape, torch.float32)
    for reduction in ("none", "batchmean"):
        kl_divergence(mu, log_sigma, reduction=reduction, free_bits=0.1, backend="torch").sum().backward()
    # Forward streams for the per-dimension sums, again for "none"'s per-sample sums; backward once.
    assert len(tiled) == (5 if streams else 0)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_the_loss_is_one_autograd_node_over_the_inputs(size: tuple[tuple[int, ...], bool]) -> None:
    mu, log_sigma = latents(size[0], torch.float32)
    grad_fn = kl_divergence(mu, log_sigma, free_bits=0.1).grad_fn
    assert type(grad_fn).__name__ == "_KLDivergenceBackward"
    assert [type(f).__name__ for f, _ in grad_fn.next_functions] == ["AccumulateGrad", "AccumulateGrad"]
