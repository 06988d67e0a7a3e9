"""The user's data as batches of model inputs: a tensor, a Dataset, a DataLoader or any iterable of batches.

Calibration, evaluation and comparison all read data the same way. A batch is a tensor (the data input) or a
tuple or list whose first items are the model's positional inputs: a supervised loader's ``(x, label)`` gives
``x`` to a one-input model, and ``(x, condition)`` to a conditional one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from fxvae.errors import InputError
from fxvae.tracing import as_args

BATCH = 256
"""Samples per batch when the data is one tensor or a Dataset and no batch size is given."""


def batches(data: Any, count: int, *, batch_size: int | None = None) -> Iterator[tuple[Any, ...]]:
    """The first ``count`` positional inputs of each batch of ``data``, in order.

    A tensor is cut along dim 0 and a map-style ``Dataset`` is batched, both into ``batch_size`` samples
    (default 256); an iterable of batches (a DataLoader) is taken as it comes, and refuses ``batch_size``.

    >>> [args[0].shape[0] for args in fxvae.data.batches(torch.zeros(600, 3), 1)]
    [256, 256, 88]
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"batch_size={batch_size!r} must be a positive integer")
    size = batch_size or BATCH
    if isinstance(data, torch.Tensor):
        for start in range(0, len(data), size):
            yield (data[start : start + size],)
        return
    if _is_dataset(data):
        from torch.utils.data import DataLoader

        data = DataLoader(data, batch_size=size, shuffle=False)
    elif batch_size is not None:
        raise InputError(
            f"batch_size={batch_size} applies to a tensor or a Dataset; the {type(data).__name__} given "
            "makes its own batches: leave batch_size out, or set the loader's batch size"
        )
    if not isinstance(data, Iterable):
        raise InputError(
            f"data must be a tensor, a Dataset or an iterable of batches (a DataLoader), got {type(data).__name__}"
        )
    for batch in data:
        yield as_args(batch)[:count] if isinstance(batch, (tuple, list)) else (batch,)


def _is_dataset(data: Any) -> bool:
    """A map-style dataset yields samples, not batches: it has ``__getitem__`` and ``__len__`` and is no loader."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, (DataLoader, tuple, list, dict, str)):
        return False
    return isinstance(data, Dataset) and hasattr(data, "__len__")


def check_batch(args: tuple[Any, ...], input_shape: tuple[int, ...], what: str) -> None:
    """Refuse a batch whose data input does not have the model's per-sample shape, or holds NaN or inf.

    ``what`` names the data in the message (``"a calibration batch"``, ``"evaluation batch 3"``).

    >>> fxvae.data.check_batch((torch.zeros(2, 5),), (4,), "a batch")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fxvae.errors.InputError: a batch has shape [2, 5], but the model takes ['batch', 4]...
    """
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != tuple(input_shape):
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(
            f"{what} has shape {got}, but the model takes {['batch', *input_shape]}: pass data shaped like the "
            "example inputs, batch first"
        )
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise InputError(f"{what} holds NaN or inf values: pass finite data")


def to_device(args: tuple[Any, ...], device: torch.device) -> tuple[Any, ...]:
    """The batch's tensors on ``device`` (other inputs as they are)."""
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
