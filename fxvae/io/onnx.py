"""Export a VAE, its encoder or its decoder to ONNX with a dynamic batch dimension.

onnx and onnxscript are imported by torch only when :func:`export_onnx` runs (``pip install fxvae[onnx]``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from fxvae.analysis.outputs import FlatOutputs, tensors
from fxvae.capture.tracing import as_args
from fxvae.errors import FxvaeError
from fxvae.modules import eval_mode, input_names

__all__ = ["FlatOutputs", "export_onnx"]


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs a line per torchvision operator it cannot find and warns about its own use of a
    deprecated pytree API: nothing a user of fxvae can act on. Errors still come through."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")
            yield
    finally:
        registration.setLevel(level)


def export_onnx(module: nn.Module, path: str | os.PathLike[str], example_inputs: Any) -> None:
    """Write ``module`` (a VAE, the encoder or decoder of :func:`fxvae.split`, or a half of
    :func:`fxvae.split_tokens`) as an ONNX model.

    The module is exported in eval mode (z = mu; its mode is restored afterwards) with
    ``torch.onnx.export(..., dynamo=True)``; dim 0 of every tensor input is a dynamic batch
    dimension. Inputs are named after the module's arguments (``x``, ``z``, ``label``...); outputs are
    the flattened output structure (:func:`fxvae.analysis.outputs.tensors`: a dataclass or dict returns its
    tensor fields in order), named ``output_0``, ``output_1``...

    >>> encoder, decoder = fxvae.split(vae)
    >>> fxvae.export_onnx(decoder, tmp / "decoder.onnx", torch.randn(2, 8))
    """
    args = as_args(example_inputs)
    if not all(isinstance(a, torch.Tensor) for a in args):
        raise FxvaeError(
            f"export_onnx takes tensor inputs only, got {[type(a).__name__ for a in args]}; "
            "pass example tensors for every argument"
        )
    # A batch of one is specialised by the exporter; two copies keep the batch dimension symbolic.
    if all(a.dim() > 0 and a.shape[0] == 1 for a in args):
        args = tuple(torch.cat([a, a]) for a in args)
    batch = torch.export.Dim("batch")
    # One spec for the wrapper's *args parameter: a tuple with one entry per input.
    dynamic_shapes = (tuple({0: batch} if a.dim() > 0 else None for a in args),)
    wrapper = FlatOutputs(module)
    with eval_mode(wrapper), torch.no_grad(), _quiet_exporter():
        count = len(tensors(module(*args)))
        try:
            torch.onnx.export(
                wrapper,
                args,
                os.fspath(path),
                dynamo=True,
                input_names=input_names(module, len(args)),
                output_names=[f"output_{i}" for i in range(count)],
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
        except Exception as err:
            raise FxvaeError(
                f"ONNX export of {type(module).__name__} failed: {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}; check that torch.export.export(module, "
                "inputs) works, and that onnxscript is installed (pip install fxvae[onnx])"
            ) from err
