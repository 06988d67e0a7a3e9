"""Loss kernels; nothing here depends on the rest of fxvae but :mod:`fxvae.errors` (for :class:`~fxvae.KLError`)."""

from __future__ import annotations

from fxvae.ops.kl import kl_divergence

__all__ = ["kl_divergence"]
