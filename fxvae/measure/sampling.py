"""Decoding draws of a latent: the VAE's prior N(0, I), or a density fitted to a model's codes (an AE's too).

```
z ~ N(0, I) or Density --[the decoder of fxvae.split, or of an AE's own bottleneck]--> samples
```
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import nn

from fxvae.errors import InputError
from fxvae.latents.gaussian import reparameterize_of
from fxvae.measure.density import Density, coder
from fxvae.modules import eval_mode, first_tensor
from fxvae.recipe import META_KEY, Conversion, conversion, unwrap
from fxvae.surgery.split import split


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
