"""The user's data as batches of model inputs: a tensor, a Dataset, a DataLoader or any iterable of batches.

Calibration, evaluation and comparison all read data the same way. A batch is a tensor (the data input) or a
tuple or list whose first items are the model's positional inputs: a supervised loader's ``(x, label)`` gives
``x`` to a one-input model, and ``(x, condition)`` to a conditional one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fxvae.capture.tracing import as_args
from fxvae.errors import InputError
from fxvae.modules import eval_mode

BATCH = 256
"""Samples per batch when the data is one tensor or a Dataset and no batch size is given."""


def default_workers() -> int:
    """DataLoader processes for a Dataset when none are asked for: one per CPU core but one (the process that
    runs the model's), at most 4.

    >>> 0 <= fxvae.io.data.default_workers() <= 4
    True
    """
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def batches(data: Any, count: int, *, batch_size: int | None = None) -> Iterator[tuple[Any, ...]]:
    """The first ``count`` positional inputs of each batch of ``data``, in order.

    A tensor is cut along dim 0, in this process. A map-style ``Dataset`` is batched by a DataLoader with
    :func:`default_workers` processes (none where it is one batch: a worker's start would cost more than it
    reads). Both make ``batch_size`` samples (default 256); an iterable of batches (a DataLoader) is taken as it
    comes, with its own workers, and refuses ``batch_size``.

    >>> [args[0].shape[0] for args in fxvae.io.data.batches(torch.zeros(600, 3), 1)]
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

        workers = default_workers() if len(data) > size else 0
        data = DataLoader(data, batch_size=size, shuffle=False, num_workers=workers)
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

    >>> fxvae.io.data.check_batch((torch.zeros(2, 5),), (4,), "a batch")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fxvae.errors.InputError: a batch has shape [2, 5], but the model takes ['batch', 4]...
    """
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != tuple(input_shape):
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(
            f"{what} has shape {got}, but the model takes {['batch', *input_shape]}: pass data of that shape, "
            "batch first"
        )
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise InputError(f"{what} holds NaN or inf values: pass finite data")


class Passes:
    """The user's data as checked batches on ``device``, read again for each pass over it, one batch at a time.

    Construction reads the data once and refuses it before anything else happens: empty data, or a batch whose
    data input does not have ``input_shape`` per sample or is not finite (:func:`check_batch`). Each iteration
    then reads the data again from its source (a tensor cut into batches of 256, a Dataset, a DataLoader, a
    list, any object whose ``__iter__`` starts afresh), so memory holds one batch, not the data. A one-shot
    iterator (a generator: ``iter(data) is data``) cannot be read twice: its batches are held, the only case
    where all of the data is.

    >>> passes = fxvae.io.data.Passes(torch.zeros(600, 3), 1, (3,), torch.device("cpu"))
    >>> passes.samples, [args[0].shape[0] for args in passes], [args[0].shape[0] for args in passes]
    (600, [256, 256, 88], [256, 256, 88])
    """

    def __init__(
        self,
        data: Any,
        count: int,
        input_shape: Sequence[int],
        device: torch.device,
        what: str = "a calibration batch",
    ) -> None:
        self.count, self.input_shape, self.device = count, tuple(input_shape), torch.device(device)
        self._data = data
        self._held: list[tuple[Any, ...]] | None = [] if isinstance(data, Iterator) else None
        self.samples, self.arity = 0, 0
        empty_failure: InputError | None = None
        for args in self._read():
            if self._held is not None:
                self._held.append(args)
            if not self.arity:
                self.arity = len(args)
            rows = len(args[0]) if args and hasattr(args[0], "__len__") else 1
            try:
                check_batch(args, self.input_shape, what)
            except InputError as err:
                # All-empty data is refused as empty, whatever its shape: an empty batch's failure waits for that.
                if rows > 0:
                    raise
                empty_failure = empty_failure or err
            self.samples += rows
        if self.samples == 0:
            raise InputError("the calibration data is empty: pass a batch (or a DataLoader) of the AE's data")
        if empty_failure is not None:
            raise empty_failure

    @classmethod
    def of(cls, data: Any, count: int, input_shape: Sequence[int], device: torch.device) -> Passes:
        """``data`` itself where it is already passes over such batches (checked once), else new passes."""
        if isinstance(data, Passes) and (data.count, data.input_shape, data.device) == (
            count,
            tuple(input_shape),
            torch.device(device),
        ):
            return data
        return cls(data, count, input_shape, device)

    def _read(self) -> Iterator[tuple[Any, ...]]:
        return (to_device(args, self.device) for args in batches(self._data, self.count))

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._held) if self._held is not None else self._read()


@dataclass(frozen=True)
class _Reads:
    """What a layer reads from its input: ``size`` features (the last dimension) or channels (the first after the
    batch, followed by ``spatial`` dimensions)."""

    name: str
    layer: nn.Module
    size: int
    spatial: int | None
    """None for a linear layer (features last); the count of spatial dimensions for a convolution."""

    @classmethod
    def of(cls, name: str, layer: nn.Module) -> _Reads | None:
        if isinstance(layer, nn.Linear) and not isinstance(layer, nn.LazyLinear):
            return cls(name, layer, layer.in_features, None)
        if isinstance(layer, nn.modules.conv._ConvNd) and not isinstance(layer, nn.modules.lazy.LazyModuleMixin):
            return cls(name, layer, layer.in_channels, len(layer.kernel_size))
        return None

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether a per-sample ``shape`` can be this layer's input (a linear layer's, after a flatten too)."""
        if self.spatial is None:
            return bool(shape) and (shape[-1] == self.size or math.prod(shape) == self.size)
        return len(shape) == self.spatial + 1 and shape[0] == self.size

    def takes(self) -> list[int | str]:
        """The input shape this layer takes, batch first: ``['batch', 16]``, ``['batch', 3, 'H', 'W']``."""
        if self.spatial is None:
            return ["batch", self.size]
        return ["batch", self.size, *("D", "H", "W")[3 - self.spatial :]] if self.spatial <= 3 else ["batch", self.size]

    def describe(self) -> str:
        what = "features" if self.spatial is None else "channels"
        return f"its layer {self.name!r} ({type(self.layer).__name__}) reads {self.size} {what}"


def check_model_takes(model: nn.Module, args: tuple[Any, ...], what: str) -> None:
    """Refuse data that ``model`` cannot take, naming the shape given and the shape the model accepts.

    The model runs once on the whole batch ``args`` (a model may be built for one batch size), in eval mode and
    without gradients; its mode and weights are left as they were. Where it fails, the data is at fault when the
    first layer that reads it (a Linear's ``in_features``, a convolution's ``in_channels``) does not accept its
    shape, when a later layer gets another width than it reads (data of another size), or when its dtype is not
    the weights'; that is an :class:`~fxvae.InputError`. Any other failure is the model's: its exception is
    raised as it came. ``what`` names the data in the message (``"--data held.pt"``).

    >>> fxvae.io.data.check_model_takes(nn.Sequential(nn.Linear(16, 4)), (torch.zeros(8, 12),), "held.pt")
    Traceback (most recent call last):
    fxvae.errors.InputError: held.pt has shape [8, 12], but Sequential takes ['batch', 16]: its layer '0' (Linear) reads 16 features; pass data of that shape
    """  # noqa: E501
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        return
    active: list[tuple[_Reads | None, tuple[int, ...] | None]] = []
    first: list[_Reads] = []

    def entered(reads: _Reads | None) -> Any:
        def hook(_: nn.Module, inputs: tuple[Any, ...]) -> None:
            got = inputs[0] if inputs else None
            active.append((reads, tuple(got.shape[1:]) if isinstance(got, torch.Tensor) else None))
            if reads is not None and not first:
                first.append(reads)

        return hook

    def left(*_: Any) -> None:
        active.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(entered(_Reads.of(name, module))))
        handles.append(module.register_forward_hook(left))
    try:
        with eval_mode(model), torch.no_grad():
            model(*args)
        return
    except Exception as err:
        failure = err
    finally:
        for handle in handles:
            handle.remove()
    _refuse_data(model, x, what, first, active, failure)


def _refuse_data(
    model: nn.Module,
    x: torch.Tensor,
    what: str,
    first: list[_Reads],
    active: list[tuple[_Reads | None, tuple[int, ...] | None]],
    failure: Exception,
) -> None:
    """Raise the InputError that explains ``failure`` by the data, or ``failure`` itself."""
    name, shape = type(model).__name__, tuple(x.shape[1:])
    weights = next((p for p in model.parameters() if p.is_floating_point()), None)
    if x.is_floating_point() and weights is not None and x.dtype != weights.dtype:
        raise InputError(
            f"{what} is {x.dtype}, but the weights of {name} are {weights.dtype}: pass {weights.dtype} data"
        ) from failure
    # A forward that fails before any layer ran (a reshape, say): judge the data by the first layer registered.
    reader = first[0] if first else next((r for n, m in model.named_modules() if (r := _Reads.of(n, m))), None)
    if reader is not None and not reader.accepts(shape):
        raise InputError(
            f"{what} has shape {list(x.shape)}, but {name} takes {reader.takes()}: {reader.describe()}; pass data "
            "of that shape"
        ) from failure
    failed, got = active[-1] if active else (None, None)
    if failed is not None and got is not None and not failed.accepts(got):
        raise InputError(
            f"{what} has shape {list(x.shape)}, which the first layer of {name} takes, but {failed.describe()} "
            f"and gets {['batch', *got]} from it: {name} was built for inputs of another size; pass data of the "
            "size it was trained on"
        ) from failure
    raise failure


def to_device(args: tuple[Any, ...], device: torch.device) -> tuple[Any, ...]:
    """The batch's tensors on ``device`` (other inputs as they are)."""
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
