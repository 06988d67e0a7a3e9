"""How much a decoder's output moves with each latent dimension, and the posterior width that follows.

``log_sigma_init="auto"`` (:func:`fxvae.calibrate`) and :func:`fxvae.evaluate`'s proposal start each latent
dimension at the variance a Gaussian posterior has for the linearised decoder: sigma_j^2 = 1 / (1 + F_j),
F_j the decoder's Fisher-weighted sensitivity to z_j over the data (see :func:`auto_log_sigma`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from fxvae.analysis.outputs import reconstruction
from fxvae.measure import likelihoods
from fxvae.measure.likelihoods import LikelihoodName

_PROBES = 16
_SENSITIVITY_SAMPLES = 512


def auto_log_sigma(
    decoder: nn.Module,
    codes: list[torch.Tensor],
    inputs: list[tuple[Any, ...]],
    likelihood: LikelihoodName | likelihoods.Likelihood,
    prior_precision: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per latent element: 1/2 log(1 / (1 + F_j)), F_j = E[sum_i w_i (d recon_i / d z_j)^2] over the data.

    ``inputs`` are the data and the conditions the decoder takes, ``codes`` the latents of the same batches
    (:func:`streamed_log_sigma` reads them as pairs, one batch at a time).

    That is the variance of the Gaussian posterior of the linearised decoder under the N(0, 1) prior; with
    ``prior_precision`` (1 / the prior's variance per latent element, broadcasting against one code) it is
    1/2 log(1 / (F_j + precision_j)), the width :func:`fxvae.evaluate` gives an autoencoder's proposal under a
    fitted density.
    w is the likelihood's Fisher weight on the reconstruction (:meth:`fxvae.likelihoods.Likelihood.fisher`):
    1 / (the AE's mean squared error) for a Gaussian, whose sigma is fitted to the AE's own error over the
    data; 1 / b^2 for a Laplace; p (1 - p) for Bernoulli logits, 1 / (p (1 - p)) for probabilities. The
    diagonal of J^T W J is estimated with probes u ~ N(0, W) in output space, E[(J^T u)_j^2] = (J^T W J)_jj,
    on up to 512 samples.

    >>> decoder = nn.Linear(2, 3)
    >>> auto_log_sigma(decoder, [torch.zeros(4, 2)], [(torch.zeros(4, 3),)], "laplace").shape
    torch.Size([2])
    """
    return streamed_log_sigma(decoder, list(zip(codes, inputs, strict=True)), likelihood, prior_precision)


def streamed_log_sigma(
    decoder: nn.Module,
    pairs: Iterable[tuple[torch.Tensor, tuple[Any, ...]]],
    likelihood: LikelihoodName | likelihoods.Likelihood,
    prior_precision: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`auto_log_sigma` over ``pairs`` of (a batch's codes, its inputs), read once per pass.

    ``pairs`` must start afresh on each ``iter`` (a list, or an object whose ``__iter__`` makes a new generator):
    a likelihood with a fitted scale (``needs_fit``) reads every pair in one pass, then the sensitivity reads
    pairs until 512 samples in another, each holding one pair at a time.

    >>> decoder, code, x = nn.Linear(2, 3), torch.zeros(4, 2), torch.zeros(4, 3)
    >>> streamed = streamed_log_sigma(decoder, [(code, (x,))], "laplace")
    >>> torch.equal(streamed, auto_log_sigma(decoder, [code], [(x,)], "laplace"))
    True
    """
    lik = likelihoods.get(likelihood)
    if lik.needs_fit:
        with torch.no_grad():
            decoded = ((reconstruction(decoder(mu, *args[1:]), args[0]), args[0]) for mu, args in pairs)
            lik = likelihoods.fit(lik, decoded)
    generator = torch.Generator().manual_seed(0)
    total, seen, dtype = 0.0, 0, None
    for mu, args in pairs:
        if seen >= _SENSITIVITY_SAMPLES:
            break
        dtype = dtype or mu.dtype
        z = mu.detach().clone().requires_grad_(True)
        recon = reconstruction(decoder(z, *args[1:]), args[0])
        lik.check_output(recon.detach())
        weight = lik.fisher(recon.detach())
        for _ in range(_PROBES):
            probe = torch.randn(recon.shape, generator=generator).to(recon) * weight.sqrt()
            (grad,) = torch.autograd.grad(recon, z, probe, retain_graph=True)
            total = total + grad.double().pow(2).sum(0) / _PROBES
        seen += len(z)
    fisher = total / seen
    if prior_precision is None:
        return (-0.5 * torch.log1p(fisher)).to(dtype)
    return (-0.5 * torch.log(fisher + prior_precision.to(fisher))).to(dtype)


def head_bias(target: torch.Tensor, bias_shape: tuple[int, ...], axis: int) -> torch.Tensor:
    """Per-element targets fitted to a head's bias: per element, averaged per channel, or one value.

    >>> head_bias(torch.tensor([[1.0, 3.0], [5.0, 7.0]]), (2,), 1)  # channels first: one value per channel
    tensor([2., 6.])
    """
    per_sample = target.shape
    if target.numel() == torch.Size(bias_shape).numel():
        return target.reshape(bias_shape)
    channel = axis - 1 if axis > 0 else len(per_sample) + axis
    if 0 <= channel < len(per_sample) and per_sample[channel] == torch.Size(bias_shape).numel():
        others = [d for d in range(len(per_sample)) if d != channel]
        return target.mean(others).reshape(bias_shape)
    return target.mean().expand(bias_shape).clone()
