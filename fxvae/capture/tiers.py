"""The registered capture tiers, and capturing a model with the first that takes it.

:data:`TIERS` is tried in order: the graph tier (torch.fx, then torch.export), then the hooks tier, which
takes every model that runs. A VAE's recipe names its tracer; :func:`tier_of` gives the tier that owns it.
Adding a tier is one module with a :class:`~fxvae.capture.tier.Tier` subclass and one :func:`register_tier`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from fxvae.capture.graph_tier import GraphTier
from fxvae.capture.hooks_tier import HooksTier
from fxvae.capture.tier import Captured, Site, Tier, TierRefused
from fxvae.errors import InputError, TraceError
from fxvae.modules import owned_copy
from fxvae.recipe import META_KEY, Conversion, unwrap

TIERS: list[Tier] = [GraphTier(), HooksTier()]
"""The tiers :func:`capture` tries, in order."""


def register_tier(tier: Tier, *, first: bool = False) -> None:
    """Add ``tier``: tried before every other tier with ``first=True``, else after them (the hooks tier takes
    every model that runs, so a tier after it only serves the VAEs its tracers name).

    >>> from fxvae.capture.graph_tier import GraphTier
    >>> class Mine(GraphTier):
    ...     tracers = ("mine",)
    >>> mine = Mine()
    >>> register_tier(mine)
    >>> tier_of("mine") is mine
    True
    >>> unregister_tier(mine)
    """
    taken = sorted(set(tier.tracers) & set(known_tracers()))
    if taken:
        raise InputError(f"the tracer names {taken} already belong to a registered tier: give {tier!r} its own names")
    if first:
        TIERS.insert(0, tier)
    else:
        TIERS.append(tier)


def unregister_tier(tier: Tier) -> None:
    """Remove a tier :func:`register_tier` added (VAEs whose recipe names its tracers can no longer be split)."""
    TIERS.remove(tier)


def known_tracers() -> list[str]:
    """The tracer names the registered tiers own, in the order they are tried.

    >>> known_tracers()
    ['fx', 'export', 'hooks']
    """
    return [name for tier in TIERS for name in tier.tracers]


def tier_of(tracer: str) -> Tier:
    """The registered tier that owns ``tracer`` (a :attr:`fxvae.Conversion.tracer`).

    >>> tier_of(fxvae.conversion(vae).tracer).tracers
    ('fx', 'export')
    """
    for tier in TIERS:
        if tracer in tier.tracers:
            return tier
    raise InputError(
        f"no registered capture tier owns the tracer {tracer!r} (known tracers: {', '.join(known_tracers())}); "
        "register the tier that made this VAE (fxvae.capture.tiers.register_tier) or convert the autoencoder again"
    )


def capture(model: nn.Module, args: tuple[Any, ...], forced: str | None, *, copy: bool) -> tuple[Captured, Site]:
    """Check the inputs, capture the model (a copy, unless ``copy=False``) with the first tier that takes
    it, and find its bottleneck (``forced``: a node name or module path the user chose).

    >>> captured, site = capture(ae, (x,), None, copy=True)
    >>> captured.tracer, site.report.shape
    ('fx', (8,))
    """
    check_inputs(model, args)
    owned = owned_copy(model) if copy else model
    failures: dict[str, str | None] = {}
    for tier in TIERS:
        try:
            captured = tier.capture(owned, args)
        except TierRefused as refused:
            failures.update(refused.failures)
            continue
        # The recipe says why the graph tracers were passed over, whichever tier captured in the end.
        captured = dataclasses.replace(
            captured,
            fx_failure=captured.fx_failure or failures.get("fx"),
            export_failure=captured.export_failure or failures.get("export"),
        )
        return captured, captured.tier.locate(captured, forced, type(model).__name__)
    reasons = "; ".join(f"{name}: {why}" for name, why in failures.items())
    raise TraceError(f"no capture tier takes {type(model).__name__} ({reasons}); register a tier that can")


def check_inputs(model: nn.Module, args: tuple[Any, ...]) -> None:
    """Refuse, naming the fix, what cannot be converted. NaN or inf in the example are refused rather
    than warned about: the hooks tier and calibration compare and average values, which they poison."""
    if not isinstance(model, nn.Module):
        raise InputError(
            f"the model is a {type(model).__name__}, not a torch.nn.Module: pass the autoencoder module itself"
        )
    name = type(model).__name__
    inner = unwrap(model)
    if isinstance(inner, fx.GraphModule) and isinstance(inner.meta.get(META_KEY), Conversion):
        raise InputError(
            f"{name} is already a VAE made by fxvae.convert; convert the original autoencoder "
            "(fxvae.load_ae_state_dict loads new autoencoder weights into this VAE)"
        )
    if next(model.parameters(), None) is None:
        raise InputError(f"{name} has no parameters: there is no trained autoencoder to convert")
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor):
        raise InputError(
            f"the first example input of {name} is a {type(x).__name__}, not a tensor: pass the data the "
            "model reconstructs first (other inputs, such as a label, after it)"
        )
    if x.dim() < 2:
        raise InputError(
            f"the data input has shape {list(x.shape)}: the example needs a batch dimension first, e.g. "
            f"x.unsqueeze(0) of shape {[1, *x.shape]}"
        )
    if x.shape[0] == 0:
        raise InputError(f"the example batch of shape {list(x.shape)} is empty: pass at least one sample")
    if x.is_floating_point() and x.device.type != "meta" and not torch.isfinite(x).all():
        raise InputError("the example batch holds NaN or inf values: pass finite data (a real batch)")
