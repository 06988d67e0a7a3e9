"""Tokens: a discrete model's integer codes, and the two halves of the model that make and read them.

```
to_codes:    *inputs ------------[encoder]--> latent --[quantizer.codes]--> codes
from_codes:  codes, *conditions --[quantizer.lookup]--> z_q --[decoder]--> output
```
Codes are int64 and have the latent's shape without its feature dimension (:mod:`fxvae.latents.quantize`): ``(B,)``
for a flat latent, ``(B, H, W)`` for a channels-first conv latent ``(B, C, H, W)``, ``(B, T)`` for a
features-last token latent ``(B, T, C)``; ``fxvae.conversion(model).quantizer.code_shape`` is the per-sample
part. The encoder and decoder are those of :func:`fxvae.split`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn

from fxvae.capture.tracing import as_args
from fxvae.errors import InputError
from fxvae.latents.quantize import Quantizer, quantizer_of
from fxvae.modules import eval_mode, owned_copy
from fxvae.recipe import conversion, unwrap
from fxvae.surgery.split import split

CODES = "codes"
"""The name of the codes input of ``from_codes`` (and of its ONNX input)."""


class _QuantizerMethod(nn.Module):
    """``quantizer.codes`` or ``quantizer.lookup`` as a module that a graph can call."""

    def __init__(self, quantizer: Quantizer, method: Literal["codes", "lookup"]) -> None:
        super().__init__()
        self.quantizer, self.method = quantizer, method

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return getattr(self.quantizer, self.method)(value)


def split_tokens(model: nn.Module) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Cut a discrete model (``convert(..., latent="vq")`` or ``"fsq"``) at its integer codes.

    ``to_codes(*inputs) -> codes`` takes the model's inputs; ``from_codes(codes, *conditions)`` returns the
    model's output structure, ``conditions`` being the inputs its decoder reads (a conditional AE's label),
    under their own names. ``from_codes(to_codes(x))`` is the model's eval-mode output. Both are
    GraphModules that share the model's tensors and have their own train/eval flags, and
    :func:`fxvae.export_onnx` exports them (the models of the graph tiers: not of the hooks tier).

    >>> vq, _ = fxvae.convert(ae, x, latent=fxvae.VQ(codebook_size=16), calibration=torch.randn(256, 64))
    >>> to_codes, from_codes = fxvae.split_tokens(vq)
    >>> codes = to_codes(x)
    >>> codes.shape, codes.dtype, torch.equal(from_codes(codes), vq.eval()(x))
    (torch.Size([16]), torch.int64, True)
    """
    quantizer = owned_copy(quantizer_of(model, "fxvae.split_tokens"), share_tensors=True)
    inner = unwrap(model)
    encoder, decoder = split(inner)
    inputs = [str(n.target) for n in inner.graph.find_nodes(op="placeholder")]
    if isinstance(decoder, fx.GraphModule):
        conditions = [str(n.target) for n in decoder.graph.find_nodes(op="placeholder")[1:]]
    else:
        conditions = inputs[1:]
    name = type(inner).__name__

    graph = fx.Graph()
    latent = graph.call_module("encoder", tuple(graph.placeholder(n) for n in inputs))
    graph.output(graph.call_module(CODES, (latent,)))
    to_codes = fx.GraphModule(
        {"encoder": encoder, CODES: _QuantizerMethod(quantizer, "codes")}, graph, f"{name}ToCodes"
    )

    graph = fx.Graph()
    codes = graph.placeholder(CODES, type_expr=torch.Tensor)
    read_conditions = [graph.placeholder(n) for n in conditions]
    z = graph.call_module("lookup", (codes,))
    graph.output(graph.call_module("decoder", (z, *read_conditions)))
    lookup = _QuantizerMethod(quantizer, "lookup")
    from_codes = fx.GraphModule({"decoder": decoder, "lookup": lookup}, graph, f"{name}FromCodes")
    for half in (to_codes, from_codes):
        half.train(inner.training)
    return to_codes, from_codes


def tokenize(model: nn.Module, inputs: Any) -> torch.Tensor:
    """The integer codes of ``inputs`` (a tensor, or a tuple of the model's positional inputs), computed in
    eval mode without gradients; the model's own mode is left as it was. See :mod:`fxvae.latents.tokens` for
    their shape. For many batches, :func:`split_tokens` once and call ``to_codes``.

    >>> fsq, _ = fxvae.convert(ae, x, latent=fxvae.FSQ(levels=(8, 5, 5, 5)), calibration=torch.randn(256, 64))
    >>> codes = fxvae.tokenize(fsq, x)
    >>> codes.shape, bool(codes.max() < 8 * 5 * 5 * 5)
    (torch.Size([16]), True)
    """
    to_codes, _ = split_tokens(model)
    with eval_mode(to_codes), torch.no_grad():
        return to_codes(*as_args(inputs))


def detokenize(model: nn.Module, codes: torch.Tensor, *conditions: Any) -> Any:
    """The model's output decoded from ``codes`` (and the ``conditions`` its decoder reads), in eval mode
    without gradients: ``detokenize(model, tokenize(model, x))`` is the eval-mode ``model(x)``. Codes of
    another shape, dtype or range are refused.

    >>> fsq, _ = fxvae.convert(ae, x, latent=fxvae.FSQ(levels=(8, 5, 5, 5)), calibration=torch.randn(256, 64))
    >>> torch.equal(fxvae.detokenize(fsq, fxvae.tokenize(fsq, x)), fsq.eval()(x))
    True
    """
    _, from_codes = split_tokens(model)
    info = conversion(model).quantizer
    if codes.is_floating_point() or codes.dim() != len(info.code_shape) + 1 or codes.shape[1:] != info.code_shape:
        raise InputError(
            f"the codes have shape {list(codes.shape)} and dtype {codes.dtype}; {type(unwrap(model)).__name__} "
            f"decodes integer codes of shape {['batch', *info.code_shape]}: pass what fxvae.tokenize returns"
        )
    if codes.numel() and (codes.min() < 0 or codes.max() >= info.codebook_size):
        raise InputError(
            f"the codes range over [{codes.min().item()}, {codes.max().item()}], and there are "
            f"{info.codebook_size} codes, 0 to {info.codebook_size - 1}: pass what fxvae.tokenize returns"
        )
    with eval_mode(from_codes), torch.no_grad():
        return from_codes(codes, *conditions)
