"""Loss kernels; nothing here depends on the rest of fxvae."""

from __future__ import annotations

from fxvae.ops.kl import kl_divergence

__all__ = ["kl_divergence"]
