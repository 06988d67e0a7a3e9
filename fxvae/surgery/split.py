"""Cut a converted VAE at its latent into an encoder and a decoder, and sample from it.

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

from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import nn

from fxvae.capture.tiers import tier_of
from fxvae.errors import InputError
from fxvae.latents.gaussian import reparameterize_of
from fxvae.modules import eval_mode, first_tensor, input_names
from fxvae.recipe import META_KEY, Conversion, conversion, unwrap

if TYPE_CHECKING:
    from fxvae.measure.density import Density


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


def sample(
    vae: torch.nn.Module,
    n: int,
    *conditions: Any,
    generator: torch.Generator | None = None,
    density: Density | None = None,
) -> Any:
    """Decode ``n`` draws z ~ N(0, I) of the latent shape, in eval mode and without gradients.

    ``conditions`` are the decoder's extra inputs (a conditional AE's label), batch size ``n``. The
    draws are made on the VAE's device and in its dtype; ``generator`` makes them reproducible.
    The VAE's train/eval mode is left as it was.

    ``density`` (a :class:`fxvae.Density` from :func:`fxvae.fit_density`) draws z from it instead of
    N(0, I); the model may then also be the autoencoder itself, whose decoder is read at the bottleneck
    fxvae finds (:func:`fxvae.measure.density.coder`). An autoencoder has no prior of its own: without a density
    it is refused.

    >>> images = fxvae.sample(vae, 4, generator=torch.Generator().manual_seed(0))
    >>> images.shape
    torch.Size([4, 64])
    >>> density = fxvae.fit_density(ae, torch.randn(256, 64))
    >>> fxvae.sample(ae, 4, density=density).shape
    torch.Size([4, 64])
    """
    if density is not None:
        return _sample_density(vae, n, conditions, generator, density)
    if _is_autoencoder(vae):
        raise InputError(
            f"{type(vae).__name__} is an autoencoder: it has no prior to sample from; pass "
            "density=fxvae.fit_density(ae, train), a density fitted to its codes"
        )
    recipe = conversion(vae)
    reference = next(reparameterize_of(vae, "fxvae.sample").log_sigma_fn.parameters())
    z = torch.randn((n, *recipe.latent_shape), generator=generator, dtype=reference.dtype)
    _, decoder = split(vae)
    with eval_mode(decoder), torch.no_grad():
        return decoder(z.to(reference.device), *conditions)


def _is_autoencoder(model: nn.Module) -> bool:
    inner = unwrap(model)
    return not (isinstance(inner, fx.GraphModule) and isinstance(inner.meta.get(META_KEY), Conversion))


def _sample_density(
    model: nn.Module, n: int, conditions: tuple[Any, ...], generator: torch.Generator | None, density: Density
) -> Any:
    """Decode ``n`` draws of ``density`` with the model's decoder (an AE's is captured on a standard normal batch
    of the data's shape, with the conditions given)."""
    from fxvae.measure.density import Density, coder

    if not isinstance(density, Density):
        raise InputError(
            f"density= takes a fxvae.Density, got a {type(density).__name__}: pass fxvae.fit_density(model, train)"
        )
    reference = first_tensor(unwrap(model))
    dtype = reference.dtype if reference is not None else torch.float32
    device = reference.device if reference is not None else torch.device("cpu")
    if _is_autoencoder(model) and density.input_shape is None:
        raise InputError(
            "the density does not say what data shape it was fitted on (input_shape), which capturing the "
            "autoencoder's decoder needs: fit it with fxvae.fit_density(ae, train)"
        )
    with torch.no_grad():
        if _is_autoencoder(model):
            # The hooks tier finds the latent by perturbing a batch, which a constant batch would not show.
            noise = torch.Generator().manual_seed(0)
            example = torch.randn((max(n, 1), *density.input_shape), generator=noise, dtype=dtype).to(device)
            encoder, decoder = coder(model, (example, *conditions))
            with eval_mode(encoder):
                latent_shape = tuple(encoder(example, *conditions).shape[1:])
        else:
            _, decoder = coder(model, ())
            latent_shape = conversion(model).latent_shape
        if latent_shape != density.latent_shape:
            raise InputError(
                f"{type(model).__name__}'s latent has shape {list(latent_shape)}, but the density is on latents of "
                f"shape {list(density.latent_shape)}: fit the density to this model (fxvae.fit_density(model, train))"
            )
        z = density.sample(n, generator=generator, dtype=dtype, device=device)
        with eval_mode(decoder):
            return decoder(z, *conditions)


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
