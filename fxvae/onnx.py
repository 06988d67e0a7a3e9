"""Export a VAE, its encoder or its decoder to ONNX with a dynamic batch dimension.

onnx and onnxscript are imported only when :func:`export_onnx` runs (``pip install fxvae[onnx]``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import nn

from fxvae.errors import FxvaeError
from fxvae.tracing import as_args, eval_mode


class FlatOutputs(nn.Module):
    """Runs ``module`` and returns its output's tensors as a flat tuple, in :func:`flatten_outputs` order.

    >>> FlatOutputs(vae)(x)  # (recon, z) for an AE returning AEOutput(recon=..., z=...)
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any) -> tuple[torch.Tensor, ...]:
        return flatten_outputs(self.module(*args))


def flatten_outputs(out: Any) -> tuple[torch.Tensor, ...]:
    """The tensors of a nested output, depth first: tuple/list items in order, dict values in insertion
    order, dataclass fields in declaration order; ``None`` and other non-tensors are skipped.

    >>> flatten_outputs({"recon": r, "z": z, "stat": None})
    (r, z)
    """
    if isinstance(out, torch.Tensor):
        return (out,)
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return tuple(t for f in dataclasses.fields(out) for t in flatten_outputs(getattr(out, f.name)))
    if isinstance(out, dict):
        return tuple(t for v in out.values() for t in flatten_outputs(v))
    if isinstance(out, (tuple, list)):
        return tuple(t for v in out for t in flatten_outputs(v))
    return ()


def export_onnx(module: nn.Module, path: str | os.PathLike[str], example_inputs: Any) -> None:
    """Write ``module`` (a VAE, or the encoder or decoder of :func:`fxvae.split`) as an ONNX model.

    The module is exported in eval mode (z = mu; its mode is restored afterwards) with
    ``torch.onnx.export(..., dynamo=True)``; dim 0 of every tensor input is a dynamic batch
    dimension. Inputs are named after the module's arguments (``x``, ``z``, ``label``...); outputs are
    the flattened output structure (:func:`flatten_outputs`: a dataclass or dict returns its tensor
    fields in order), named ``output_0``, ``output_1``...

    >>> fxvae.export_onnx(decoder, "decoder.onnx", torch.randn(2, 16))
    """
    args = as_args(example_inputs)
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if len(tensors) != len(args):
        raise FxvaeError(
            f"export_onnx takes tensor inputs only, got {[type(a).__name__ for a in args]}; "
            "pass example tensors for every argument"
        )
    # A batch of one is specialised by the exporter; two copies keep the batch dimension symbolic.
    if all(a.dim() > 0 and a.shape[0] == 1 for a in tensors):
        args = tuple(torch.cat([a, a]) for a in tensors)
    names = _input_names(module, len(args))
    batch = torch.export.Dim("batch")
    # One spec for the wrapper's *args parameter: a tuple with one entry per input.
    dynamic_shapes = (tuple({0: batch} if a.dim() > 0 else None for a in args),)
    wrapper = FlatOutputs(module)
    with eval_mode(module), torch.no_grad():
        count = len(wrapper(*args))
        try:
            torch.onnx.export(
                wrapper,
                args,
                os.fspath(path),
                dynamo=True,
                input_names=names,
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


def _input_names(module: nn.Module, count: int) -> list[str]:
    if isinstance(module, torch.fx.GraphModule):
        names = [n.name for n in module.graph.find_nodes(op="placeholder")]
    else:
        names = []
    return [names[i] if i < len(names) else f"input_{i}" for i in range(count)]
