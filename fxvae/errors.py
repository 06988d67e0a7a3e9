"""Every error fxvae raises on purpose: one base class, one subclass per stage; and :func:`first_line`, how a
message quotes an error fxvae caught from elsewhere."""

from __future__ import annotations

import re


class FxvaeError(Exception):
    """Base class of fxvae's errors; the message names the node or module at fault and the fix.

    >>> try:
    ...     fxvae.convert(nn.Linear(4, 4), torch.randn(2, 4))
    ... except fxvae.FxvaeError as err:
    ...     print(type(err).__name__)
    BottleneckError
    """


class InputError(FxvaeError, ValueError):
    """The model or its example inputs cannot be converted as given: no batch dimension, an empty batch,
    NaN or inf in the example, a dtype or device the model does not have, a model without parameters, or
    a model fxvae already converted.

    >>> fxvae.convert(ae, torch.randn(64))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fxvae.errors.InputError: the data input has shape [64]: the example needs a batch dimension first...
    """


class TraceError(FxvaeError):
    """The model's forward does not run on the example inputs, so nothing can capture it.

    >>> fxvae.convert(nn.Linear(4, 2), torch.randn(2, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fxvae.errors.TraceError: the forward of Linear raises on the example inputs ((2, 3) torch.float32 on cpu)...
    """


class BottleneckError(FxvaeError):
    """No usable bottleneck: nothing narrower than the input separates it from the output.

    >>> class Skip(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.down, self.up = nn.Linear(8, 2), nn.Linear(2, 8)
    ...     def forward(self, x):
    ...         return x + self.up(self.down(x))
    >>> fxvae.find_bottleneck(Skip(), torch.randn(2, 8))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fxvae.errors.BottleneckError: no node narrower than the input (8) lies on every path from 'x' to 'add'...
    """


class RewriteError(FxvaeError):
    """The AE -> VAE graph surgery could not be applied to the chosen bottleneck, or a converted VAE
    cannot be cut as asked.

    >>> class Leaky(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.enc, self.dec = nn.Linear(8, 2), nn.Linear(2, 8)
    ...     def forward(self, x):
    ...         return self.dec(self.enc(x)) * x.std(dim=1, keepdim=True)
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # forcing a bypassed node warns
    ...     leaky, _ = fxvae.convert(Leaky(), torch.randn(2, 8), bottleneck="enc")
    >>> fxvae.split(leaky)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fxvae.errors.RewriteError: the decoder node ... which is computed from the data input 'x', not from the latent...
    """


class KLError(FxvaeError, ValueError):
    """Inputs to the KL loss are inconsistent (mismatched shapes, unknown reduction or backend).

    >>> fxvae.kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))
    Traceback (most recent call last):
    fxvae.errors.KLError: mu has shape (2, 3) but log_sigma has (2, 4); pass equal shapes
    """


class CheckpointError(FxvaeError):
    """A checkpoint or saved VAE cannot be read or does not match the model.

    >>> fxvae.load_ae_state_dict(vae, nn.Linear(2, 2).state_dict())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fxvae.errors.CheckpointError: the state dict vs ...: missing keys ['0.weight', ...
    """


class CallbackError(FxvaeError):
    """A function passed to :func:`fxvae.compare` as ``callbacks=[...]`` raised on an epoch's record: the message
    names it and the epoch, and the error it raised is the ``__cause__``. The comparison stops there; what it
    wrote to ``out`` (every finished epoch, the checkpoints) stays, and ``resume=True`` continues it.

    >>> def log(record):
    ...     raise ConnectionError("the tracking server is down")
    >>> fxvae.compare(ae, torch.rand(100, 64), epochs=1, k=1, final_k=2, callbacks=[log], progress=False)
    Traceback (most recent call last):
    fxvae.errors.CallbackError: callbacks[0] (log at ...) raised ConnectionError: the tracking server is down ...
    """


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape codes (torch puts bold text in some of its messages).

    >>> fxvae.errors.strip_ansi("\\x1b[1mbold\\x1b[0m text")
    'bold text'
    """
    return _ANSI.sub("", text)


def first_line(err: BaseException) -> str:
    """The first non-blank line of ``err``'s message, for quoting inside a one-line fxvae message: without
    terminal escape codes, and without torch.load's advice to rerun with ``weights_only=False`` (that would
    load arbitrary code, so fxvae never passes it on).

    >>> err = RuntimeError("\\n  \\x1b[1mWeights only load failed.\\x1b[0m Re-running `torch.load` ...\\nmore")
    >>> fxvae.errors.first_line(err)
    'Weights only load failed.'
    """
    text = strip_ansi(str(err))
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first.split(" Re-running")[0].strip()
