"""The test oracle of the KL loss: torch.distributions in float64, the tolerance table, and the check."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import Normal
from torch.distributions import kl_divergence as distributions_kl

REDUCTIONS = ("none", "sum", "mean", "batchmean")

# (atol, rtol) of the loss and of the gradients against the float64 oracle, per input dtype. The loss
# of float16/bfloat16 inputs is computed in float32, so only the gradients (rounded to the input
# dtype) are loose.
TOLERANCES: dict[torch.dtype, dict[str, tuple[float, float]]] = {
    torch.float64: {"loss": (1e-12, 1e-12), "grad": (1e-12, 1e-12)},
    torch.float32: {"loss": (1e-5, 1e-5), "grad": (1e-6, 1e-5)},
    torch.float16: {"loss": (1e-5, 1e-5), "grad": (1e-4, 2e-3)},
    torch.bfloat16: {"loss": (1e-5, 1e-5), "grad": (1e-3, 1.6e-2)},
}


def oracle(
    mu: torch.Tensor,
    log_sigma: torch.Tensor,
    reduction: str = "batchmean",
    beta: float = 1.0,
    free_bits: float = 0.0,
) -> torch.Tensor:
    """KL(N(mu, exp(log_sigma)^2) || N(0, 1)) by torch.distributions, with free bits as documented.

    >>> oracle(torch.zeros(2, 3), torch.zeros(2, 3))
    tensor(0.)
    """
    per_element = distributions_kl(Normal(mu, log_sigma.exp()), Normal(0.0, 1.0))
    per_element = per_element.reshape(mu.shape[0], -1)
    if free_bits > 0.0:
        per_dim = per_element.mean(0)
        per_element = torch.where(per_dim >= free_bits, per_element, torch.full_like(per_element, free_bits))
    batch, dims = per_element.shape
    if reduction == "none":
        out = per_element.sum(1)
    elif reduction == "sum":
        out = per_element.sum()
    elif reduction == "mean":
        out = per_element.sum() / max(batch * dims, 1)
    else:
        out = per_element.sum() / max(batch, 1)
    return beta * out


def latents(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (mu, log_sigma) pair that requires grad, with log sigma spread over [-1.5, 1.5]."""
    generator = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=generator, dtype=torch.float64)
    log_sigma = 0.5 * torch.randn(shape, generator=generator, dtype=torch.float64)
    return mu.to(dtype).requires_grad_(), log_sigma.to(dtype).requires_grad_()


def upstream(out: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """A grad_output other than ones, in the loss's dtype."""
    generator = torch.Generator().manual_seed(seed)
    weights = 0.5 + torch.rand(out.shape, generator=generator, dtype=torch.float64)
    return weights.to(device=out.device, dtype=out.dtype)


def free_bits_between(mu: torch.Tensor, log_sigma: torch.Tensor) -> float:
    """A floor halfway between two dimensions' batch-mean KL: some dimensions floored, none at a tie."""
    per_dim = oracle_per_dim(mu, log_sigma).sort().values
    middle = per_dim.numel() // 2
    return float(per_dim[middle - 1] + per_dim[middle]) / 2


def oracle_per_dim(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        per_element = distributions_kl(Normal(mu.double(), log_sigma.double().exp()), Normal(0.0, 1.0))
    return per_element.reshape(mu.shape[0], -1).mean(0)


def loss_and_grads(
    mu: torch.Tensor,
    log_sigma: torch.Tensor,
    fn: Callable[..., torch.Tensor],
    grad_output: torch.Tensor | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``fn(mu, log_sigma, **kwargs)`` and the gradients of both inputs, with ``upstream`` by default."""
    mu = mu.detach().requires_grad_()
    log_sigma = log_sigma.detach().requires_grad_()
    out = fn(mu, log_sigma, **kwargs)
    out.backward(upstream(out) if grad_output is None else grad_output)
    return out.detach(), mu.grad, log_sigma.grad


def assert_matches_oracle(
    fn: Callable[..., torch.Tensor], mu: torch.Tensor, log_sigma: torch.Tensor, **kwargs: object
) -> None:
    """Loss and gradients of ``fn`` against the float64 oracle, within the input dtype's tolerances.

    ``kwargs`` (reduction, beta, free_bits) go to both; bind anything else, such as the backend, into ``fn``.
    """
    atol, rtol = TOLERANCES[mu.dtype]["loss"]
    g_atol, g_rtol = TOLERANCES[mu.dtype]["grad"]
    out, grad_mu, grad_ls = loss_and_grads(mu, log_sigma, fn, **kwargs)
    ref, ref_mu, ref_ls = loss_and_grads(
        mu.double(), log_sigma.double(), oracle, grad_output=upstream(out).double(), **kwargs
    )
    torch.testing.assert_close(out.double(), ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(grad_mu.double(), ref_mu, atol=g_atol, rtol=g_rtol)
    torch.testing.assert_close(grad_ls.double(), ref_ls, atol=g_atol, rtol=g_rtol)
