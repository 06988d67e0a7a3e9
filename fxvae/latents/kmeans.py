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
BLOCK_ELEMENTS = 1 << 22
"""(row, centre) pairs the nearest-centre search scores at a time: 16 MiB of float32 scores."""


@dataclass(frozen=True)
class KMeans:
    """The centres k-means found, how many rows each one is nearest to, and the k-means objective.

    >>> found = fxvae.latents.kmeans.kmeans(torch.tensor([[0.0], [0.1], [10.0], [10.1]]), 2)
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
    >>> found = fxvae.latents.kmeans.kmeans(rows, 3)
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


def nearest(
    rows: torch.Tensor, centroids: torch.Tensor, *, block: int = BLOCK_ELEMENTS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's nearest centre and its squared distance, in memory bounded by ``block`` scores at a time.

    The search runs over blocks of at most ``block`` (row, centre) pairs: per block one matmul gives the scores
    ||c||^2 - 2 x.c, and only the centres whose score is within the matmul's rounding bound of the row's best
    so far are candidates. Each candidate's squared distance is then summed feature by feature, in a fixed
    order, one elementwise operation at a time, so that its value is the same whatever the blocks (a blocked
    matmul rounds differently from a whole one). The nearest is the candidate at the least of these
    distances, and of equal ones **the lowest index**. The result does not depend on ``block``: it is the
    whole search's, ties included. Memory: the block's scores and the candidates' features (one per row,
    unless codes are equally near), plus the rows and centres themselves.

    >>> nearest(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]]))
    (tensor([0, 1]), tensor([ 0., 16.]))
    >>> nearest(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0], [2.0, 0.0]]))[0]  # a tie: the lower index
    tensor([0])
    """
    n, k = len(rows), len(centroids)
    rows, centroids = rows.detach(), centroids.detach()
    work = torch.promote_types(rows.dtype, torch.float32)
    norms = (centroids * centroids).sum(1)
    # |computed score - exact score| <= about (features + 2) u (||x|| + ||c||)^2 for any summation order, and
    # the fixed-order distance is as close to the exact one: twice both is a margin no rounding crosses.
    reach = centroids.to(work).norm(dim=1).amax() if k else torch.zeros((), dtype=work, device=rows.device)
    margin = 8 * (rows.shape[1] + 3) * _unit_roundoff(rows) * (rows.to(work).norm(dim=1) + reach) ** 2
    index = torch.zeros(n, dtype=torch.int64, device=rows.device)
    distance = torch.full((n,), torch.inf, dtype=work, device=rows.device)
    # Blocks of whole codebooks where they fit, else one row against as many codes as fit; never a single row
    # against a single code where the matrix is wider (a matrix-vector product is its own kernel).
    codes_per = max(min(k, block), 2)
    rows_per = max(block // codes_per, 2)
    for first in range(0, n, rows_per):
        chunk = slice(first, min(first + rows_per, n))
        best = torch.full((chunk.stop - first,), torch.inf, dtype=norms.dtype, device=rows.device)
        for start in range(0, k, codes_per):
            scores = torch.addmm(
                norms[start : start + codes_per], rows[chunk], centroids[start : start + codes_per].T, alpha=-2
            )
            best = torch.minimum(best, scores.amin(1))
            row, code = (scores <= (best.to(work) + margin[chunk]).to(scores.dtype)[:, None]).nonzero(as_tuple=True)
            exact = _squared_distance(rows[chunk][row], centroids[start + code], work)
            # Per row, the least candidate distance, then the lowest code index at it.
            low = torch.full_like(best, torch.inf, dtype=work).scatter_reduce(0, row, exact, "amin")
            at = torch.where(exact == low[row], start + code, k)
            lowest = torch.full_like(index[chunk], k).scatter_reduce(0, row, at, "amin")
            # Blocks come in increasing code order: on a tie the earlier (lower) index stays.
            better = low < distance[chunk]
            index[chunk] = torch.where(better, lowest, index[chunk])
            distance[chunk] = torch.where(better, low, distance[chunk])
    return index, distance.to(rows.dtype)


def _squared_distance(rows: torch.Tensor, centroids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """||x - c||^2 of paired rows, one feature at a time in a fixed order: each element is rounded the same
    way whatever the number of pairs (a reduction kernel may order its sums by the tensor's shape)."""
    difference = rows.to(dtype) - centroids.to(dtype)
    total = difference[:, 0] * difference[:, 0] if difference.shape[1] else difference.new_zeros(len(difference))
    for feature in range(1, difference.shape[1]):
        total = total + difference[:, feature] * difference[:, feature]
    return total


def _unit_roundoff(rows: torch.Tensor) -> float:
    """Half the machine epsilon of the matmul that scores ``rows``: TF32 or bfloat16 where CUDA allows them."""
    eps = torch.finfo(rows.dtype).eps
    if rows.dtype == torch.float32 and rows.is_cuda and torch.get_float32_matmul_precision() != "highest":
        eps = torch.finfo(torch.bfloat16).eps
    return eps / 2


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
