"""The latent-family interface: everything that differs between a VAE, a VQ-VAE and an FSQ model, in one object.

A family owns its config (:mod:`fxvae.latents.configs`), the module it puts at the latent, its training term,
its entry in the recipe, what a saved file needs rebuilt, which estimator measures it, and how a study starts it.
``convert``, ``load``, ``evaluate`` and ``compare`` ask the family; none of them asks which family it is.
Adding one is a module with a :class:`Family` subclass and one :func:`fxvae.latents.registry.register_family` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.fx as fx
from torch import nn

from fxvae.io.data import Passes
from fxvae.latents.configs import HeadChoice, LatentConfig

if TYPE_CHECKING:
    from fxvae.analysis.bottleneck import Bottleneck
    from fxvae.measure.likelihoods import LikelihoodName
    from fxvae.recipe import Conversion
    from fxvae.surgery.rewrite import Inserted

Batches = Passes
"""Calibration data as ``convert`` reads it: :class:`fxvae.io.data.Passes`, every batch's positional inputs,
checked and on the model's device, read again (a batch at a time) on each iteration."""
Estimator = Literal["posterior", "codes", "point"]
"""How :func:`fxvae.evaluate` measures a model of the family: ``"posterior"``, importance-weighted draws from
q(z|x) under the prior (nll, -ELBO, KL); ``"codes"``, the deterministic reconstruction of the quantised latent
under a uniform prior over the codes; ``"point"``, the reconstruction alone, as for an autoencoder."""


@dataclass(frozen=True)
class LatentSite:
    """The captured model at its bottleneck, as a family sees it, whatever the capture tier.

    ``insert_posterior(log_sigma_init, head_kind)`` makes the Gaussian heads and the reparameterisation;
    ``insert_module(module, name)`` puts ``z = module(latent)`` at the latent, under ``name`` (or a free variant of
    it). Each returns the VAE and what it inserted.
    """

    report: Bottleneck
    feature_dim: int
    """The latent dimension holding a code's features (-1: features last; 1: channels first)."""
    dtype: torch.dtype
    device: torch.device
    insert_posterior: Callable[[float, HeadChoice], tuple[fx.GraphModule, Inserted]]
    insert_module: Callable[[nn.Module, str], tuple[fx.GraphModule, Inserted]]

    @property
    def feature_axis(self) -> int:
        """Where the features are in the latent's per-sample shape."""
        return 0 if self.feature_dim == 1 else len(self.report.shape) - 1


class Family(ABC):
    """One latent family. Subclasses set the class attributes and implement :meth:`insert` and :meth:`term`.

    >>> from fxvae.latents.registry import family_of
    >>> family_of("vq").kind, family_of("vq").estimator, family_of("gaussian").starts
    ('vq', 'codes', ('scratch', 'warm', 'calibrated'))
    """

    config: ClassVar[type[LatentConfig]]
    kind: ClassVar[str]
    """What :func:`fxvae.evaluate` calls a model of the family in its table (``"vae"``, ``"vq"``...)."""
    estimator: ClassVar[Estimator]
    starts: ClassVar[tuple[str, ...]]
    """The starts ``fxvae.compare`` can train beside the AE (:data:`fxvae.study.options.StartName`)."""
    what: ClassVar[str]
    """The latent in a few words, for messages: ``"a Gaussian latent"``."""

    @property
    def name(self) -> str:
        return self.config.family

    def check(self, config: LatentConfig, calibration: Batches | None) -> None:
        """Refuse, before anything is captured, a conversion the family cannot make (data it needs, say)."""
        return None

    @abstractmethod
    def insert(
        self, site: LatentSite, config: LatentConfig, calibration: Batches | None
    ) -> tuple[fx.GraphModule, Inserted]:
        """The VAE: the family's module at the latent (its structure, before any data). What the family refuses at
        this bottleneck it refuses before inserting anything."""

    def entry(
        self, vae: fx.GraphModule, recipe: Conversion, inserted: Inserted, site: LatentSite, config: LatentConfig
    ) -> Conversion:
        """``recipe`` with the family's own fields filled in (nothing beyond the latent module, by default)."""
        return recipe

    @abstractmethod
    def term(self, vae: fx.GraphModule) -> nn.Module:
        """The training term ``convert`` returns beside the VAE: a module called with no arguments after a forward."""

    def fit(self, vae: fx.GraphModule, config: LatentConfig, calibration: Batches, likelihood: LikelihoodName) -> None:
        """Start from data (the calibration batches, on the VAE's device): nothing, by default."""
        return None

    def restore(self, vae: fx.GraphModule, saved: Conversion) -> None:
        """Rebuild what a saved VAE holds beyond its conversion's structure (the data-driven parts), so that the
        file's tensors load into it, and record the saved recipe's entries: nothing beyond the recipe, by default."""
        return None

    def start(self, name: str, config: LatentConfig) -> tuple[LatentConfig, bool]:
        """The config the study's start ``name`` converts with, and whether it reads the training data."""
        return config, False

    def restart(self, name: str, vae: fx.GraphModule, seed: int) -> None:
        """What the study's start ``name`` changes in a fresh conversion before training, drawing under ``seed``
        (nothing, by default)."""
        return None
