"""k-means for codebooks: k-means++ seeding on a seeded subsample, then streamed mini-batch k-means in float64.

k-means++ (Arthur and Vassilvitskii 2007) draws each new centre with probability proportional to the squared
distance to the nearest centre chosen so far: O(n k) distances over n rows, so it seeds on a random subsample
of at most ``seed_rows`` rows. Mini-batch k-means (Sculley 2010) then streams every row through ``passes``
times, in shuffled mini-batches: each centre moves to the running mean of all the rows it has won so far
(per-centre learning rate 1 / its count). Everything is computed in float64 on the rows' device, and one
``seed`` makes the result reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fxvae.errors import InputError

BATCH_ROWS = 4096
"""Rows per mini-batch (and per block when assigning rows to centres)."""


@dataclass(frozen=True)
class KMeans:
    """The centres k-means found, how many rows each one is nearest to, and the k-means objective.

    >>> found = fxvae.kmeans.kmeans(torch.tensor([[0.0], [0.1], [10.0], [10.1]]), 2)
    >>> sorted(round(c, 6) for c in found.centroids.flatten().tolist()), found.counts.tolist()
    ([0.05, 10.05], [2, 2])
    >>> round(found.objective, 6)
    0.0025
    """

    centroids: torch.Tensor
    """(k, features), float64."""
    counts: torch.Tensor
    """(k,), int64: rows nearest to each centre."""
    objective: float
    """Mean squared Euclidean distance from a row to its nearest centre."""


def kmeans(
    rows: torch.Tensor,
    k: int,
    *,
    seed: int = 0,
    passes: int = 4,
    batch_size: int = BATCH_ROWS,
    seed_rows: int | None = None,
) -> KMeans:
    """k centres for ``rows`` (n, features): k-means++ on a subsample, then mini-batch k-means over all rows.

    ``seed_rows`` (default ``max(8 k, 4096)``) bounds the subsample k-means++ draws its seeds from; ``passes``
    is how many times every row is streamed through in mini-batches of ``batch_size``.

    >>> rows = torch.cat([torch.randn(500, 2) * 0.1 + c for c in (-5.0, 0.0, 5.0)])
    >>> found = fxvae.kmeans.kmeans(rows, 3)
    >>> sorted(round(c) for c in found.centroids[:, 0].tolist()), found.objective < 0.03
    ([-5, 0, 5], True)
    """
    if rows.dim() != 2 or len(rows) < k:
        raise InputError(
            f"k-means needs at least k={k} rows of shape (n, features), got {list(rows.shape)}: pass more data "
            "or ask for fewer centres"
        )
    generator = torch.Generator(device=rows.device).manual_seed(seed)
    subsample = torch.randperm(len(rows), generator=generator, device=rows.device)[: seed_rows or max(8 * k, 4096)]
    centroids = plus_plus(rows[subsample].double(), k, generator)
    wins = torch.zeros(k, dtype=torch.float64, device=rows.device)
    for _ in range(passes):
        order = torch.randperm(len(rows), generator=generator, device=rows.device)
        for start in range(0, len(rows), batch_size):
            batch = rows[order[start : start + batch_size]].double()
            index, _ = nearest(batch, centroids)
            won = torch.zeros_like(wins).index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
            sums = torch.zeros_like(centroids).index_add_(0, index, batch)
            wins += won
            # Each centre becomes the mean of every row it has won: c + (sum - n c) / (count so far).
            centroids += (sums - won[:, None] * centroids) / wins.clamp_min(1.0)[:, None]
    counts = torch.zeros(k, dtype=torch.int64, device=rows.device)
    total = 0.0
    for start in range(0, len(rows), batch_size):
        index, distance = nearest(rows[start : start + batch_size].double(), centroids)
        counts += torch.bincount(index, minlength=k)
        total += distance.sum().item()
    return KMeans(centroids, counts, total / len(rows))


def plus_plus(rows: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeds: k of ``rows``, each drawn with probability proportional to its squared distance to
    the nearest seed already drawn (uniformly where every row is a seed already)."""
    first = torch.randint(len(rows), (1,), generator=generator, device=rows.device)
    seeds = rows.new_empty(k, rows.shape[1])
    seeds[0] = rows[first[0]]
    distance = (rows - seeds[0]).pow(2).sum(1)
    for i in range(1, k):
        weights = distance if distance.sum() > 0 else torch.ones_like(distance)
        pick = torch.multinomial(weights, 1, generator=generator)[0]
        seeds[i] = rows[pick]
        distance = torch.minimum(distance, (rows - seeds[i]).pow(2).sum(1))
    return seeds


def nearest(rows: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's nearest centre and its squared distance: ||c||^2 - 2 x c^T as one matmul, then ||x||^2.

    >>> nearest(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]]))
    (tensor([0, 1]), tensor([ 0., 16.]))
    """
    scores = torch.addmm((centroids * centroids).sum(1), rows, centroids.T, alpha=-2)
    best, index = scores.min(1)
    return index, (best + (rows * rows).sum(1)).clamp_min(0.0)


def objective(rows: torch.Tensor, centroids: torch.Tensor) -> float:
    """The k-means objective of ``centroids`` on ``rows``: the mean squared distance to the nearest one.

    >>> objective(torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0]]))
    1.0
    """
    total = 0.0
    for start in range(0, len(rows), BATCH_ROWS):
        _, distance = nearest(rows[start : start + BATCH_ROWS].double(), centroids.double())
        total += distance.sum().item()
    return total / len(rows)
