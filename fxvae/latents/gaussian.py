"""The modules the AE -> VAE rewrite inserts, and the posterior they expose."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fxvae.errors import FxvaeError
from fxvae.ops import kl_divergence
from fxvae.ops.kl import Reduction
from fxvae.recipe import conversion, inserted


@dataclass(frozen=True)
class DiagonalGaussian:
    """q(z | x) = N(mu, diag(exp(log_sigma))^2), as produced by a VAE's latest forward.

    >>> post = fxvae.DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    >>> post.sample(torch.Generator().manual_seed(0)).shape, post.kl()
    (torch.Size([2, 3]), tensor(0.))
    """

    mu: torch.Tensor
    log_sigma: torch.Tensor

    @property
    def sigma(self) -> torch.Tensor:
        return torch.exp(self.log_sigma)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw mu + sigma * eps (differentiable in mu and log_sigma)."""
        eps = torch.randn(self.mu.shape, generator=generator, dtype=self.mu.dtype, device=self.mu.device)
        return torch.addcmul(self.mu, self.sigma, eps)

    def mode(self) -> torch.Tensor:
        return self.mu

    def kl(self, reduction: Reduction = "batchmean") -> torch.Tensor:
        """KL(q || N(0, I)), summed over latent dimensions and averaged over the batch by default."""
        return kl_divergence(self.mu, self.log_sigma, reduction=reduction)


class Reparameterize(nn.Module):
    """z = mu + exp(log_sigma) * eps in training mode, z = mu in eval mode.

    ``log_sigma`` computes log sigma from the arguments after ``mu`` (in a converted VAE: the log-sigma
    head applied to the features it reads); without it, the second argument is log sigma itself. It is
    called only in training mode or when the posterior is asked for, so an eval forward costs exactly
    what the AE costs. The module keeps the latest posterior for the KL term and :func:`fxvae.posterior`.

    >>> mu, log_sigma = torch.zeros(4, 2), torch.full((4, 2), -1.0)
    >>> rep = fxvae.Reparameterize().train()
    >>> rep(mu, log_sigma).shape, rep.posterior().log_sigma[0, 0].item()
    (torch.Size([4, 2]), -1.0)
    """

    def __init__(self, log_sigma: Callable[..., torch.Tensor] | None = None) -> None:
        super().__init__()
        # A plain reference: the head's parameters belong to the VAE, once, under their own names.
        object.__setattr__(self, "log_sigma_fn", log_sigma)
        self.latest: DiagonalGaussian | tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None = None

    def __getstate__(self) -> dict[str, object]:
        # Copies and pickles leave the latest forward's tensors behind: they may be non-leaf tensors
        # (copy.deepcopy refuses those) and belong to that forward, not to the module.
        return {**super().__getstate__(), "latest": None}

    def log_sigma(self, *features: torch.Tensor) -> torch.Tensor:
        """log sigma for the given features (the log-sigma head's inputs)."""
        return features[0] if self.log_sigma_fn is None else self.log_sigma_fn(*features)

    def forward(self, mu: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        # An export traces the forward with placeholder tensors: those are no posterior to keep. The
        # instance dict skips nn.Module.__setattr__'s checks, a few microseconds on every forward.
        keep = not torch.compiler.is_exporting()
        if not self.training:
            if keep:
                self.__dict__["latest"] = (mu, features)
            return mu
        log_sigma = self.log_sigma(*features)
        if keep:
            self.__dict__["latest"] = DiagonalGaussian(mu, log_sigma)
        # One fused multiply-add on top of the noise and exp.
        return torch.addcmul(mu, torch.exp(log_sigma), torch.randn_like(mu))

    def posterior(self) -> DiagonalGaussian:
        """The latest forward's q(z | x); after an eval forward, log sigma is computed now."""
        if self.latest is None:
            raise FxvaeError("the VAE has not run yet: call vae(*inputs) before asking for its KL or posterior")
        if isinstance(self.latest, tuple):
            mu, features = self.latest
            self.latest = DiagonalGaussian(mu, self.log_sigma(*features))
        return self.latest


class FunctionalHead(nn.Module):
    """Holds the parameters of a layer that the graph applies with a functional call (``F.linear``).

    Functional and torch.export graphs hold no layer modules; the mu head still gets a visible name
    and the parameters keep their paths below it (``weight``, or ``weight_v``/``weight_g`` of weight norm).

    >>> head = fxvae.latents.gaussian.FunctionalHead()
    >>> head.weight = nn.Parameter(torch.zeros(3, 2))
    >>> [name for name, _ in head.named_parameters()]
    ['weight']
    """


class KLDivergence(nn.Module):
    """KL(q(z|x) || N(0, I)) of a converted VAE: sum over latent dims, mean over the batch.

    It reads the VAE's latest forward; it does not own the VAE's modules, so ``kl.eval()`` or
    ``kl.to(...)`` leave the VAE as it is.

    >>> vae, kl = fxvae.convert(ae, x)
    >>> loss = F.mse_loss(vae.train()(x), x) + kl()     # the KL of that forward
    >>> kl(torch.zeros(2, 8), torch.zeros(2, 8))        # or of given tensors
    tensor(0.)
    """

    def __init__(self, source: Reparameterize, reduction: Reduction = "batchmean") -> None:
        super().__init__()
        object.__setattr__(self, "source", source)
        self.reduction: Reduction = reduction

    def forward(self, mu: torch.Tensor | None = None, log_sigma: torch.Tensor | None = None) -> torch.Tensor:
        if mu is None and log_sigma is None:
            return self.source.posterior().kl(self.reduction)
        if mu is None or log_sigma is None:
            raise TypeError("kl() takes no arguments or both mu and log_sigma")
        return kl_divergence(mu, log_sigma, reduction=self.reduction)


def reparameterize_of(vae: nn.Module, what: str = "fxvae.posterior") -> Reparameterize:
    """The reparameterisation of a Gaussian VAE; ``what`` names the call that needs it, for another latent."""
    recipe = conversion(vae)
    if recipe.reparameterize is None:
        if recipe.quantizer is not None:
            raise FxvaeError(
                f"{what} needs a Gaussian latent, and {type(vae).__name__} has a discrete one (latent="
                f"{recipe.quantizer.family!r}): fxvae.quantized(model) gives the latest forward's codes and codebook "
                "use, fxvae.tokenize(model, x) the codes of inputs, fxvae.detokenize(model, codes) their decoding"
            )
        raise FxvaeError(
            f"{what} needs a Gaussian latent, and {type(vae).__name__} has latent={recipe.options.latent.family!r}: "
            "convert with latent=fxvae.Gaussian(...) for a posterior"
        )
    return inserted(vae, recipe.reparameterize, Reparameterize)


def posterior(vae: nn.Module) -> DiagonalGaussian:
    """q(z | x) of the VAE's latest forward: ``.mu``, ``.log_sigma``, ``.sample()``, ``.mode()``, ``.kl()``.

    After an eval forward the log-sigma head runs now, on what that forward kept.

    >>> _ = vae.eval()(x)
    >>> post = fxvae.posterior(vae)
    >>> post.mu.shape, post.log_sigma.shape
    (torch.Size([16, 8]), torch.Size([16, 8]))
    """
    return reparameterize_of(vae).posterior()
