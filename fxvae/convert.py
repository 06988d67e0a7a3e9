"""The one-call conversion: check, copy, capture, find the bottleneck, rewrite, calibrate.

Ownership is decided here and only here: ``convert`` works on a copy of the model (or, with
``copy=False``, on the model itself, sharing its parameters); nothing downstream copies a parameter.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.fx as fx
from torch import nn

from fxvae import hooks
from fxvae.bottleneck import Bottleneck, Plan, locate
from fxvae.calibration import calibrate
from fxvae.errors import InputError
from fxvae.hooks import HookPlan
from fxvae.latent import KLDivergence
from fxvae.modules import owned_copy
from fxvae.recipe import META_KEY, Conversion, Likelihood, Options, Standardize, unwrap
from fxvae.rewrite import rewrite
from fxvae.tracing import Traced, as_args, conversion_scope, trace


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
) -> tuple[fx.GraphModule, KLDivergence]:
    """Turn a trained autoencoder into a VAE with the same inputs and outputs.

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
    decoder reading the inverse map, and eval outputs stay the AE's; ``log_sigma_init="auto"`` then sets
    each dimension's start from the decoder's sensitivity under ``likelihood`` (see :func:`calibrate`).

    ``copy=False`` lets the VAE share the AE's parameters (mu head included) to save memory: training
    the VAE then trains the AE. With the default, the VAE owns its parameters; ``model`` is never changed.

    Returns ``(vae, kl)``: ``vae`` is a ``torch.fx.GraphModule`` in ``model``'s train/eval mode, and
    ``kl()`` is the KL(q(z|x) || N(0, I)) of its latest forward, summed over latent dimensions and
    averaged over the batch (``kl(mu, log_sigma)`` for given tensors).

    >>> vae, kl = fxvae.convert(ae, x)
    >>> loss = F.mse_loss(vae.train()(x), x) + kl()
    >>> torch.equal(vae.eval()(x), ae(x))
    True
    """
    options = Options(bottleneck, log_sigma_init, standardize, likelihood)
    if log_sigma_init == "auto" and calibration is None:
        raise InputError("log_sigma_init='auto' sets log sigma from data: pass calibration=<a batch or a DataLoader>")
    with conversion_scope():
        return _convert(model, as_args(example_inputs), options, copy, calibration)


def _convert(
    model: nn.Module, args: tuple[Any, ...], options: Options, copy: bool, calibration: Any
) -> tuple[fx.GraphModule, KLDivergence]:
    log_sigma_init = options.log_sigma_init
    start = 0.0 if log_sigma_init == "auto" else float(log_sigma_init)
    owned, traced, plan = capture(model, args, options.bottleneck, copy=copy)
    device = args[0].device
    if isinstance(plan, HookPlan):
        gm, inserted = hooks.rewrite(owned, args, plan, start, device)
    else:
        gm = traced.graph_module
        inserted = rewrite(gm, plan, log_sigma_init=start, device=device)
    gm.train(model.training)
    ae_keys = model.state_dict().keys()
    vae_keys = gm.state_dict().keys()
    key_map = inserted.key_map
    gm.meta[META_KEY] = Conversion(
        tracer=traced.tracer,
        bottleneck=plan.report,
        options=dataclasses.replace(options, log_sigma_init=start),
        mu_head=inserted.mu_head,
        log_sigma_head=inserted.log_sigma_head,
        reparameterize=inserted.reparameterize,
        key_map=key_map,
        dropped_keys=tuple(k for k in ae_keys if k not in vae_keys and k not in key_map),
        new_keys=tuple(k for k in vae_keys if k not in ae_keys and k not in key_map.values()),
        dynamic_batch=traced.dynamic_batch,
        fx_failure=traced.fx_failure,
        export_failure=traced.export_failure,
        input_shape=tuple(args[0].shape[1:]),
    )
    kl = KLDivergence(gm.get_submodule(inserted.reparameterize))
    if calibration is not None:
        calibrate(
            gm,
            calibration,
            standardize=options.standardize,
            log_sigma_init=log_sigma_init,
            likelihood=options.likelihood,
        )
    return gm, kl


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
        return capture(model, as_args(example_inputs), bottleneck, copy=True)[2].report


def capture(
    model: nn.Module, args: tuple[Any, ...], forced: str | None, *, copy: bool
) -> tuple[nn.Module, Traced, Plan | HookPlan]:
    """Check the inputs, capture the model (a copy, unless ``copy=False``) and find its bottleneck."""
    check_inputs(model, args)
    owned = owned_copy(model) if copy else model
    traced = trace(owned, args)
    if traced.graph_module is None:
        return owned, traced, hooks.locate(owned, args, forced)
    return owned, traced, locate(traced.graph_module, traced.tracer, forced, type(model).__name__)


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
