"""Cut a converted VAE at its latent into an encoder and a decoder.

```
vae:      x --[encoder]--> (mu, log_sigma) --[reparameterize]--> z --[decoder]--> output
encoder:  x --> (mu, log_sigma)
decoder:  z, *conditions --> output (the AE's own structure)
```
The VAE's capture tier makes the cut (:meth:`fxvae.capture.tier.Tier.split`; the graph tiers' is
:mod:`fxvae.surgery.cut`). The decoder never reads the data input's values: side outputs computed from them
(an input statistic) cannot be decoded from z and are ``None``. A discrete model is cut at its quantiser the
same way: the encoder returns the latent before quantisation, the decoder reads a quantised one.
"""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from fxvae.capture.tiers import tier_of
from fxvae.modules import input_names
from fxvae.recipe import conversion


def split(vae: fx.GraphModule) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Cut a VAE made by :func:`fxvae.convert` into ``encoder`` and ``decoder`` at the latent.

    ``encoder(*inputs) -> (mu, log_sigma)`` takes the VAE's inputs; ``decoder(z, *conditions)``
    returns the VAE's output structure, where ``conditions`` are the VAE's other inputs that the
    decoder reads (a conditional AE's label, under its own name). ``decoder(mu)`` equals the VAE's
    eval-mode output. Outputs that are the latent return z; outputs computed from the data input's
    values (not from z) are ``None``. Both modules share the VAE's parameters and buffers (no copy:
    training either trains the VAE) and have their own train/eval flags, starting in the VAE's mode.
    For the graph tiers both are GraphModules; for the hooks tier they run the VAE's model (the decoder
    on a zero input, with the latent replaced by z).

    A discrete model (``latent="vq"`` or ``"fsq"``) is cut at its quantiser: ``encoder(*inputs)`` returns
    the continuous latent before quantisation and ``decoder(z_q, *conditions)`` reads a quantised one, so
    that ``decoder(quantizer(encoder(x)))`` is the eval-mode output (:func:`fxvae.split_tokens` cuts it at
    the integer codes).

    >>> encoder, decoder = fxvae.split(vae)
    >>> mu, log_sigma = encoder(x)
    >>> torch.equal(decoder(mu), vae.eval()(x))
    True
    """
    recipe = conversion(vae)
    return tier_of(recipe.tracer).split(vae, recipe)


def decoder_conditions(vae: nn.Module, decoder: nn.Module, count: int) -> list[int]:
    """Positions, among the VAE's ``count`` inputs, of the conditions the decoder of :func:`fxvae.split` takes.

    >>> from fxvae.surgery.split import decoder_conditions
    >>> decoder_conditions(vae, fxvae.split(vae)[1], 1)
    []
    """
    if not isinstance(decoder, fx.GraphModule):
        return list(range(1, count))
    names = input_names(vae, count)
    taken = [str(node.target) for node in decoder.graph.find_nodes(op="placeholder")][1:]
    return [names.index(name) for name in taken]
