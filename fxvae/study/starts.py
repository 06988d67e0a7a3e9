"""Where each start of a comparison begins: the AE's VAE (warm, calibrated), the same VAE re-initialised
(scratch), or the AE itself. Every start is made with the public verbs, as a user would write it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from fxvae.convert import convert
from fxvae.errors import InputError
from fxvae.latents.gaussian import KLDivergence
from fxvae.latents.quantize import QuantizerLoss
from fxvae.latents.registry import family_of
from fxvae.modules import owned_copy
from fxvae.study.options import CompareOptions, StartName
from fxvae.study.samples import Samples

_RESET_SEED = 0x5EED0000


@dataclass
class Begun:
    """A start's model, and the extra loss term it trains with: the KL, the quantiser's term, or None (the AE)."""

    name: StartName
    model: nn.Module
    aux: KLDivergence | QuantizerLoss | None

    @property
    def is_vae(self) -> bool:
        """Whether the model is one fxvae converted (a VAE or a discrete latent), not the AE itself."""
        return self.aux is not None


def begin(
    name: StartName,
    ae: nn.Module,
    example: tuple[Any, ...],
    train: Samples,
    options: CompareOptions,
    seed: int,
    scratch: Callable[[], nn.Module] | None,
) -> Begun:
    """The model ``name`` starts from (``ae`` is never changed)."""
    if name == "ae":
        model = owned_copy(ae)
        model.train()
        return Begun(name, model, None)
    family = family_of(options.latent)
    config, reads_data = family.start(name, options.latent_config())
    source = ae if name in ("warm", "calibrated", "random") else _untrained(ae, seed, scratch)
    model, aux = convert(
        source,
        example,
        bottleneck=options.bottleneck,
        latent=config,
        likelihood=options.likelihood,
        calibration=train.with_count(len(example)) if reads_data else None,
    )
    family.restart(name, model, _RESET_SEED + seed)
    model.train()
    return Begun(name, model, aux)


def _untrained(ae: nn.Module, seed: int, scratch: Callable[[], nn.Module] | None) -> nn.Module:
    """The architecture before training: ``scratch()``, or a copy of ``ae`` with every module re-initialised."""
    if scratch is None:
        return reinitialised(ae, seed)
    model = scratch()
    if not isinstance(model, nn.Module):
        raise InputError(f"scratch= returned a {type(model).__name__}, not the untrained architecture")
    return model.to(next(ae.parameters()).device).train(ae.training)


def reinitialised(ae: nn.Module, seed: int) -> nn.Module:
    """A copy of ``ae`` with every parameter drawn afresh by its module's own ``reset_parameters``, under a
    random seed derived from ``seed``. A parametrised module (weight norm, spectral norm) is reset through its
    parametrisation; a module that owns parameters but has no ``reset_parameters`` is refused, naming it, with
    the way out: ``scratch=<a function returning the untrained architecture>``.

    >>> fresh = fxvae.study.starts.reinitialised(ae, seed=0)
    >>> torch.equal(fresh[0].weight, ae[0].weight)
    False
    """
    model = owned_copy(ae)
    with torch.random.fork_rng(devices=[]):
        # Offset from the seeds people build models under, so that an untrained AE is not redrawn as itself.
        torch.manual_seed(_RESET_SEED + seed)
        for path, module in model.named_modules():
            if isinstance(module, parametrize.ParametrizationList) or ".parametrizations." in f".{path}.":
                continue
            if next(module.parameters(recurse=False), None) is not None or parametrize.is_parametrized(module):
                _reset(module, path)
    _check_reset(model, ae)
    return model


def _reset_method(module: nn.Module, path: str) -> Callable[[], None]:
    """The module's own initialiser (``_reset_parameters`` is torch's name for it on attention layers)."""
    reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
    if reset is None:
        where = f"module {path!r}" if path else "the model itself"
        owned = ", ".join(name for name, _ in module.named_parameters(recurse=False))
        raise InputError(
            f"{where} ({type(module).__name__}) owns parameters ({owned}) but has no reset_parameters(), so the "
            "scratch start cannot re-initialise it: pass scratch=<a function returning the untrained architecture> "
            "(on the command line, --scratch package.module:factory)"
        )
    return reset


def _reset(module: nn.Module, path: str) -> None:
    with torch.no_grad():
        if not parametrize.is_parametrized(module):
            _reset_method(module, path)()
            _refresh_old_weight_norm(module)
            return
        # The layer's own class draws fresh plain tensors on a shadow of the module, which then go in through
        # the parametrisation: its right inverse sets the original tensors (weight norm's g and v, say).
        base = type(module).__bases__[0]
        shadow = object.__new__(base)
        shadow.__dict__.update(module.__dict__)
        fresh = {name: nn.Parameter(torch.empty_like(getattr(module, name))) for name in module.parametrizations}
        shadow._parameters = {**module._parameters, **fresh}
        shadow._modules = {k: v for k, v in module._modules.items() if k != "parametrizations"}
        _reset_method(shadow, path)()
        for name, value in fresh.items():
            setattr(module, name, value.detach())


def _refresh_old_weight_norm(module: nn.Module) -> None:
    """Old-style ``weight_norm`` (g and v with a pre-forward hook): g and v follow the freshly drawn weight."""
    from torch.nn.utils.weight_norm import WeightNorm

    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            weight = getattr(module, hook.name)
            getattr(module, f"{hook.name}_v").copy_(weight)
            getattr(module, f"{hook.name}_g").copy_(torch.norm_except_dim(weight, 2, hook.dim))


def _check_reset(model: nn.Module, ae: nn.Module) -> None:
    """No trained tensor may survive the reset: a varying AE tensor still there names a module that was not
    re-initialised (a raw parameter its module never draws afresh, say)."""
    for (name, fresh), trained in zip(model.named_parameters(), ae.parameters(), strict=True):
        if fresh.numel() > 1 and bool(trained.detach().std() > 0) and torch.equal(fresh.detach(), trained.detach()):
            raise InputError(
                f"{name!r} holds the autoencoder's values after the scratch reset: its module's reset_parameters() "
                "does not reach it (or the autoencoder is untrained, built under the same seed); pass "
                "scratch=<a function returning the untrained architecture>"
            )
