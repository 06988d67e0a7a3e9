"""KL(N(mu, sigma^2) || N(0, I)) for a diagonal Gaussian parametrised by mu and log sigma."""

from __future__ import annotations

from typing import Literal

import torch

from fxvae.errors import KLError

Reduction = Literal["none", "sum", "mean", "batchmean"]


def kl_divergence(
    mu: torch.Tensor,
    log_sigma: torch.Tensor,
    *,
    reduction: Reduction = "batchmean",
) -> torch.Tensor:
    """KL divergence of N(mu, exp(log_sigma)^2) from N(0, I), 1/2 * (mu^2 + sigma^2 - 2 log sigma - 1).

    >>> kl_divergence(torch.zeros(4, 8), torch.zeros(4, 8))
    tensor(0.)
    """
    if mu.shape != log_sigma.shape:
        raise KLError(f"mu has shape {tuple(mu.shape)} but log_sigma has {tuple(log_sigma.shape)}; pass equal shapes")
    per_element = 0.5 * (mu.square() + torch.exp(2 * log_sigma) - 2 * log_sigma - 1)
    if reduction == "none":
        return per_element.flatten(1).sum(1)
    if reduction == "sum":
        return per_element.sum()
    if reduction == "mean":
        return per_element.mean()
    if reduction == "batchmean":
        return per_element.sum() / mu.shape[0]
    raise KLError(f"unknown reduction {reduction!r}; use 'none', 'sum', 'mean' or 'batchmean'")
