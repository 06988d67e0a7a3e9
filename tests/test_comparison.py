"""The report's numbers and words, from records made by hand: what the verdict says in each case."""

from __future__ import annotations

import pytest

from fxvae.evaluation import Estimate, Evaluation
from fxvae.study import ledger


def _evaluation(neg_elbo: float) -> dict:
    value = Estimate(neg_elbo, 0.1)
    result = Evaluation("vae", 10, 1, "bernoulli", 0, 64, recon=value, kl=Estimate(0.0, 0.0), neg_elbo=value)
    return result.to_dict()


def _records(curves: dict[str, list[list[float]]]) -> list[dict]:
    """A config line, then an epoch line per start, seed and epoch with the given -ELBO."""
    lines = [{"type": "config", "model": "AE", "options": {"starts": list(curves), "final_k": 1}}]
    for start, seeds in curves.items():
        for seed, curve in enumerate(seeds):
            for epoch, value in enumerate(curve):
                lines.append(
                    {
                        "type": "epoch",
                        "start": start,
                        "seed": seed,
                        "epoch": epoch,
                        "step": 10 * epoch,
                        "train_loss": None,
                        "seconds": float(epoch),
                        "eval": _evaluation(value),
                    }
                )
    return lines


def test_epochs_to_within_one_nat_count_from_epoch_zero_per_seed() -> None:
    result = ledger.comparison_of(_records({"scratch": [[40, 30, 25, 24]], "warm": [[90, 24.8, 24.5, 24.2]]}))
    assert result.epochs_to_within() == {"scratch": [2], "warm": [1]}
    assert "warm gets within 1 nat of scratch's final -ELBO after 1.0 epochs, 2.0x fewer epochs" in result.verdict()[1]


def test_a_start_slower_than_scratch_is_said_to_take_more_epochs() -> None:
    result = ledger.comparison_of(_records({"scratch": [[26, 25, 24]], "warm": [[90, 60, 24.5]]}))
    assert "2.0x more epochs than scratch's 1.0" in result.verdict()[1]


def test_a_start_that_never_gets_close_is_said_to_and_its_seeds_are_listed() -> None:
    curves = {"scratch": [[40, 24], [40, 24.2]], "calibrated": [[30, 27], [30, 24.5]]}
    result = ledger.comparison_of(_records(curves))
    assert result.epochs_to_within()["calibrated"] == [None, 1]
    assert "not within 1 epochs (per seed: >1, 1)" in result.verdict()[1]


def test_a_scratch_start_that_does_not_train_is_named_as_the_reason() -> None:
    result = ledger.comparison_of(_records({"scratch": [[24.5, 24.4, 24.3]], "warm": [[30, 26, 24.2]]}))
    assert "scratch itself is that close from epoch 0" in result.verdict()[1]


@pytest.mark.parametrize(("gap", "word"), [(0.05, "within"), (2.0, "beyond")])
def test_the_final_gap_is_judged_against_the_seeds_spread(gap: float, word: str) -> None:
    curves = {"scratch": [[40, 24.0], [40, 24.2]], "warm": [[30, 24.1 + gap], [30, 24.1 + gap]]}
    result = ledger.comparison_of(_records(curves))
    assert any(f"{word} twice the seeds' spread" in line for line in result.verdict())


@pytest.mark.parametrize(
    ("scratch_final", "said"), [(25.0, "warm at 3.60x"), (-20.0, "warm +110.00 nats"), (0.0, "warm +90.00 nats")]
)
def test_the_step_zero_line_gives_ratios_only_against_a_positive_reference(scratch_final: float, said: str) -> None:
    result = ledger.comparison_of(_records({"scratch": [[40, scratch_final]], "warm": [[90, 30]]}))
    assert said in result.verdict()[0]
