"""Every error fxvae raises on purpose: one base class, one subclass per stage."""

from __future__ import annotations


class FxvaeError(Exception):
    """Base class of fxvae's errors; the message names the node or module at fault and the fix.

    >>> try:
    ...     fxvae.convert(model, x)
    ... except fxvae.FxvaeError as err:
    ...     print(err)
    """


class TraceError(FxvaeError):
    """Neither torch.fx.symbolic_trace nor torch.export could capture the model."""


class BottleneckError(FxvaeError):
    """No usable bottleneck: nothing narrower than the input separates it from the output."""


class RewriteError(FxvaeError):
    """The AE -> VAE graph surgery could not be applied to the chosen bottleneck."""


class KLError(FxvaeError, ValueError):
    """Inputs to the KL loss are inconsistent (mismatched shapes, unknown reduction or backend)."""


class CheckpointError(FxvaeError):
    """A checkpoint or saved VAE cannot be read or does not match the model."""
