"""The one-call conversion: check, copy, capture, find the bottleneck, rewrite, calibrate.

Ownership is decided here and only here: ``convert`` works on a copy of the model (or, with
``copy=False``, on the model itself, sharing its parameters); nothing downstream copies a parameter.
A discrete latent takes the same capture and bottleneck search, then a quantiser at the latent, fitted to
the calibration data (k-means codebook, FSQ ranges) and measured on it at step 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn

from fxvae.analysis.bottleneck import Bottleneck
from fxvae.analysis.outputs import reconstruction_like
from fxvae.capture.tier import Captured, Site
from fxvae.capture.tiers import capture
from fxvae.capture.tracing import as_args, conversion_scope
from fxvae.errors import InputError, RewriteError
from fxvae.io.data import batches, check_batch, to_device
from fxvae.latents.gaussian import KLDivergence
from fxvae.latents.quantize import CodebookUpdate, FiniteScalarQuantize, Quantizer, QuantizerLoss, VectorQuantize
from fxvae.measure import likelihoods
from fxvae.modules import eval_mode
from fxvae.recipe import (
    Conversion,
    LatentFamily,
    Likelihood,
    Options,
    QuantizerInfo,
    Standardize,
    conversion,
    record,
)
from fxvae.surgery.calibration import calibrate
from fxvae.surgery.rewrite import Inserted
from fxvae.surgery.split import decoder_conditions, split


def convert(
    model: nn.Module,
    example_inputs: Any,
    *,
    bottleneck: str | None = None,
    log_sigma_init: float | Literal["auto"] = 0.0,
    copy: bool = True,
    calibration: Any = None,
    standardize: Standardize = "auto",
    likelihood: Likelihood = "gaussian",
    latent: LatentFamily = "gaussian",
    codebook_size: int = 512,
    levels: tuple[int, ...] = (8, 5, 5, 5),
    commitment: float = 0.25,
    codebook_update: CodebookUpdate = "ema",
    ema_decay: float = 0.99,
    dead_code_threshold: float = 0.03,
) -> tuple[fx.GraphModule, KLDivergence | QuantizerLoss]:
    """Turn a trained autoencoder into a VAE (or, with ``latent=``, a VQ-VAE or an FSQ tokenizer) with the
    same inputs and outputs.

    The bottleneck is found automatically (see :func:`find_bottleneck`); ``bottleneck=`` forces one by
    fx node name or module path. Where one layer (plus activations and reshapes) makes the latent, that
    layer becomes the mu head and a log-sigma head of the same kind starts with weight 0 and bias
    ``log_sigma_init``; otherwise mu is the latent itself and the log-sigma head is a zero pointwise layer
    on it. z = mu + exp(log_sigma) * eps feeds the untouched decoder. In eval mode z = mu, so the VAE
    returns exactly what ``model`` returns, and it computes nothing the AE does not.

    ``log_sigma_init`` trades the two ends of the start: 0 (sigma = 1) starts at the prior's scale,
    so the initial KL is only 1/2 * sum(mu^2), but training-mode samples are far from the AE's latents;
    a negative value sigma_0 << 1 keeps training mode AE-like from the first step at the cost of about
    -log(sigma_0) - 1/2 extra nats of KL per latent dimension.

    ``calibration`` is the user's data (a tensor, or an iterable of batches such as a DataLoader): the
    latent is standardised over it (``standardize``) so that mu starts where the prior is, with the
    decoder reading the inverse map, and eval outputs stay the AE's, equal to float rounding (about 1e-6
    relative); ``log_sigma_init="auto"`` then sets each dimension's start from the decoder's sensitivity under
    ``likelihood`` (see :func:`calibrate`).

    ``copy=False`` lets the VAE share the AE's parameters (mu head included) to save memory: training
    the VAE then trains the AE. With the default, the VAE owns its parameters; ``model`` is never changed.

    Returns ``(vae, kl)``: ``vae`` is a ``torch.fx.GraphModule`` in ``model``'s train/eval mode, and
    ``kl()`` is the KL(q(z|x) || N(0, I)) of its latest forward, summed over latent dimensions and
    averaged over the batch (``kl(mu, log_sigma)`` for given tensors).

    ``latent="vq"`` puts a :class:`fxvae.VectorQuantize` of ``codebook_size`` codes at the latent instead
    (its codebook starts at the k-means centres of the calibration data's codes, which it needs), and
    ``latent="fsq"`` a :class:`fxvae.FiniteScalarQuantize` with ``levels``; a code is the latent's feature
    vector at one position (docs/discrete.md). The loss returned is then a :class:`fxvae.QuantizerLoss`,
    the quantiser's training term (``commitment`` is its beta), and the eval output is the AE's decoder on
    the quantised latent, no longer exactly the AE's: ``fxvae.conversion(model).quantizer`` reports the
    reconstruction error on the calibration data before and after quantising, and the rate in bits.

    >>> vae, kl = fxvae.convert(ae, x)
    >>> loss = F.mse_loss(vae.train()(x), x) + kl()
    >>> torch.equal(vae.eval()(x), ae(x))
    True
    >>> vq, vq_loss = fxvae.convert(ae, x, latent="vq", codebook_size=32, calibration=torch.randn(256, 64))
    >>> loss = F.mse_loss(vq.train()(x), x) + vq_loss()
    """
    options = Options(
        bottleneck=bottleneck,
        log_sigma_init=log_sigma_init,
        standardize=standardize,
        likelihood=likelihood,
        latent=latent,
        codebook_size=codebook_size,
        levels=levels,
        commitment=commitment,
        codebook_update=codebook_update,
        ema_decay=ema_decay,
        dead_code_threshold=dead_code_threshold,
    )
    if log_sigma_init == "auto" and calibration is None:
        raise InputError("log_sigma_init='auto' sets log sigma from data: pass calibration=<a batch or a DataLoader>")
    if latent == "vq" and calibration is None:
        raise InputError(
            "latent='vq' starts its codebook at the k-means centres of the latent's codes on your data: pass "
            "calibration=<a tensor or a DataLoader of the AE's inputs> (command line: --calibration FILE)"
        )
    with conversion_scope():
        return _convert(model, as_args(example_inputs), options, copy, calibration)


def rebuild(
    model: nn.Module, example_inputs: Any, options: Options
) -> tuple[fx.GraphModule, KLDivergence | QuantizerLoss]:
    """The model ``options`` describe, without the starts that come from data (calibration, a k-means
    codebook): the structure :func:`fxvae.load` loads a file's tensors into."""
    with conversion_scope():
        return _convert(model, as_args(example_inputs), options, True, None)


def _convert(
    model: nn.Module, args: tuple[Any, ...], options: Options, copy: bool, calibration: Any
) -> tuple[fx.GraphModule, KLDivergence | QuantizerLoss]:
    if options.latent != "gaussian":
        return _convert_discrete(model, args, options, copy, calibration)
    log_sigma_init = options.log_sigma_init
    start = 0.0 if log_sigma_init == "auto" else float(log_sigma_init)
    captured, site = capture(model, args, options.bottleneck, copy=copy)
    gm, inserted = captured.tier.insert_posterior(captured, site, start, args[0].device)
    gm.train(model.training)
    record(gm, _recipe(model, gm, captured, site, dataclasses.replace(options, log_sigma_init=start), inserted, args))
    kl = KLDivergence(gm.get_submodule(inserted.latent_module))
    if calibration is not None:
        calibrate(
            gm,
            calibration,
            standardize=options.standardize,
            log_sigma_init=log_sigma_init,
            likelihood=options.likelihood,
        )
    return gm, kl


def _convert_discrete(
    model: nn.Module, args: tuple[Any, ...], options: Options, copy: bool, calibration: Any
) -> tuple[fx.GraphModule, QuantizerLoss]:
    """Everything a discrete conversion can refuse is refused before the rewrite: the data, the latent."""
    inputs = _calibration_batches(calibration, args) if calibration is not None else []
    captured, site = capture(model, args, options.bottleneck, copy=copy)
    quantizer = _quantizer(options, site, args[0].device)
    axis = _feature_axis(site)
    code_shape = site.report.shape[:axis] + site.report.shape[axis + 1 :]
    if options.latent == "vq" and inputs:
        _check_enough_codes(options.codebook_size, inputs, code_shape, site.report.node)
    gm, inserted = captured.tier.insert_module(captured, site, quantizer, args[0].device)
    gm.train(model.training)
    info = QuantizerInfo(
        family=quantizer.family,
        module=inserted.latent_module,
        codebook_size=quantizer.codebook_size,
        rate_bits=quantizer.rate_bits,
        code_shape=code_shape,
        feature_dim=quantizer.feature_dim,
        width=quantizer.width,
        projected=isinstance(quantizer, FiniteScalarQuantize) and quantizer.project_down is not None,
    )
    record(gm, _recipe(model, gm, captured, site, options, inserted, args, info))
    if inputs:
        info = _fit(gm, quantizer, inputs, info, likelihoods.get(options.likelihood))
        record(gm, dataclasses.replace(conversion(gm), quantizer=info))
    return gm, QuantizerLoss(quantizer)


def _calibration_batches(data: Any, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    inputs = [to_device(batch, args[0].device) for batch in batches(data, len(args))]
    if not inputs or all(len(batch[0]) == 0 for batch in inputs):
        raise InputError("the calibration data is empty: pass a batch (or a DataLoader) of the AE's data")
    for batch in inputs:
        check_batch(batch, tuple(args[0].shape[1:]), "a calibration batch")
    return inputs


def _quantizer(options: Options, site: Site, device: torch.device) -> Quantizer:
    """The quantiser for the latent, with its starting values: the structure, before any data."""
    shape, feature_dim = site.report.shape, site.feature_dim
    if not shape:
        raise RewriteError(
            f"the latent {site.report.node!r} is one number per sample (shape [batch]): it has no feature "
            f"dimension to quantise; pass bottleneck=<a node with features> (candidates: "
            f"{', '.join(c.node for c in site.report.candidates)}), or convert with latent='gaussian'"
        )
    width = shape[_feature_axis(site)]
    dtype = site.dtype
    if options.latent == "fsq":
        return FiniteScalarQuantize(options.levels, width, feature_dim=feature_dim, dtype=dtype, device=device)
    return VectorQuantize(
        options.codebook_size,
        width,
        feature_dim=feature_dim,
        commitment=options.commitment,
        update=options.codebook_update,
        decay=options.ema_decay,
        dead_code_threshold=options.dead_code_threshold,
        dtype=dtype,
        device=device,
    )


def _feature_axis(site: Site) -> int:
    """Where the latent's features are in its per-sample shape (channels first, or last)."""
    return 0 if site.feature_dim == 1 else len(site.report.shape) - 1


def _check_enough_codes(size: int, inputs: list[tuple[Any, ...]], code_shape: tuple[int, ...], node: str) -> None:
    samples = sum(len(batch[0]) for batch in inputs)
    codes = samples * math.prod(code_shape)
    if size > codes:
        raise InputError(
            f"codebook_size={size} is more than the {codes} codes in the calibration data ({samples} samples x "
            f"{math.prod(code_shape)} per sample at the latent {node!r}): k-means cannot place more centres than "
            "it has codes; pass more calibration data or a smaller codebook_size"
        )


def _fit(
    gm: fx.GraphModule,
    quantizer: Quantizer,
    inputs: list[tuple[Any, ...]],
    info: QuantizerInfo,
    likelihood: likelihoods.Likelihood,
) -> QuantizerInfo:
    """Fit the quantiser to the calibration data's latents, and measure the reconstruction error there
    before and after quantising (the AE's decoder on the latent, and on the quantised latent), in data space:
    the likelihood's mean (pixel probabilities for Bernoulli logits).

    FSQ keeps its fit only where it measures better than its start without data: the data's extremes set
    every rounding step, and on a latent with heavy tails that can cost more than the no-data range [-1, 1]
    clamping the tails. The comparison is the reconstruction error on the calibration data (the quantised
    latent's own error where the output is not comparable with the data)."""
    encoder, decoder = split(gm)
    taken = decoder_conditions(gm, decoder, len(inputs[0]))
    with eval_mode(gm), eval_mode(encoder), eval_mode(decoder), torch.no_grad():
        latents = [encoder(*batch) for batch in inputs]
        if not all(torch.isfinite(latent).all() for latent in latents):
            raise InputError("the autoencoder's latent is NaN or inf on the calibration data: pass finite data")

        def distortion() -> list[tuple[float | None, float | None, float]]:
            """Per batch: the AE's squared error, the quantised model's, and the quantiser's in latent space."""
            rows = []
            for latent, batch in zip(latents, inputs, strict=True):
                quantized = quantizer(latent)
                conditions = [batch[i] for i in taken]
                rows.append(
                    (
                        _squared_error(decoder(latent, *conditions), batch[0], likelihood),
                        _squared_error(decoder(quantized, *conditions), batch[0], likelihood),
                        (quantized.double() - latent.double()).pow(2).sum().item(),
                    )
                )
            return rows

        unfitted = None
        if isinstance(quantizer, FiniteScalarQuantize):
            start = {k: v.clone() for k, v in quantizer.state_dict().items()}
            unfitted = distortion()
        quantizer.fit(latents)
        errors = distortion()
        fit: Literal["kmeans", "data", "none"] = "kmeans" if isinstance(quantizer, VectorQuantize) else "data"
        if unfitted is not None and _total(unfitted) < _total(errors):
            quantizer.load_state_dict(start)
            errors, fit = unfitted, "none"
    quantizer.latest = None
    elements = sum(batch[0].numel() for batch in inputs)
    measured = all(a is not None and q is not None for a, q, _ in errors)
    return dataclasses.replace(
        info,
        samples=sum(len(batch[0]) for batch in inputs),
        ae_mse=sum(a for a, _, _ in errors) / elements if measured else None,
        quantized_mse=sum(q for _, q, _ in errors) / elements if measured else None,
        fit=fit,
        unfitted_mse=sum(q for _, q, _ in unfitted) / elements if unfitted is not None and measured else None,
    )


def _total(errors: list[tuple[float | None, float | None, float]]) -> float:
    """The quantised model's summed squared error in data space where it was measured, else in latent space."""
    if all(q is not None for _, q, _ in errors):
        return sum(q for _, q, _ in errors)
    return sum(latent for _, _, latent in errors)


def _squared_error(out: Any, x: torch.Tensor, likelihood: likelihoods.Likelihood) -> float | None:
    """The summed squared error of the reconstruction in ``out`` in data space; None where it is not comparable
    with x."""
    recon = reconstruction_like(out, x) if x.is_floating_point() else None
    if recon is None or recon.shape != x.shape:
        return None
    return (likelihood.mean(recon).double() - x.double()).pow(2).sum().item()


def _recipe(
    model: nn.Module,
    gm: fx.GraphModule,
    captured: Captured,
    site: Site,
    options: Options,
    inserted: Inserted,
    args: tuple[Any, ...],
    quantizer: QuantizerInfo | None = None,
) -> Conversion:
    ae_keys = model.state_dict().keys()
    vae_keys = gm.state_dict().keys()
    key_map = inserted.key_map
    return Conversion(
        tracer=captured.tracer,
        bottleneck=site.report,
        options=options,
        mu_head=inserted.mu_head,
        log_sigma_head=inserted.log_sigma_head,
        reparameterize=inserted.latent_module if quantizer is None else None,
        key_map=key_map,
        dropped_keys=tuple(k for k in ae_keys if k not in vae_keys and k not in key_map),
        new_keys=tuple(k for k in vae_keys if k not in ae_keys and k not in key_map.values()),
        dynamic_batch=captured.dynamic_batch,
        fx_failure=captured.fx_failure,
        export_failure=captured.export_failure,
        input_shape=tuple(args[0].shape[1:]),
        quantizer=quantizer,
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
