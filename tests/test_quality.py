"""sample_quality: the unbiased MMD^2 ranks degraded digits in order, sits at its floor for a set against itself,
has a standard error that matches its spread, a seeded permutation test, and measures the user's features."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from fxvae.errors import InputError
from fxvae.measure.evaluation import Estimate
from fxvae.measure.quality import DATA_FEATURES, SampleQuality, sample_quality
from tests.digits import digits

pytest.importorskip("sklearn", reason="the digits come with scikit-learn: pip install 'fxvae[metrics]'")

ALL_DIGITS = 1797


@pytest.fixture(scope="module")
def split() -> tuple[torch.Tensor, torch.Tensor]:
    """Reference digits and held-out digits: the 1,797 8x8 digits shuffled (seed 0) and cut in two."""
    data = digits(ALL_DIGITS)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    return data[order[:900]], data[order[900:]]


def blurred(images: torch.Tensor, sigma: float = 0.7) -> torch.Tensor:
    """Flattened 8x8 images under a 5x5 Gaussian blur (edges replicated)."""
    taps = torch.exp(-(torch.arange(-2, 3, dtype=images.dtype) ** 2) / (2 * sigma**2))
    kernel = torch.outer(taps, taps) / taps.sum() ** 2
    padded = F.pad(images.reshape(-1, 1, 8, 8), (2, 2, 2, 2), mode="replicate")
    return F.conv2d(padded, kernel[None, None]).reshape(len(images), -1)


def noisy(images: torch.Tensor, sigma: float = 0.1) -> torch.Tensor:
    return images + sigma * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))


def pure_noise(like: torch.Tensor) -> torch.Tensor:
    return torch.rand(like.shape, generator=torch.Generator().manual_seed(2))


def naive_mmd2(x: torch.Tensor, y: torch.Tensor, scale: float) -> float:
    """The unbiased MMD^2 by its definition, pair by pair, with the mean of Gaussians at 1/2, 1 and 2 x scale."""

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(a.double(), b.double()) ** 2
        return sum(torch.exp(-d2 / (2 * (s * scale) ** 2)) for s in (0.5, 1.0, 2.0)) / 3

    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    off_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    off_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return (off_x + off_y - 2 * k(x, y).mean()).item()


def test_the_distance_ranks_held_out_digits_then_noisy_then_blurred_then_pure_noise(split) -> None:
    reference, held_out = split
    sets = [held_out, noisy(held_out), blurred(held_out), pure_noise(held_out)]
    results = [sample_quality(s, reference, permutations=0).distance for s in sets]
    for closer, farther in itertools.pairwise(results):
        assert farther.value - closer.value > 2 * math.hypot(closer.stderr, farther.stderr), results


def test_held_out_digits_pass_the_permutation_test_and_noisy_ones_fail_it(split) -> None:
    reference, held_out = split
    assert sample_quality(held_out, reference).p_value > 0.05
    assert sample_quality(noisy(held_out), reference).p_value == pytest.approx(1 / 201)


def test_a_set_against_itself_is_at_the_floor(split) -> None:
    reference, _ = split
    result = sample_quality(reference, reference)
    # The unbiased estimator of identical sets is -2 (1 - mean off-diagonal k) / n: below 0, above -2 / n.
    assert -2 / len(reference) < result.distance.value < 0
    assert result.p_value == 1.0


def test_the_distance_is_the_unbiased_mmd2_by_its_definition(split) -> None:
    reference, held_out = split
    x, y = noisy(held_out[:70]), reference[:90]
    scale = torch.pdist(y.double()).median().item()
    assert sample_quality(x, y, permutations=0).distance.value == pytest.approx(naive_mmd2(x, y, scale), rel=1e-9)


def test_the_standard_error_matches_the_spread_over_resampled_sets() -> None:
    pool = digits(ALL_DIGITS)
    generator = torch.Generator().manual_seed(3)
    values, stderrs = [], []
    for _ in range(100):
        reference = pool[torch.randperm(len(pool), generator=generator)[:150]]
        result = sample_quality(torch.rand(150, 64, generator=generator), reference, permutations=0)
        values.append(result.distance.value)
        stderrs.append(result.distance.stderr)
    spread, stderr = torch.tensor(values).std().item(), torch.tensor(stderrs).mean().item()
    assert 0.8 * spread < stderr < 1.25 * spread


def test_samples_whose_shape_differs_from_the_reference_raise_naming_both_shapes(split) -> None:
    reference, held_out = split
    with pytest.raises(InputError, match=r"samples have shape \[897, 8, 8\] but reference has \[900, 64\]"):
        sample_quality(held_out.reshape(-1, 8, 8), reference)


def test_features_are_what_is_measured_and_named() -> None:
    def row_means(batch: torch.Tensor) -> torch.Tensor:
        return batch.mean(dim=1, keepdim=True)

    generator = torch.Generator().manual_seed(0)
    samples, reference = torch.rand(100, 16, generator=generator), torch.rand(120, 16, generator=generator)
    result = sample_quality(samples, reference, features=row_means, permutations=20)
    direct = sample_quality(row_means(samples), row_means(reference), permutations=20)
    assert result.distance == direct.distance and result.p_value == direct.p_value
    assert result.features == "row_means"
    assert direct.features == DATA_FEATURES


def test_features_run_without_gradients() -> None:
    seen: list[bool] = []

    def recording(batch: torch.Tensor) -> torch.Tensor:
        seen.append(torch.is_grad_enabled())
        return batch

    sample_quality(torch.rand(5, 2), torch.rand(5, 2), features=recording, permutations=0)
    assert seen == [False, False]


def test_a_module_as_features_runs_in_eval_mode_and_keeps_its_flags() -> None:
    extractor = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Dropout(0.9)).train()
    samples, reference = torch.rand(50, 16), torch.rand(60, 16)
    result = sample_quality(samples, reference, features=extractor, permutations=0)
    assert extractor.training and extractor[1].training
    with torch.no_grad():
        direct = sample_quality(extractor.eval()(samples), extractor(reference), permutations=0)
    assert result.distance == direct.distance


def test_a_module_as_features_is_named_by_its_class() -> None:
    extractor = torch.nn.Linear(16, 4)
    assert sample_quality(torch.rand(50, 16), torch.rand(50, 16), features=extractor).features == "Linear"


def test_features_of_the_wrong_shape_raise() -> None:
    with pytest.raises(InputError, match=r"features 'flatten' returned \[30\].*must return a tensor \[10, F\]"):
        sample_quality(torch.rand(10, 3), torch.rand(10, 3), features=torch.flatten)


def test_sets_larger_than_max_samples_are_subsampled_with_the_seed() -> None:
    generator = torch.Generator().manual_seed(0)
    samples, reference = torch.rand(300, 4, generator=generator), torch.rand(250, 4, generator=generator)
    first = sample_quality(samples, reference, max_samples=100, seed=5)
    assert (first.n_samples, first.n_reference) == (100, 100)
    assert sample_quality(samples, reference, max_samples=100, seed=5) == first
    assert sample_quality(samples, reference, max_samples=100, seed=6).distance != first.distance


def test_the_global_random_state_is_left_as_it_was() -> None:
    def noisy_features(batch: torch.Tensor) -> torch.Tensor:
        return batch + torch.randn(batch.shape) * 1e-3

    samples, reference = torch.rand(300, 4), torch.rand(250, 4)
    state = torch.get_rng_state()
    sample_quality(samples, reference, features=noisy_features, max_samples=100)
    assert torch.equal(torch.get_rng_state(), state)


def test_the_p_value_is_never_below_one_over_permutations_plus_one() -> None:
    far = sample_quality(torch.rand(40, 2) + 10, torch.rand(40, 2), permutations=99)
    assert far.p_value == pytest.approx(0.01)
    assert math.isnan(sample_quality(torch.rand(40, 2), torch.rand(40, 2), permutations=0).p_value)


def test_p_values_of_samples_from_the_reference_distribution_are_uniform() -> None:
    generator = torch.Generator().manual_seed(4)
    p_values = torch.tensor(
        [
            sample_quality(
                torch.randn(30, 2, generator=generator),
                torch.randn(40, 2, generator=generator),
                permutations=99,
                seed=i,
            ).p_value
            for i in range(200)
        ]
    )
    assert 0.05 < (p_values <= 0.1).double().mean() < 0.15
    assert 0.42 < (p_values <= 0.5).double().mean() < 0.58


def test_the_result_round_trips_through_json() -> None:
    result = SampleQuality(Estimate(0.012, 0.003), 0.02, DATA_FEATURES, 1000, 900)
    assert SampleQuality.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert set(result.to_dict()) == {"distance", "p_value", "features", "n_samples", "n_reference"}


@pytest.mark.parametrize(
    ("samples", "kwargs", "match"),
    [
        (torch.rand(1, 4), {}, r"samples has shape \[1, 4\]: pass at least 2 samples"),
        (torch.full((5, 4), math.nan), {}, "samples holds NaN or inf"),
        (torch.rand(5, 4), {"max_samples": 1}, "max_samples=1"),
        (torch.rand(5, 4), {"permutations": -1}, "permutations=-1"),
    ],
)
def test_bad_inputs_raise(samples: torch.Tensor, kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        sample_quality(samples, torch.rand(5, 4), **kwargs)
