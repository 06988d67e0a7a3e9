"""The one-call conversion: check, copy, capture, find the bottleneck, put the latent family's module there.

Ownership is decided here and only here: ``convert`` works on a copy of the model (or, with
``copy=False``, on the model itself, sharing its parameters); nothing downstream copies a parameter.
What differs between latents (a VAE's posterior, a quantiser) is the family's (:mod:`fxvae.latents.family`):
its module at the latent, its training term, its recipe entry and its start from data.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, overload

import torch.fx as fx
from torch import nn

from fxvae.analysis.bottleneck import Bottleneck
from fxvae.capture.tier import Captured
from fxvae.capture.tiers import capture
from fxvae.capture.tracing import as_args, conversion_scope
from fxvae.errors import InputError
from fxvae.io.data import Passes
from fxvae.latents.configs import FSQ, VQ, Gaussian, LatentConfig, Standardize, config_of
from fxvae.latents.family import LatentSite
from fxvae.latents.gaussian import KLDivergence
from fxvae.latents.quantize import QuantizerLoss
from fxvae.latents.registry import family_of
from fxvae.recipe import Conversion, Likelihood, Options, record
from fxvae.surgery.rewrite import Inserted


@overload
def convert(
    model: nn.Module,
    example_inputs: Any,
    *,
    bottleneck: str | None = ...,
    latent: Gaussian | Literal["gaussian"] = ...,
    likelihood: Likelihood = ...,
    calibration: Any = ...,
    copy: bool = ...,
    log_sigma_init: float | Literal["auto"] | None = ...,
    standardize: Standardize | None = ...,
) -> tuple[fx.GraphModule, KLDivergence]: ...


@overload
def convert(
    model: nn.Module,
    example_inputs: Any,
    *,
    bottleneck: str | None = ...,
    latent: VQ | FSQ | Literal["vq", "fsq"],
    likelihood: Likelihood = ...,
    calibration: Any = ...,
    copy: bool = ...,
) -> tuple[fx.GraphModule, QuantizerLoss]: ...


@overload
def convert(
    model: nn.Module,
    example_inputs: Any,
    *,
    bottleneck: str | None = ...,
    latent: LatentConfig | str = ...,
    likelihood: Likelihood = ...,
    calibration: Any = ...,
    copy: bool = ...,
    log_sigma_init: float | Literal["auto"] | None = ...,
    standardize: Standardize | None = ...,
    options: Options | None = ...,
) -> tuple[fx.GraphModule, nn.Module]: ...


def convert(
    model: nn.Module,
    example_inputs: Any,
    *,
    bottleneck: str | None = None,
    latent: LatentConfig | str = "gaussian",
    likelihood: Likelihood = "gaussian",
    calibration: Any = None,
    copy: bool = True,
    log_sigma_init: float | Literal["auto"] | None = None,
    standardize: Standardize | None = None,
    options: Options | None = None,
) -> tuple[fx.GraphModule, nn.Module]:
    """Turn a trained autoencoder into a VAE (or, with ``latent=``, a VQ-VAE or an FSQ tokenizer) with the
    same inputs and outputs.

    The bottleneck is found automatically (see :func:`find_bottleneck`); ``bottleneck=`` forces one by
    fx node name or module path. Where one layer (plus activations and reshapes) makes the latent, that
    layer becomes the mu head and a log-sigma head of the same kind starts with weight 0 and bias
    ``log_sigma_init``; otherwise mu is the latent itself and the log-sigma head is a zero pointwise layer
    on it. z = mu + exp(log_sigma) * eps feeds the untouched decoder. In eval mode z = mu, so the VAE
    returns exactly what ``model`` returns, and it computes nothing the AE does not.

    ``latent`` is what the latent becomes, a config with that family's choices: :class:`fxvae.Gaussian` (the
    default: ``log_sigma_init``, ``standardize``, ``head_kind``, ``fold``), :class:`fxvae.VQ` or :class:`fxvae.FSQ`; the
    strings ``"gaussian"``, ``"vq"`` and ``"fsq"`` stand for their defaults. ``log_sigma_init`` and
    ``standardize`` are shorthands for the Gaussian config's fields.

    ``log_sigma_init`` trades the two ends of the start: 0 (sigma = 1) starts at the prior's scale,
    so the initial KL is only 1/2 * sum(mu^2), but training-mode samples are far from the AE's latents;
    a negative value sigma_0 << 1 keeps training mode AE-like from the first step at the cost of about
    -log(sigma_0) - 1/2 extra nats of KL per latent dimension.

    ``calibration`` is the user's data (a tensor, or an iterable of batches such as a DataLoader): the
    latent is standardised over it (``standardize``) so that mu starts where the prior is, with the
    decoder reading the inverse map, and eval outputs stay the AE's, equal to float rounding (about 1e-6
    relative); ``log_sigma_init="auto"`` then sets each dimension's start from the decoder's sensitivity under
    ``likelihood`` (see :func:`calibrate`). ``latent=fxvae.Gaussian(fold=False)`` keeps that map as a frozen
    module of its own, run before and after the reparameterisation, instead of folding it into the mu head and
    the decoder's first layer: the AE's layers keep their weights.

    ``copy=False`` lets the VAE share the AE's parameters (mu head included) to save memory: training
    the VAE then trains the AE. With the default, the VAE owns its parameters; ``model`` is never changed.
    ``options`` (an :class:`fxvae.Options`, such as ``fxvae.conversion(vae).options``) makes another
    conversion's choices again, in place of ``bottleneck``, ``latent`` and ``likelihood``.

    Returns ``(vae, term)``: ``vae`` is a ``torch.fx.GraphModule`` in ``model``'s train/eval mode, and ``term``
    the family's training term. For a Gaussian latent it is a :class:`fxvae.KLDivergence`: ``kl()`` is the
    KL(q(z|x) || N(0, I)) of the latest forward, summed over latent dimensions and averaged over the batch
    (``kl(mu, log_sigma)`` for given tensors).

    ``latent=fxvae.VQ(...)`` puts a :class:`fxvae.VectorQuantize` at the latent instead (its codebook starts at
    the k-means centres of the calibration data's codes, which it needs), and ``latent=fxvae.FSQ(...)`` a
    :class:`fxvae.FiniteScalarQuantize`; a code is the latent's feature vector at one position (docs/discrete.md).
    The term returned is then a :class:`fxvae.QuantizerLoss`, the quantiser's training term, and the eval output
    is the AE's decoder on the quantised latent, no longer exactly the AE's: ``fxvae.conversion(model).quantizer``
    reports the reconstruction error on the calibration data before and after quantising, and the rate in bits.

    >>> vae, kl = fxvae.convert(ae, x)
    >>> loss = F.mse_loss(vae.train()(x), x) + kl()
    >>> torch.equal(vae.eval()(x), ae(x))
    True
    >>> vq, vq_loss = fxvae.convert(ae, x, latent=fxvae.VQ(codebook_size=32), calibration=torch.randn(256, 64))
    >>> loss = F.mse_loss(vq.train()(x), x) + vq_loss()
    """
    if options is None:
        options = Options(
            bottleneck=bottleneck,
            likelihood=likelihood,
            latent=_latent(latent, log_sigma_init, standardize),
        )
    elif (bottleneck, latent, likelihood, log_sigma_init, standardize) != (None, "gaussian", "gaussian", None, None):
        raise InputError(
            "options= makes another conversion's choices again: leave bottleneck, latent, likelihood, log_sigma_init "
            "and standardize out, or pass them and not options (dataclasses.replace(options, ...) changes one)"
        )
    elif not isinstance(options, Options):
        raise InputError(f"options= takes a fxvae.Options, got a {type(options).__name__}")
    with conversion_scope():
        return _convert(model, as_args(example_inputs), options, copy, calibration, replay=False)


def _latent(
    latent: LatentConfig | str, log_sigma_init: float | Literal["auto"] | None, standardize: Standardize | None
) -> LatentConfig:
    """The latent config ``convert``'s arguments describe: ``latent``, with the Gaussian shorthands applied."""
    config = config_of(latent)
    shorthands = {
        name: value
        for name, value in (("log_sigma_init", log_sigma_init), ("standardize", standardize))
        if value is not None
    }
    if not shorthands:
        return config
    if not isinstance(config, Gaussian):
        name = next(iter(shorthands))
        raise InputError(
            f"{name}={shorthands[name]!r} applies to a Gaussian latent, and this conversion makes latent="
            f"{config.family!r}: leave {name} out"
        )
    if not isinstance(latent, str):
        name = next(iter(shorthands))
        raise InputError(
            f"{name} is given twice, as a keyword and by latent={latent!r}: set it on fxvae.Gaussian(...) only"
        )
    return dataclasses.replace(config, **shorthands)


def rebuild(model: nn.Module, example_inputs: Any, options: Options) -> tuple[fx.GraphModule, nn.Module]:
    """The model ``options`` describe, without the starts that come from data (calibration, a k-means
    codebook): the structure :func:`fxvae.load` loads a file's tensors into."""
    with conversion_scope():
        return _convert(model, as_args(example_inputs), options, True, None, replay=True)


def _convert(
    model: nn.Module, args: tuple[Any, ...], options: Options, copy: bool, calibration: Any, *, replay: bool
) -> tuple[fx.GraphModule, nn.Module]:
    """Everything the family can refuse is refused before anything is rewritten: the data, the latent."""
    family = family_of(options.latent)
    data = _calibration_passes(calibration, args) if calibration is not None else None
    if not replay:
        family.check(options.latent, data)
    captured, site = capture(model, args, options.bottleneck, copy=copy)
    device = args[0].device
    at = LatentSite(
        site.report,
        site.feature_dim,
        site.dtype,
        device,
        lambda start, head_kind: captured.tier.insert_posterior(captured, site, start, device, head_kind),
        lambda module, name: captured.tier.insert_module(captured, site, module, device, name),
    )
    gm, inserted = family.insert(at, options.latent, data)
    gm.train(model.training)
    recipe = _recipe(model, gm, captured, at.report, options, inserted, args)
    record(gm, family.entry(gm, recipe, inserted, at, options.latent))
    term = family.term(gm)
    if data is not None:
        family.fit(gm, options.latent, data, options.likelihood)
    return gm, term


def _calibration_passes(data: Any, args: tuple[Any, ...]) -> Passes:
    """The calibration data, checked in a first pass before anything is captured or rewritten, then read again
    a batch at a time by each pass the family makes over it."""
    return Passes(data, len(args), tuple(args[0].shape[1:]), args[0].device)


def _recipe(
    model: nn.Module,
    gm: fx.GraphModule,
    captured: Captured,
    report: Bottleneck,
    options: Options,
    inserted: Inserted,
    args: tuple[Any, ...],
) -> Conversion:
    """What every conversion records; the family adds its own entry (:meth:`fxvae.latents.family.Family.entry`)."""
    ae_keys = model.state_dict().keys()
    vae_keys = gm.state_dict().keys()
    key_map = inserted.key_map
    return Conversion(
        tracer=captured.tracer,
        bottleneck=report,
        options=options,
        mu_head=None,
        log_sigma_head=None,
        reparameterize=None,
        key_map=key_map,
        dropped_keys=tuple(k for k in ae_keys if k not in vae_keys and k not in key_map),
        new_keys=tuple(k for k in vae_keys if k not in ae_keys and k not in key_map.values()),
        dynamic_batch=captured.dynamic_batch,
        fx_failure=captured.fx_failure,
        export_failure=captured.export_failure,
        input_shape=tuple(args[0].shape[1:]),
        latent_module=inserted.latent_module,
    )


def find_bottleneck(model: nn.Module, example_inputs: Any, *, bottleneck: str | None = None) -> Bottleneck:
    """Locate the bottleneck of ``model`` without rewriting anything (``model`` is not changed).

    ``example_inputs`` is a tensor or a tuple of positional arguments; its first argument is the data
    and dim 0 is the batch. ``bottleneck`` forces a choice by fx node name or module path.

    >>> b = fxvae.find_bottleneck(ae, x)
    >>> b.node, b.module, b.shape
    ('_3', '2', (8,))
    """
    Options(bottleneck=bottleneck)
    with conversion_scope():
        return capture(model, as_args(example_inputs), bottleneck, copy=True)[1].report
