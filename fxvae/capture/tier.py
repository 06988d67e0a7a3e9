"""A capture tier: one way of holding a model (a traced graph, forward hooks, ...) and of operating on it.

Every caller works through :class:`Tier`: :func:`fxvae.capture.tiers.capture` picks the tier that captures a
model, and the tier named by a VAE's recipe (``tier_of(recipe.tracer)``) splits it and places its calibration
map. No caller asks which tier it holds; adding a tier is one module and one :func:`~fxvae.capture.tiers.register_tier`.

```
capture(model, args) -> Captured --locate--> Site --insert_posterior / insert_module--> VAE
VAE + recipe --split--> (encoder, decoder);  --fold / unfold / place--> the calibration map in the VAE
```
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
from torch import nn

from fxvae.analysis.bottleneck import Bottleneck

if TYPE_CHECKING:
    from fxvae.latents.configs import HeadChoice
    from fxvae.recipe import CalibrationInfo, Conversion
    from fxvae.surgery.rewrite import Inserted
    from fxvae.surgery.standardize import LatentAffine


@dataclass(frozen=True)
class Site:
    """The bottleneck as every caller sees it, whatever the tier.

    >>> from fxvae.capture.tiers import capture
    >>> captured, site = capture(ae, (x,), None, copy=True)
    >>> site.report.node, site.feature_dim, site.dtype
    ('_3', -1, torch.float32)
    """

    report: Bottleneck
    """What users see (:func:`fxvae.find_bottleneck`'s value)."""
    feature_dim: int
    """The latent dimension holding features: -1 features last, 1 channels first."""
    dtype: torch.dtype
    """The latent's."""
    detail: Any
    """The tier's own plan (a :class:`fxvae.analysis.bottleneck.Plan` for the graph tiers); only the tier reads it."""


@dataclass
class Captured:
    """A model as one tier holds it, with what the recipe records about the capture.

    >>> from fxvae.capture.tiers import capture
    >>> captured, _ = capture(ae, (x,), None, copy=True)
    >>> captured.tracer, isinstance(captured.graph_module, torch.fx.GraphModule)
    ('fx', True)
    """

    model: nn.Module
    """The owned model: a copy, unless the conversion was asked for ``copy=False``."""
    args: tuple[Any, ...]
    tier: Tier
    tracer: str
    """The name recorded in :attr:`fxvae.Conversion.tracer` (``"fx"``, ``"export"``, ``"hooks"`` or a new tier's)."""
    graph_module: fx.GraphModule | None
    """The captured graph; None for a tier that works without one (the hooks tier)."""
    dynamic_batch: bool = True
    fx_failure: str | None = None
    """Why torch.fx.symbolic_trace was not used, where it was tried and failed."""
    export_failure: str | None = None
    """Why torch.export was not used, where it was tried and failed."""


class TierRefused(Exception):
    """Raised by :meth:`Tier.capture` when the tier cannot capture the model: the next tier is tried.

    ``failures`` maps each tracer the tier tried to why it failed; the recipe keeps them.

    >>> TierRefused("no graph", {"fx": "control flow"}).failures
    {'fx': 'control flow'}
    """

    def __init__(self, reason: str, failures: dict[str, str | None] | None = None) -> None:
        super().__init__(reason)
        self.failures = dict(failures or {})


class Tier(ABC):
    """One capture tier. Subclasses name the :attr:`tracers` they own and implement each step.

    >>> from fxvae.capture.tiers import tier_of
    >>> tier_of("export").tracers
    ('fx', 'export')
    """

    tracers: tuple[str, ...]
    """The :attr:`fxvae.Conversion.tracer` values this tier owns."""

    @abstractmethod
    def capture(self, model: nn.Module, args: tuple[Any, ...]) -> Captured:
        """Capture ``model`` (already owned) on ``args``; raise :class:`TierRefused` where this tier cannot."""

    @abstractmethod
    def locate(self, captured: Captured, forced: str | None, model_name: str) -> Site:
        """The bottleneck of the captured model (``forced``: a node name or module path the user chose)."""

    @abstractmethod
    def insert_posterior(
        self, captured: Captured, site: Site, log_sigma_init: float, device: torch.device, head_kind: HeadChoice
    ) -> tuple[fx.GraphModule, Inserted]:
        """The Gaussian VAE: a mu head, a log-sigma head starting at ``log_sigma_init`` and a
        :class:`fxvae.Reparameterize` at the latent; eval outputs stay the model's. ``head_kind`` chooses the
        heads (:data:`fxvae.latents.configs.HeadChoice`); a choice the tier cannot make is an InputError."""

    @abstractmethod
    def insert_module(
        self, captured: Captured, site: Site, module: nn.Module, device: torch.device, name: str
    ) -> tuple[fx.GraphModule, Inserted]:
        """``z = module(latent)`` at the latent (a quantiser), registered as ``name`` (or a free variant of it),
        with nothing else changed."""

    @abstractmethod
    def split(self, vae: fx.GraphModule, recipe: Conversion) -> tuple[nn.Module, nn.Module]:
        """The encoder and decoder of :func:`fxvae.split`."""

    @abstractmethod
    def fold(self, vae: fx.GraphModule, recipe: Conversion, affine: LatentAffine) -> tuple[str | None, str | None]:
        """Fold the calibration map into layer weights where they allow: returns the mu-side and decoder-side
        layers it went into (None where it did not)."""

    @abstractmethod
    def unfold(self, vae: fx.GraphModule, info: CalibrationInfo, old: LatentAffine) -> None:
        """Undo the calibration ``info`` records (its map is ``old``): unfold the layers, take out what ran it."""

    @abstractmethod
    def place(
        self,
        vae: fx.GraphModule,
        recipe: Conversion,
        affine: LatentAffine,
        name: str,
        *,
        standardize: bool,
        destandardize: bool,
    ) -> None:
        """Register ``affine`` as ``vae.<name>`` and run it: standardising mu and destandardising z for the
        decoder, each where it was not folded (``standardize`` / ``destandardize``)."""
