"""DATA: what the commands read as data (a data file, a folder of images, or a factory of a tensor, a Dataset or a
DataLoader), the example batch of ``--input-shape``, and the check that a model takes them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fxvae
from fxvae.cli.errors import CliError, ExitCode, data_errors, one_line
from fxvae.cli.models import load_factory
from fxvae.cli.options import parse_ints
from fxvae.io.data import batches, check_model_takes
from fxvae.io.datafiles import open_data
from fxvae.modules import input_count


def example_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """A seeded random batch of ``shape`` that ``model`` is checked to accept (:func:`check_data`).

    >>> example_input(ae, (2, 64)).shape
    torch.Size([2, 64])
    """
    text = ",".join(map(str, shape))
    if len(shape) < 2:
        raise CliError(
            ExitCode.USAGE,
            f"--input-shape {text} has no batch dimension: put the batch first, e.g. --input-shape 1,{text}",
        )
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    check_data(model, (x,), f"--input-shape {text}")
    return x


def check_data(model: nn.Module, example: tuple[Any, ...], what: str) -> None:
    """Exit with DATA where ``model`` cannot take the batch ``example`` (fxvae.io.data.check_model_takes names the
    shape it takes), and with MODEL where its forward fails for another reason.

    >>> check_data(ae, (torch.rand(2, 12),), "--data wide.pt")
    Traceback (most recent call last):
    fxvae.cli.errors.CliError: --data wide.pt has shape [2, 12], but Sequential takes ['batch', 64]: ...
    """
    try:
        check_model_takes(model, example, what)
    except fxvae.InputError as err:
        raise CliError(ExitCode.DATA, str(err)) from err
    except Exception as err:
        shape = list(example[0].shape) if isinstance(example[0], torch.Tensor) else type(example[0]).__name__
        raise CliError(
            ExitCode.MODEL,
            f"{type(model).__name__} fails on {what} (shape {shape}): {type(err).__name__}: {one_line(str(err))}",
        ) from err


def read_data_source(spec: str, resize: str | None) -> Any:
    """``--data``: a data file or folder of images (:func:`fxvae.io.datafiles.open_data`: a folder is decoded an
    image at a time, a ``.npy`` file memory-mapped), or ``package.module:factory`` returning a tensor, a Dataset
    or a DataLoader.

    >>> torch.save(torch.rand(20, 64), tmp / "held.pt")
    >>> read_data_source(str(tmp / "held.pt"), resize=None).shape
    torch.Size([20, 64])
    """
    size = parse_ints(resize, "--resize") if resize is not None else None
    if size is not None and len(size) != 2:
        raise CliError(ExitCode.USAGE, f"--resize {resize!r} must be HEIGHT,WIDTH, e.g. 28,28")
    path, _, _ = spec.rpartition(":")
    if Path(spec).exists() or (path and Path(path).is_file() and not path.endswith(".py")) or ":" not in spec:
        try:
            return open_data(spec, resize=size)
        except fxvae.InputError as err:
            raise CliError(ExitCode.DATA, f"--data: {err}") from err
    factory = load_factory(spec)
    try:
        data = factory()
    except Exception as err:
        raise CliError(ExitCode.MODEL, f"data factory {spec!r} raised {type(err).__name__}: {err}") from err
    if not isinstance(data, (torch.Tensor, Iterable, torch.utils.data.Dataset)):
        raise CliError(
            ExitCode.DATA, f"data factory {spec!r} returned {type(data).__name__}, not a tensor, Dataset or DataLoader"
        )
    return data


def first_batch(data: Any, count: int, what: str = "--data") -> tuple[Any, ...]:
    """The inputs of the data's first batch: the example a model is rebuilt with.

    >>> [arg.shape for arg in first_batch(torch.rand(300, 64), 1)]
    [torch.Size([256, 64])]
    """
    with data_errors():
        for args in batches(data, count):
            return args
    raise CliError(ExitCode.DATA, f"{what} holds no samples")


def check_source(model: nn.Module, source: Any, what: str) -> None:
    """Exit with DATA where ``model`` cannot take the first batch of ``source`` (``what``: ``"--data held.pt"``).

    >>> check_source(ae, torch.rand(300, 64), "--data held.pt")
    """
    check_data(model, first_batch(source, input_count(model), what), what)
