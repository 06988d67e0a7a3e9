"""The calibrated start keeps its head start under fxvae.compare's default recipe, on a small real pair.

The rule docs/calibration.md states from examples/warm_start_study.py, pinned on an MLP AE of 320 of
scikit-learn's digits (held out: the next 80, never trained on), 20 epochs, 2 seeds.
"""

from __future__ import annotations

import pytest

import fxvae
from fxvae.study.records import NEAR_NATS

FIRST_EPOCH_RISE = 0.5
"""Nats the calibrated start's held-out -ELBO may rise in its first epoch (Adam's first steps, warmed up)."""
EPOCHS_TO_NEAR = 3
"""Epochs within which the calibrated start gets within 1 nat of scratch's final -ELBO."""
OVER_WARM = 0.5
"""Nats the calibrated start may end above the plain warm start."""


@pytest.fixture(scope="module")
def default_recipe() -> fxvae.Comparison:
    pytest.importorskip("sklearn")
    from tests.digits import digits, trained_ae

    data = digits()
    train, test = data[:320], data[320:]
    ae = trained_ae(train)
    return fxvae.compare(
        ae, train, test, starts=("scratch", "warm", "calibrated"), epochs=20, seeds=2, likelihood="bernoulli",
        final_k=10, density=(), progress=False,
    )  # fmt: skip


def test_the_calibrated_start_does_not_rise_in_its_first_epoch(default_recipe: fxvae.Comparison) -> None:
    for run in default_recipe.of("calibrated"):
        epoch_0, epoch_1 = run.objective()[:2]
        assert epoch_1 <= epoch_0 + FIRST_EPOCH_RISE, (run.seed, epoch_0, epoch_1)


def test_the_calibrated_start_is_within_one_nat_of_scratchs_final_in_three_epochs(
    default_recipe: fxvae.Comparison,
) -> None:
    reached = default_recipe.epochs_to_within(NEAR_NATS)["calibrated"]
    assert all(epoch is not None and epoch <= EPOCHS_TO_NEAR for epoch in reached), reached


def test_the_calibrated_start_ends_level_with_the_warm_start_and_below_scratch(
    default_recipe: fxvae.Comparison,
) -> None:
    calibrated, warm, scratch = (default_recipe.final_values(s) for s in ("calibrated", "warm", "scratch"))
    for c, w, s in zip(calibrated, warm, scratch, strict=True):
        assert c <= w + OVER_WARM and c <= s, (c, w, s)
