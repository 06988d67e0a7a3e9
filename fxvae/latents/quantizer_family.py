"""The discrete families, VQ and FSQ: a quantiser at the latent, fitted to the calibration data's codes (k-means
codebook, FSQ ranges) and measured on it at step 0; its commitment term as the training term."""

from __future__ import annotations

import dataclasses
import math
import typing
from abc import abstractmethod
from typing import Any, Literal

import torch
import torch.fx as fx

from fxvae.analysis.outputs import reconstruction_like
from fxvae.errors import InputError, RewriteError
from fxvae.latents.configs import FSQ, VQ, LatentConfig
from fxvae.latents.family import Batches, Family, LatentSite
from fxvae.latents.quantize import FiniteScalarQuantize, Quantizer, QuantizerLoss, VectorQuantize, quantizer_of
from fxvae.measure import likelihoods
from fxvae.modules import eval_mode
from fxvae.recipe import Conversion, QuantizerInfo, conversion, record
from fxvae.surgery.rewrite import QUANTIZE, Inserted
from fxvae.surgery.split import decoder_conditions, split


class _QuantizerFamily(Family):
    """What VQ and FSQ share: a quantiser at the latent, each code the latent's feature vector at one position."""

    kind: str
    estimator = "codes"
    starts = ("scratch", "warm", "random")
    what = "a discrete latent (latent='vq' or 'fsq')"

    @abstractmethod
    def quantizer(self, site: LatentSite, config: Any) -> Quantizer:
        """The quantiser for the latent, with its starting values: the structure, before any data."""

    def insert(  # type: ignore[override]
        self, site: LatentSite, config: LatentConfig, calibration: Batches | None
    ) -> tuple[fx.GraphModule, Inserted]:
        if not site.report.shape:
            raise RewriteError(
                f"the latent {site.report.node!r} is one number per sample (shape [batch]): it has no feature "
                f"dimension to quantise; pass bottleneck=<a node with features> (candidates: "
                f"{', '.join(c.node for c in site.report.candidates)}), or convert with latent='gaussian'"
            )
        if calibration is not None:
            self.check_codes(config, calibration, site)
        return site.insert_module(self.quantizer(site, config), QUANTIZE)

    def check_codes(self, config: Any, calibration: Batches, site: LatentSite) -> None:
        """Refuse calibration data the quantiser cannot be fitted to (none, by default)."""
        return None

    def entry(  # type: ignore[override]
        self, vae: fx.GraphModule, recipe: Conversion, inserted: Inserted, site: LatentSite, config: LatentConfig
    ) -> Conversion:
        quantizer = vae.get_submodule(inserted.latent_module)
        info = QuantizerInfo(
            family=quantizer.family,
            module=inserted.latent_module,
            codebook_size=quantizer.codebook_size,
            rate_bits=quantizer.rate_bits,
            code_shape=_code_shape(site),
            feature_dim=quantizer.feature_dim,
            width=quantizer.width,
            projected=isinstance(quantizer, FiniteScalarQuantize) and quantizer.project_down is not None,
        )
        return dataclasses.replace(recipe, quantizer=info)

    def term(self, vae: fx.GraphModule) -> QuantizerLoss:
        return QuantizerLoss(quantizer_of(vae, "the training term"))

    def fit(  # type: ignore[override]
        self, vae: fx.GraphModule, config: LatentConfig, calibration: Batches, likelihood: likelihoods.LikelihoodName
    ) -> None:
        recipe = conversion(vae)
        info = typing.cast(QuantizerInfo, recipe.quantizer)  # entry() filled it in
        info = _fit(vae, quantizer_of(vae, "fitting"), calibration, info, likelihoods.get(likelihood))
        record(vae, dataclasses.replace(recipe, quantizer=info))

    def restore(self, vae: fx.GraphModule, saved: Conversion) -> None:
        record(vae, dataclasses.replace(conversion(vae), quantizer=saved.quantizer))

    def start(self, name: str, config: LatentConfig) -> tuple[LatentConfig, bool]:
        return config, True

    def restart(self, name: str, vae: fx.GraphModule, seed: int) -> None:
        if name != "warm":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                quantizer_of(vae, "a study's start").reset()


class VQFamily(_QuantizerFamily):
    """VQ: the nearest of a learned codebook's codes; its codebook starts at the k-means centres of the data's codes.

    >>> from fxvae.latents.registry import family_of
    >>> family_of(fxvae.VQ()).kind, family_of(fxvae.VQ()).start("random", fxvae.VQ(codebook_size=64))
    ('vq', (VQ(codebook_size=64, beta=0.25, ema=True, decay=0.99, dead_code_threshold=0.03), True))
    """

    config = VQ
    kind = "vq"

    def check(self, config: VQ, calibration: Batches | None) -> None:  # type: ignore[override]
        if calibration is None:
            raise InputError(
                "latent='vq' starts its codebook at the k-means centres of the latent's codes on your data: pass "
                "calibration=<a tensor or a DataLoader of the AE's inputs> (command line: --calibration FILE)"
            )

    def quantizer(self, site: LatentSite, config: VQ) -> VectorQuantize:  # type: ignore[override]
        return VectorQuantize(
            config.codebook_size,
            site.report.shape[site.feature_axis],
            feature_dim=site.feature_dim,
            commitment=config.beta,
            update=config.codebook_update,
            decay=config.decay,
            dead_code_threshold=config.dead_code_threshold,
            dtype=site.dtype,
            device=site.device,
        )

    def check_codes(self, config: VQ, calibration: Batches, site: LatentSite) -> None:  # type: ignore[override]
        samples = calibration.samples
        per_sample = math.prod(_code_shape(site))
        codes = samples * per_sample
        if config.codebook_size > codes:
            raise InputError(
                f"codebook_size={config.codebook_size} is more than the {codes} codes in the calibration data "
                f"({samples} samples x {per_sample} per sample at the latent {site.report.node!r}): k-means cannot "
                "place more centres than it has codes; pass more calibration data or a smaller codebook_size"
            )


class FSQFamily(_QuantizerFamily):
    """FSQ: each dimension rounded to a fixed number of levels; its projections and ranges fitted to the data.

    >>> from fxvae.latents.registry import family_of
    >>> family_of("fsq").estimator
    'codes'
    """

    config = FSQ
    kind = "fsq"

    def quantizer(self, site: LatentSite, config: FSQ) -> FiniteScalarQuantize:  # type: ignore[override]
        return FiniteScalarQuantize(
            config.levels,
            site.report.shape[site.feature_axis],
            feature_dim=site.feature_dim,
            dtype=site.dtype,
            device=site.device,
        )


def _code_shape(site: LatentSite) -> tuple[int, ...]:
    """Per-sample shape of the codes: the latent's without its feature dimension."""
    shape, axis = site.report.shape, site.feature_axis
    return shape[:axis] + shape[axis + 1 :]


def _fit(
    gm: fx.GraphModule,
    quantizer: Quantizer,
    inputs: Batches,
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
    taken = decoder_conditions(gm, decoder, inputs.arity)
    with eval_mode(gm), eval_mode(encoder), eval_mode(decoder), torch.no_grad():
        # The codes are the latent's size and k-means reads them all; the inputs are read again a batch at a time.
        latents, elements = [], 0
        for batch in inputs:
            latents.append(encoder(*batch))
            elements += batch[0].numel()
        if not all(torch.isfinite(latent).all() for latent in latents):
            raise InputError("the autoencoder's latent is NaN or inf on the calibration data: pass finite data")

        def distortion() -> list[tuple[float | None, float | None, float]]:
            """Per batch: the AE's squared error, the quantised model's, and the quantiser's in latent space."""
            rows = []
            # Encoded again with its batch: a loader that reshuffles on each pass still pairs the two.
            for batch in inputs:
                latent = encoder(*batch)
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
        # Only the fit reads the codes: they go before the data is read again.
        del latents
        errors = distortion()
        fit: Literal["kmeans", "data", "none"] = "kmeans" if isinstance(quantizer, VectorQuantize) else "data"
        if unfitted is not None and _total(unfitted) < _total(errors):
            quantizer.load_state_dict(start)
            errors, fit = unfitted, "none"
    quantizer.latest = None
    measured = all(a is not None and q is not None for a, q, _ in errors)
    return dataclasses.replace(
        info,
        samples=inputs.samples,
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
