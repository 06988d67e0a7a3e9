"""The modules the AE -> VAE rewrite inserts, and the posterior they expose."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fxvae.errors import FxvaeError
from fxvae.ops import kl_divergence
from fxvae.ops.kl import Reduction


@dataclass(frozen=True)
class DiagonalGaussian:
    """q(z | x) = N(mu, diag(exp(log_sigma))^2), as produced by a VAE's latest forward.

    >>> post = fxvae.posterior(vae)
    >>> post.mu.shape, post.sample().shape, post.kl()
    """

    mu: torch.Tensor
    log_sigma: torch.Tensor

    @property
    def sigma(self) -> torch.Tensor:
        return torch.exp(self.log_sigma)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw mu + sigma * eps (differentiable in mu and log_sigma)."""
        eps = torch.randn(self.mu.shape, generator=generator, dtype=self.mu.dtype, device=self.mu.device)
        return self.mu + self.sigma * eps

    def mode(self) -> torch.Tensor:
        return self.mu

    def kl(self, reduction: Reduction = "batchmean") -> torch.Tensor:
        """KL(q || N(0, I)), summed over latent dimensions and averaged over the batch by default."""
        return kl_divergence(self.mu, self.log_sigma, reduction=reduction)


class Reparameterize(nn.Module):
    """z = mu + exp(log_sigma) * eps in training mode, z = mu in eval mode.

    Keeps the latest (mu, log_sigma) so that the KL term and :func:`fxvae.posterior` can read them
    after the forward, without changing the model's outputs.

    >>> z = fxvae.Reparameterize().train()(mu, log_sigma)
    """

    def __init__(self) -> None:
        super().__init__()
        self.latest: DiagonalGaussian | None = None

    def forward(self, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        self.latest = DiagonalGaussian(mu, log_sigma)
        if not self.training:
            return mu
        return mu + torch.exp(log_sigma) * torch.randn_like(mu)


class FunctionalHead(nn.Module):
    """The weight and bias of a head that the graph applies with a functional call (``F.linear``).

    Functional and torch.export graphs hold no layer modules; the heads still get a visible name.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
        if bias is None:
            self.bias = None
        else:
            self.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias)


class KLDivergence(nn.Module):
    """KL(q(z|x) || N(0, I)) of a converted VAE: sum over latent dims, mean over the batch.

    >>> vae, kl = fxvae.convert(model, x)
    >>> loss = F.mse_loss(vae(x), x) + kl()     # the KL of that forward
    >>> kl(mu, log_sigma)                        # or of given tensors
    """

    def __init__(self, source: Reparameterize, reduction: Reduction = "batchmean") -> None:
        super().__init__()
        self.source = source
        self.reduction: Reduction = reduction

    def forward(self, mu: torch.Tensor | None = None, log_sigma: torch.Tensor | None = None) -> torch.Tensor:
        if mu is None and log_sigma is None:
            return latest_posterior(self.source).kl(self.reduction)
        if mu is None or log_sigma is None:
            raise TypeError("kl() takes no arguments or both mu and log_sigma")
        return kl_divergence(mu, log_sigma, reduction=self.reduction)


def latest_posterior(source: Reparameterize) -> DiagonalGaussian:
    if source.latest is None:
        raise FxvaeError("the VAE has not run yet: call vae(*inputs) before asking for its KL or posterior")
    return source.latest
