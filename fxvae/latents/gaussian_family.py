"""The Gaussian family: a VAE's posterior at the latent, the KL as its training term, calibration as its data start."""

from __future__ import annotations

import dataclasses

import torch.fx as fx

from fxvae.errors import InputError
from fxvae.latents.configs import Gaussian
from fxvae.latents.family import Batches, Family, LatentSite
from fxvae.latents.gaussian import KLDivergence, reparameterize_of
from fxvae.measure.likelihoods import LikelihoodName
from fxvae.recipe import Conversion, conversion, record
from fxvae.surgery.calibration import calibrate, restore
from fxvae.surgery.rewrite import Inserted


class GaussianFamily(Family):
    """z = mu + exp(log sigma) * eps: the AE's bottleneck layer as the mu head, a zero log-sigma head beside it.

    The calibrated start reads the data and keeps the comparison's log-sigma start (``"auto"`` by default); the
    plain starts begin at the prior's scale.

    >>> from fxvae.latents.registry import family_of
    >>> config = fxvae.study.CompareOptions().latent_config()
    >>> family_of(config).start("calibrated", config)
    (Gaussian(log_sigma_init='auto', standardize='auto', head_kind='auto', fold=True), True)
    >>> family_of(config).start("warm", config)
    (Gaussian(log_sigma_init=0.0, standardize='auto', head_kind='auto', fold=True), False)
    """

    config = Gaussian
    kind = "vae"
    estimator = "posterior"
    starts = ("scratch", "warm", "calibrated")
    what = "a Gaussian latent"

    def check(self, config: Gaussian, calibration: Batches | None) -> None:  # type: ignore[override]
        if config.log_sigma_init == "auto" and calibration is None:
            raise InputError(
                "log_sigma_init='auto' sets log sigma from data: pass calibration=<a batch or a DataLoader>"
            )

    def insert(  # type: ignore[override]
        self, site: LatentSite, config: Gaussian, calibration: Batches | None
    ) -> tuple[fx.GraphModule, Inserted]:
        start = 0.0 if config.log_sigma_init == "auto" else float(config.log_sigma_init)
        return site.insert_posterior(start, config.head_kind)

    def entry(  # type: ignore[override]
        self, vae: fx.GraphModule, recipe: Conversion, inserted: Inserted, site: LatentSite, config: Gaussian
    ) -> Conversion:
        return dataclasses.replace(
            recipe,
            bottleneck=recipe.bottleneck if inserted.mu_head is not None else recipe.bottleneck.pointwise(),
            mu_head=inserted.mu_head,
            log_sigma_head=inserted.log_sigma_head,
            reparameterize=inserted.latent_module,
        )

    def term(self, vae: fx.GraphModule) -> KLDivergence:
        return KLDivergence(reparameterize_of(vae))

    def fit(  # type: ignore[override]
        self, vae: fx.GraphModule, config: Gaussian, calibration: Batches, likelihood: LikelihoodName
    ) -> None:
        calibrate(
            vae,
            calibration,
            standardize=config.standardize,
            log_sigma_init=config.log_sigma_init,
            likelihood=likelihood,
            fold=config.fold,
        )

    def restore(self, vae: fx.GraphModule, saved: Conversion) -> None:
        if saved.calibration is not None:
            restore(vae, saved.calibration)
            record(vae, dataclasses.replace(conversion(vae), calibration=saved.calibration, new_keys=saved.new_keys))

    def start(self, name: str, config: Gaussian) -> tuple[Gaussian, bool]:  # type: ignore[override]
        if name == "calibrated":
            return config, True
        # The plain conversions begin at the prior's scale: "auto" reads the data only the calibrated start has.
        return dataclasses.replace(config, log_sigma_init=Gaussian().log_sigma_init), False
