"""fxvae.latents.kmeans: k-means++ seeding and streamed mini-batch k-means, alone and as a VQ codebook's start."""

from __future__ import annotations

import pytest
import torch

import fxvae
from fxvae.latents.kmeans import kmeans, nearest, objective
from tests.discrete_zoo import BY_NAME, calibration, convert


def _blobs(centres: int = 24, per: int = 200, dims: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    means = torch.randn(centres, dims, generator=generator) * 4
    return (means.repeat_interleave(per, 0) + 0.3 * torch.randn(centres * per, dims, generator=generator)).float()


def _random_rows(rows: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:k]]


def test_kmeans_beats_random_rows_on_the_kmeans_objective() -> None:
    rows = _blobs()
    found = kmeans(rows, 24)
    random_init = min(objective(rows, _random_rows(rows, 24, seed)) for seed in range(5))
    assert found.objective < 0.2 * random_init
    assert found.objective == pytest.approx(objective(rows, found.centroids))


def test_a_vq_codebook_starts_nearer_the_calibration_codes_than_a_random_one() -> None:
    entry = BY_NAME["conv_latent"]
    model, _ = convert(entry, "vq", codebook_size=32)
    encoder, _ = fxvae.split(model)
    with torch.no_grad():
        latent = encoder(*calibration(entry)[0])
    rows = latent.movedim(1, -1).reshape(-1, latent.shape[1])
    codebook = model.get_buffer("quantize.codebook")
    fitted = objective(rows, codebook)
    assert fitted < 0.5 * objective(rows, _random_rows(rows, 32))
    assert fitted < 0.5 * objective(rows, torch.randn(32, rows.shape[1]) * rows.std(0) + rows.mean(0))


def test_kmeans_counts_every_row_once_and_finds_separated_clusters() -> None:
    rows = torch.cat([torch.full((50, 2), -3.0), torch.full((30, 2), 3.0)]) + 0.01 * torch.randn(80, 2)
    found = kmeans(rows, 2)
    assert sorted(found.counts.tolist()) == [30, 50]
    assert found.centroids.dtype == torch.float64
    assert sorted(found.centroids[:, 0].round().tolist()) == [-3.0, 3.0]


def test_kmeans_is_reproducible_with_its_seed() -> None:
    rows = _blobs(per=50)
    first, again, other = kmeans(rows, 16, seed=3), kmeans(rows, 16, seed=3), kmeans(rows, 16, seed=4)
    assert torch.equal(first.centroids, again.centroids)
    assert not torch.equal(first.centroids, other.centroids)


def test_kmeans_seeds_from_a_subsample_and_streams_every_row() -> None:
    rows = _blobs(per=400)
    found = kmeans(rows, 24, seed_rows=100, batch_size=256)
    assert int(found.counts.sum()) == len(rows)
    assert found.objective < 0.2 * objective(rows, _random_rows(rows, 24))


def test_nearest_is_the_argmin_of_the_euclidean_distance() -> None:
    rows, centroids = torch.randn(300, 5).double(), torch.randn(40, 5).double()
    index, distance = nearest(rows, centroids)
    assert torch.equal(index, torch.cdist(rows, centroids).argmin(1))
    torch.testing.assert_close(distance, torch.cdist(rows, centroids).min(1).values.pow(2))


def test_kmeans_refuses_more_centres_than_rows() -> None:
    with pytest.raises(
        fxvae.InputError, match=r"k-means needs at least k=8 rows of shape \(n, features\), got \[5, 2\]"
    ):
        kmeans(torch.randn(5, 2), 8)


def _one_matmul_search(rows: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The unchunked search: every score at once, ||c||^2 - 2 x.c, and its argmin."""
    return torch.addmm((centroids * centroids).sum(1), rows, centroids.T, alpha=-2).argmin(1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nearest_gives_the_same_codes_and_distances_whatever_the_block(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(700, 5, generator=generator, dtype=dtype)
    # Near ties, which blocked matmuls round either way: rows 0 to 99 lie half way between codes j and 100 + j.
    step = 1e-3 * torch.randn(100, 5, generator=generator, dtype=dtype)
    centroids = torch.cat([rows[:100] + step, rows[:100] - step, torch.randn(100, 5, generator=generator, dtype=dtype)])
    whole, distance = nearest(rows, centroids, block=10**9)
    far = slice(100, None)  # no near tie: the one-matmul search agrees
    assert torch.equal(whole[far], _one_matmul_search(rows, centroids)[far])
    for block in (150, 299, 301, 4096):
        index, blocked = nearest(rows, centroids, block=block)
        assert torch.equal(index, whole) and torch.equal(blocked, distance), block


@pytest.mark.parametrize("block", [2, 3, 5, 10**9])
def test_nearest_breaks_ties_by_the_lowest_index(block: int) -> None:
    centroids = torch.tensor([[2.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [1.0, 5.0]])  # codes 2, 3 repeat 0, 1
    rows = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [3.0, 0.0]])  # row 2: codes 0 to 3 tie
    index, distance = nearest(rows, centroids, block=block)
    assert index.tolist() == [0, 1, 0, 1, 0]
    assert distance.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
