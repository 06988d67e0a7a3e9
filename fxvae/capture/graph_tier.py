"""The graph tier: a model captured as a GraphModule (torch.fx.symbolic_trace, else torch.export).

The work is done by the graph passes, each in its own module; this class routes the
:class:`~fxvae.capture.tier.Tier` calls to them:

| step | pass |
| --- | --- |
| capture | :func:`fxvae.capture.tracing.trace` |
| locate | :func:`fxvae.analysis.bottleneck.locate` |
| insert_posterior, insert_module | :func:`fxvae.surgery.rewrite.rewrite` |
| split | :func:`fxvae.surgery.cut.cut` |
| fold, unfold, place | :mod:`fxvae.surgery.folding` |
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import nn

from fxvae.analysis.bottleneck import Plan, locate
from fxvae.capture.tier import Captured, Site, Tier, TierRefused
from fxvae.capture.tracing import trace
from fxvae.errors import InputError
from fxvae.latents.configs import HeadChoice
from fxvae.recipe import CalibrationInfo, Conversion
from fxvae.surgery import folding
from fxvae.surgery.cut import cut
from fxvae.surgery.rewrite import Inserted, rewrite
from fxvae.surgery.standardize import LatentAffine


class GraphTier(Tier):
    """Models torch.fx or torch.export follow: every step is graph surgery on the captured GraphModule.

    >>> captured = GraphTier().capture(ae, (x,))
    >>> captured.tracer, GraphTier().locate(captured, None, "ae").report.node
    ('fx', '_3')
    """

    tracers = ("fx", "export")

    def capture(self, model: nn.Module, args: tuple[Any, ...]) -> Captured:
        traced = trace(model, args)
        if traced.graph_module is None or traced.tracer is None:
            raise TierRefused(
                "neither torch.fx.symbolic_trace nor torch.export captures the model",
                {"fx": traced.fx_failure, "export": traced.export_failure},
            )
        return Captured(
            model,
            args,
            self,
            traced.tracer,
            traced.graph_module,
            traced.dynamic_batch,
            traced.fx_failure,
            traced.export_failure,
        )

    def locate(self, captured: Captured, forced: str | None, model_name: str) -> Site:
        plan = locate(_graph(captured), captured.tracer, forced, model_name)
        return Site(plan.report, plan.feature_dim, plan.latent.meta["tensor_meta"].dtype, plan)

    def insert_posterior(
        self, captured: Captured, site: Site, log_sigma_init: float, device: torch.device, head_kind: HeadChoice
    ) -> tuple[fx.GraphModule, Inserted]:
        plan: Plan = site.detail
        if head_kind == "layer" and plan.layer is None:
            raise InputError(
                f"head_kind='layer' takes over the layer that makes the latent, and the latent {plan.report.node!r} "
                "is no single layer's output: pass head_kind='auto' or 'pointwise'"
            )
        if head_kind == "pointwise":
            plan = Plan(plan.report.pointwise(), plan.latent, None, (), plan.feature_dim)
        gm = _graph(captured)
        return gm, rewrite(gm, plan, log_sigma_init=log_sigma_init, device=device)

    def insert_module(
        self, captured: Captured, site: Site, module: nn.Module, device: torch.device, name: str
    ) -> tuple[fx.GraphModule, Inserted]:
        gm = _graph(captured)
        return gm, rewrite(gm, site.detail, log_sigma_init=0.0, device=device, module=module, name=name)

    def split(self, vae: fx.GraphModule, recipe: Conversion) -> tuple[nn.Module, nn.Module]:
        return cut(vae, recipe)

    def fold(self, vae: fx.GraphModule, recipe: Conversion, affine: LatentAffine) -> tuple[str | None, str | None]:
        return folding.fold(vae, recipe, affine)

    def unfold(self, vae: fx.GraphModule, info: CalibrationInfo, old: LatentAffine) -> None:
        folding.unfold(vae, info, old)

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
        folding.place(vae, recipe, affine, name, standardize=standardize, destandardize=destandardize)


def _graph(captured: Captured) -> fx.GraphModule:
    """The captured graph; a capture without one is another tier's, handed here by mistake."""
    if captured.graph_module is None:
        raise TypeError(f"the {captured.tracer!r} capture has no graph for the graph tier")
    return captured.graph_module
