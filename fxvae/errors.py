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
    """Neither torch.fx.symbolic_trace nor torch.export could capture the model.

    >>> fxvae.convert(model_branching_on_values, x)  # raises, naming both tracers and the line
    """


class BottleneckError(FxvaeError):
    """No usable bottleneck: nothing narrower than the input separates it from the output.

    >>> fxvae.find_bottleneck(unet, x)  # raises, naming the narrowest node and the skip around it
    """


class RewriteError(FxvaeError):
    """The AE -> VAE graph surgery could not be applied to the chosen bottleneck.

    >>> fxvae.convert(model, x, bottleneck="tanh")  # raises when no Linear/Conv feeds 'tanh'
    """


class KLError(FxvaeError, ValueError):
    """Inputs to the KL loss are inconsistent (mismatched shapes, unknown reduction or backend).

    >>> fxvae.kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))  # raises: shapes differ
    """


class CheckpointError(FxvaeError):
    """A checkpoint or saved VAE cannot be read or does not match the model.

    >>> fxvae.load_ae_state_dict(vae, other_model.state_dict())  # raises, naming the keys
    """
