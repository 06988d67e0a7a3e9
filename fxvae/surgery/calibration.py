"""Calibrated conversion: move the AE's codes to the prior, outputs equal to float rounding (about 1e-6 relative).

An autoencoder puts its codes wherever reconstruction wants them, far from N(0, I), so a plain conversion
starts as a poor VAE: the means alone cost most of the KL. With the latent's statistics over the user's
data (a mean m and a spread s, or a whitening matrix W: :mod:`fxvae.surgery.standardize`), mu becomes the
standardised code and the decoder reads the inverse map:

```
a --[standardise: mu = W (a - m)]--> mu --[reparameterize]--> z --[destandardise: m + W^-1 z]--> decoder
```
In eval mode z = mu, so the decoder sees a again, up to float rounding. The VAE's capture tier places the
map: with ``fold=True`` (:attr:`fxvae.Gaussian.fold`, the default) the graph tiers fold it into the mu head and
the decoder's first layer where those are plain layers (:mod:`fxvae.surgery.folding`), which changes the
parametrisation an optimiser sees (the mu head's weights divided by each code's spread, the decoder's first
layer's multiplied by it); with ``fold=False`` the map runs as nodes on both sides of the reparameterisation and
the AE's layers keep their own weights. The named ``calibration`` module holds its constants either way, as
buffers (frozen: no optimiser moves them), so they round-trip through save/load and re-calibration can undo a
fold.

``log_sigma_init="auto"`` starts each latent dimension at the variance a Gaussian posterior has for the
linearised decoder under the prior: sigma_j^2 = 1 / (1 + F_j), F_j the decoder's Fisher-weighted
sensitivity to z_j over the calibration data (see :func:`fxvae.measure.sensitivity.auto_log_sigma`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn

from fxvae.capture.tiers import tier_of
from fxvae.capture.tracing import CAPTURE_LOCK
from fxvae.io.data import Passes
from fxvae.latents.configs import Gaussian, Standardize
from fxvae.latents.gaussian import reparameterize_of
from fxvae.measure.sensitivity import head_bias, streamed_log_sigma
from fxvae.modules import eval_mode, first_tensor
from fxvae.recipe import CalibrationInfo, Likelihood, conversion, record, unwrap
from fxvae.surgery.split import decoder_conditions, split
from fxvae.surgery.standardize import LatentAffine, Mode, empty_affine, fit_affine

CALIBRATION = "calibration"


# --- the user-facing call -------------------------------------------------------------------------------------


def calibrate(
    vae: nn.Module,
    data: Any,
    *,
    standardize: Standardize = "auto",
    log_sigma_init: float | Literal["auto"] | None = None,
    likelihood: Likelihood = "gaussian",
    fold: bool | None = None,
) -> None:
    """Standardise a converted VAE's latent with ``data``, in place, keeping its eval outputs (to about 1e-6 relative).

    ``data`` is a tensor (cut into batches of 256) or an iterable of batches (a DataLoader); a batch is a
    tensor or a tuple whose first items are the VAE's inputs (a supervised loader's ``(x, label)`` gives
    ``x`` to a one-input VAE). The AE's latent is read in eval mode over all of it and its statistics are
    accumulated in float64 in one pass. ``data`` is read in passes, one batch at a time (a first that checks
    it before the VAE is changed, one for the statistics, and with ``log_sigma_init="auto"`` one that fits the
    likelihood's scale and one over the first 512 samples), so memory does not grow with the data, wherever
    it can be read again: a tensor, a Dataset, a DataLoader, a list, any iterable whose ``__iter__`` starts
    afresh. A one-shot iterator (a generator, ``iter(data) is data``) cannot: its batches are all held.
    ``standardize`` chooses the map (:data:`fxvae.latents.configs.Standardize`).
    ``fold`` puts the map into the mu head and the decoder's first layer where they are plain layers (True), or
    keeps it as a frozen module of its own run before and after the reparameterisation, leaving the AE's layers
    as they are (False); None takes the VAE's :attr:`fxvae.Gaussian.fold`. The choice is recorded in the recipe.
    A calibrated VAE can be calibrated again (new data, another mode, the other ``fold``): the old map is undone
    first.
    ``log_sigma_init`` sets the log-sigma head's bias: a number, ``"auto"`` (each dimension from the
    decoder's sensitivity under ``likelihood``, :func:`fxvae.measure.sensitivity.auto_log_sigma`), or None to leave it.

    >>> data = torch.randn(512, 64)
    >>> fxvae.calibrate(vae, data)
    >>> encoder, _ = fxvae.split(vae)
    >>> mu, _ = encoder(data)
    >>> bool(mu.mean(0).abs().max() < 1e-5), bool((mu.std(0, correction=0) - 1).abs().max() < 1e-4)
    (True, True)
    """
    with CAPTURE_LOCK:
        _calibrate(vae, data, standardize, log_sigma_init, likelihood, fold)


def _calibrate(
    vae: nn.Module,
    data: Any,
    standardize: Standardize,
    log_sigma_init: float | Literal["auto"] | None,
    likelihood: Likelihood,
    fold: bool | None,
) -> None:
    reparameterize_of(vae, "fxvae.calibrate")
    recipe = conversion(vae)
    options, latent = recipe.options, typing.cast(Gaussian, recipe.options.latent)  # reparameterize_of checked it
    # The config checks the values before anything is measured or changed.
    latent = dataclasses.replace(latent, standardize=standardize, fold=latent.fold if fold is None else fold)
    gm = unwrap(vae)
    count = len(gm.graph.find_nodes(op="placeholder"))
    passes = Passes.of(data, count, recipe.input_shape, first_tensor(gm).device)
    encoder, _ = split(gm)
    old = gm.get_submodule(recipe.calibration.module) if recipe.calibration else None

    def latents() -> Iterator[torch.Tensor]:
        """The AE's latent (an earlier map undone), one batch at a time."""
        for args in passes:
            with torch.no_grad():
                mu = encoder(*args)[0]
            yield old(mu, inverse=True) if old is not None else mu

    latent_shape, axis = recipe.latent_shape, recipe.bottleneck.feature_dim
    mode = _resolve(standardize, latent_shape)
    with eval_mode(encoder):
        affine, samples = fit_affine(latents(), latent_shape, mode, axis, None)
    info = _install(gm, affine, old, mode, samples, fold=latent.fold)
    new_keys = tuple(dict.fromkeys((*recipe.new_keys, *(f"{info.module}.{k}" for k in affine.state_dict()))))
    if log_sigma_init is not None:
        _set_log_sigma(gm, recipe, log_sigma_init, likelihood, passes)
        options = dataclasses.replace(options, likelihood=likelihood)
        latent = dataclasses.replace(latent, log_sigma_init=log_sigma_init)
    options = dataclasses.replace(options, latent=latent)
    record(gm, dataclasses.replace(recipe, calibration=info, new_keys=new_keys, options=options))


def _resolve(mode: Standardize, latent_shape: tuple[int, ...]) -> Mode:
    return ("element" if len(latent_shape) == 1 else "channel") if mode == "auto" else mode


# --- installing and folding the map --------------------------------------------------------------------------


def _install(
    gm: fx.GraphModule, affine: LatentAffine, old: LatentAffine | None, mode: Mode, samples: int, *, fold: bool
) -> CalibrationInfo:
    """Put ``affine`` in the VAE (undoing an earlier map first): with ``fold``, folded where the tier can; the
    rest (all of it without ``fold``) runs as the module's nodes."""
    recipe = conversion(gm)
    tier = tier_of(recipe.tracer)
    if recipe.calibration is not None and old is not None:
        tier.unfold(gm, recipe.calibration, old)
    folded_mu, folded_decoder = tier.fold(gm, recipe, affine) if fold else (None, None)
    tier.place(gm, recipe, affine, CALIBRATION, standardize=folded_mu is None, destandardize=folded_decoder is None)
    return CalibrationInfo(mode, affine.axis, samples, CALIBRATION, folded_mu, folded_decoder)


def restore(gm: fx.GraphModule, info: CalibrationInfo) -> None:
    """Rebuild a saved VAE's calibration structure (module and nodes) for its buffers to be loaded into."""
    recipe = conversion(gm)
    affine = empty_affine(info.standardize, recipe.latent_shape, info.axis, first_tensor(gm))
    tier_of(recipe.tracer).place(
        gm,
        recipe,
        affine,
        info.module,
        standardize=info.folded_mu is None,
        destandardize=info.folded_decoder is None,
    )


# --- log sigma from the data ---------------------------------------------------------------------------------


def _set_log_sigma(
    gm: fx.GraphModule,
    recipe: Any,
    log_sigma_init: float | Literal["auto"],
    likelihood: Likelihood,
    passes: Passes,
) -> None:
    head = gm.get_submodule(recipe.log_sigma_head)
    if log_sigma_init == "auto":
        encoder, decoder = split(gm)
        taken = decoder_conditions(gm, decoder, passes.arity)
        with eval_mode(encoder), eval_mode(decoder):
            target = streamed_log_sigma(decoder, _Pairs(encoder, passes, taken), likelihood)
        value = head_bias(target, tuple(head.bias.shape), recipe.bottleneck.feature_dim)
    else:
        value = torch.full_like(head.bias, float(log_sigma_init))
    with torch.no_grad():
        head.bias.copy_(value)
    reparameterize_of(gm).latest = None


@dataclasses.dataclass(frozen=True)
class _Pairs:
    """(the calibrated VAE's mu, the decoder's inputs) per batch, encoded again on each pass: the data is read
    a batch at a time, and a loader that reshuffles on each pass still pairs each code with its own batch.

    That mu is the standardised code up to float rounding (the map may be folded into the mu head): the AE's
    encoder as it was before the map is gone, and holding every code from the first pass would grow with the
    data."""

    encoder: nn.Module
    passes: Passes
    taken: list[int]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, tuple[Any, ...]]]:
        for args in self.passes:
            # Outside the generator's yield: the sensitivity that reads the pair takes gradients.
            with torch.no_grad():
                mu = self.encoder(*args)[0]
            yield mu, (args[0], *(args[i] for i in self.taken))
