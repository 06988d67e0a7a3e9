"""The map that standardises a latent over data: mu = W (a - m), and its inverse for the decoder.

:func:`fit_affine` measures it (a mean m and a spread s per element or per channel, or a whitening matrix W);
:class:`LatentAffine` runs it. :func:`fxvae.calibrate` installs it in a VAE.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from fxvae.errors import InputError

_FLOOR = 1e-6
"""Spreads below this fraction of the typical one (dead units) are floored, so the map stays finite."""

Mode = Literal["element", "channel", "whiten"]


class LatentAffine(nn.Module):
    """mu = W (a - m), and back a = m + W^-1 mu (``inverse=True``); W is diagonal or a matrix along ``axis``.

    ``mean`` and ``scale`` broadcast against one sample's latent (``scale`` is 1/W's diagonal); a full map
    keeps ``matrix`` and its inverse.

    >>> affine = fxvae.surgery.standardize.LatentAffine(torch.tensor([1.0, 2.0]), scale=torch.tensor([2.0, 4.0]))
    >>> affine(torch.tensor([[3.0, 6.0]])), affine(torch.tensor([[1.0, 1.0]]), inverse=True)
    (tensor([[1., 1.]]), tensor([[3., 6.]]))
    """

    def __init__(
        self,
        mean: torch.Tensor,
        *,
        scale: torch.Tensor | None = None,
        matrix: torch.Tensor | None = None,
        axis: int = -1,
    ) -> None:
        super().__init__()
        self.axis = axis
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.register_buffer("matrix", matrix)
        inverse = None if matrix is None else torch.linalg.inv(matrix.double()).to(matrix.dtype)
        self.register_buffer("inverse_matrix", inverse)

    def forward(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        if self.matrix is None:
            return torch.addcmul(self.mean, x, self.scale) if inverse else (x - self.mean) / self.scale
        if inverse:
            return self._along_axis(x, self.inverse_matrix) + self.mean
        return self._along_axis(x - self.mean, self.matrix)

    def _along_axis(self, x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        return (x.movedim(self.axis, -1) @ matrix.T).movedim(-1, self.axis)

    def undone(self) -> LatentAffine:
        """The map that undoes this one, in the same form: a = W^-1 (mu - (-W m))."""
        if self.matrix is None:
            return LatentAffine(-self.mean / self.scale, scale=1.0 / self.scale, axis=self.axis)
        shift = self._along_axis(self.mean.unsqueeze(0), self.matrix).squeeze(0)
        return LatentAffine(-shift, matrix=self.inverse_matrix, axis=self.axis)


def empty_affine(mode: Mode, latent_shape: tuple[int, ...], axis: int, like: torch.Tensor) -> LatentAffine:
    """An identity map of the right shapes, for :func:`fxvae.load` to fill from a file."""
    shape = _stat_shape(mode, latent_shape, axis)
    mean = torch.zeros(shape, dtype=like.dtype, device=like.device)
    if mode != "whiten":
        return LatentAffine(mean, scale=torch.ones_like(mean), axis=axis)
    eye = torch.eye(mean.numel(), dtype=like.dtype, device=like.device)
    return LatentAffine(mean, matrix=eye, axis=axis)


def fit_affine(
    latents: Iterable[torch.Tensor],
    latent_shape: tuple[int, ...],
    mode: Mode,
    axis: int,
    dtype: torch.dtype | None,
) -> tuple[LatentAffine, int]:
    """The map that standardises ``latents`` (batches of AE codes), and the number of samples it saw.

    One streaming pass accumulates float64 sums of the features and of their products (their squares
    for a diagonal map): per latent element (``element``), or per channel with positions as samples.
    ``latents`` may be a generator: one batch is held at a time. The map's constants are ``dtype``, or the
    latents' own where it is None.

    >>> affine, count = fit_affine(iter([torch.tensor([[0.0], [2.0]])]), (1,), "element", -1, None)
    >>> affine.mean.tolist(), affine.scale.tolist(), count
    ([1.0], [1.0], 2)
    """
    count, n, total, products = 0, 0, 0.0, 0.0
    for latent in latents:
        dtype = dtype or latent.dtype
        values = _features(latent.detach().double(), mode, axis)
        if not torch.isfinite(values).all():
            raise InputError("the autoencoder's latent is NaN or inf on the calibration data: pass finite data")
        total = total + values.sum(0)
        products = products + (values.T @ values if mode == "whiten" else (values * values).sum(0))
        count, n = count + len(latent), n + len(values)
    if count < 2:
        raise InputError(f"calibration needs at least 2 samples, got {count}: pass more data")
    mean = total / n
    shape = _stat_shape(mode, latent_shape, axis)
    if mode != "whiten":
        variance = (products / n - mean * mean).clamp_min(0.0)
        scale = variance.sqrt().clamp_min(_FLOOR * variance.mean().sqrt() + 1e-30)
        return LatentAffine(mean.reshape(shape).to(dtype), scale=scale.reshape(shape).to(dtype), axis=axis), count
    covariance = products / n - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    floor = (_FLOOR * eigenvalues.clamp_min(0.0).mean().sqrt() + 1e-30) ** 2
    # ZCA: the symmetric root keeps each whitened dimension as close as possible to its original.
    matrix = eigenvectors @ torch.diag(eigenvalues.clamp_min(floor).rsqrt()) @ eigenvectors.T
    return LatentAffine(mean.reshape(shape).to(dtype), matrix=matrix.to(dtype), axis=axis), count


def _features(latent: torch.Tensor, mode: Mode, axis: int) -> torch.Tensor:
    """(rows, features): one row per sample with every element a feature, or per sample and position."""
    if mode == "element":
        return latent.flatten(1)
    return latent.movedim(axis, -1).reshape(-1, latent.shape[axis])


def _stat_shape(mode: Mode, latent_shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """The shape of the constants, broadcasting against one sample: the latent's, or its channel axis."""
    if mode == "element":
        return latent_shape
    channel = axis - 1 if axis > 0 else len(latent_shape) + axis
    return tuple(n if d == channel else 1 for d, n in enumerate(latent_shape))
