"""fxvae.kmeans: k-means++ seeding and streamed mini-batch k-means, alone and as a VQ codebook's start."""

from __future__ import annotations

import pytest
import torch

import fxvae
from fxvae.kmeans import kmeans, nearest, objective
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
