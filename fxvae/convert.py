"""The one-call conversion: copy, capture, find the bottleneck, rewrite; and the recipe it leaves behind.

Ownership is decided here and only here: ``convert`` works on a copy of the model (or, with
``copy=False``, on the model itself, sharing its parameters); nothing downstream copies a parameter.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from fxvae import hooks
from fxvae.bottleneck import Bottleneck, Candidate, HeadKind, Plan, locate
from fxvae.errors import FxvaeError, InputError
from fxvae.hooks import HookPlan
from fxvae.latent import DiagonalGaussian, KLDivergence, Reparameterize
from fxvae.modules import owned_copy
from fxvae.rewrite import rewrite
from fxvae.tracing import Traced, TracerName, as_args, trace

META_KEY = "fxvae"


@dataclass(frozen=True)
class Options:
    """The choices that shape a conversion: :func:`convert`'s keyword arguments, the command line's
    options, and what a saved VAE replays.

    >>> fxvae.Options(log_sigma_init=-2.0).log_sigma_init
    -2.0
    """

    bottleneck: str | None = field(
        default=None,
        metadata={"help": "Force the bottleneck: an fx node name or a module path (inspect lists candidates)."},
    )
    log_sigma_init: float = field(
        default=0.0,
        metadata={
            "help": "Initial log sigma, the log-sigma head's bias: 0 starts at the prior's scale; a negative "
            "value keeps training-mode samples close to the AE's latent."
        },
    )


@dataclass(frozen=True)
class Conversion:
    """How a VAE was made from its AE; stored as ``vae.meta["fxvae"]`` and in files :func:`fxvae.save` writes.

    >>> vae, kl = fxvae.convert(ae, x)
    >>> recipe = fxvae.conversion(vae)
    >>> recipe.tracer, recipe.bottleneck.node, recipe.key_map
    ('fx', '_3', {'2.weight': 'mu_head.weight', '2.bias': 'mu_head.bias'})
    """

    tracer: TracerName
    bottleneck: Bottleneck
    options: Options
    mu_head: str | None
    """The module that computes mu: the AE's bottleneck layer under a new name; None for a pointwise head."""
    log_sigma_head: str
    reparameterize: str
    key_map: dict[str, str]
    """AE state-dict key -> VAE key, for the keys that moved: the bottleneck layer's, now the mu head's."""
    dropped_keys: tuple[str, ...]
    """AE state-dict keys the VAE has no place for (modules the forward never uses)."""
    new_keys: tuple[str, ...]
    """VAE state-dict keys an AE checkpoint does not provide: the log-sigma head, traced constants."""
    dynamic_batch: bool
    fx_failure: str | None
    """Why torch.fx.symbolic_trace was not used, when the tracer is "export" or "hooks"."""
    export_failure: str | None = None
    """Why torch.export was not used, when the tracer is "hooks"."""
    input_shape: tuple[int, ...] = ()
    """Per-sample shape of the data input (batch dimension dropped)."""

    @property
    def log_sigma_init(self) -> float:
        return self.options.log_sigma_init

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.bottleneck.shape

    @property
    def head_kind(self) -> HeadKind:
        return self.bottleneck.head_kind

    def to_json(self) -> str:
        """The recipe as JSON (what :func:`fxvae.save` stores in the file's metadata)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Conversion:
        """The recipe :meth:`to_json` wrote."""
        data = json.loads(text)
        found = data["bottleneck"]
        candidates = tuple(Candidate(**{**c, "shape": tuple(c["shape"])}) for c in found["candidates"])
        bottleneck = Bottleneck(
            **{
                **found,
                "shape": tuple(found["shape"]),
                "chain": tuple(found["chain"]),
                "candidates": candidates,
            }
        )
        return cls(
            **{
                **data,
                "bottleneck": bottleneck,
                "options": Options(**data["options"]),
                "dropped_keys": tuple(data["dropped_keys"]),
                "new_keys": tuple(data["new_keys"]),
                "input_shape": tuple(data["input_shape"]),
            }
        )


def convert(
    model: nn.Module,
    example_inputs: Any,
    *,
    bottleneck: str | None = None,
    log_sigma_init: float = 0.0,
    copy: bool = True,
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
    options = Options(bottleneck=bottleneck, log_sigma_init=float(log_sigma_init))
    args = as_args(example_inputs)
    owned, traced, plan = capture(model, args, options.bottleneck, copy=copy)
    device = args[0].device
    if isinstance(plan, HookPlan):
        gm, inserted = hooks.rewrite(owned, args, plan, options.log_sigma_init, device)
    else:
        gm = traced.graph_module
        inserted = rewrite(gm, plan, log_sigma_init=options.log_sigma_init, device=device)
    report = plan.report
    gm.train(model.training)
    ae_keys = model.state_dict().keys()
    vae_keys = gm.state_dict().keys()
    key_map = inserted.key_map
    gm.meta[META_KEY] = Conversion(
        tracer=traced.tracer,
        bottleneck=report,
        options=options,
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
    return gm, KLDivergence(gm.get_submodule(inserted.reparameterize))


def find_bottleneck(model: nn.Module, example_inputs: Any, *, bottleneck: str | None = None) -> Bottleneck:
    """Locate the bottleneck of ``model`` without rewriting anything (``model`` is not changed).

    ``example_inputs`` is a tensor or a tuple of positional arguments; its first argument is the data
    and dim 0 is the batch. ``bottleneck`` forces a choice by fx node name or module path.

    >>> b = fxvae.find_bottleneck(ae, x)
    >>> b.node, b.module, b.shape
    ('_3', '2', (8,))
    """
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


def unwrap(module: nn.Module) -> nn.Module:
    """The VAE inside DistributedDataParallel, DataParallel or torch.compile wrappers."""
    for attr in ("module", "_orig_mod"):
        if not isinstance(module, fx.GraphModule) and isinstance(getattr(module, attr, None), nn.Module):
            module = getattr(module, attr)
    return module


def conversion(vae: nn.Module) -> Conversion:
    """The :class:`Conversion` recipe of a VAE made by :func:`convert` (also through DDP or compile).

    >>> fxvae.conversion(vae).bottleneck.layer
    '2'
    """
    inner = unwrap(vae)
    recipe = inner.meta.get(META_KEY) if isinstance(inner, fx.GraphModule) else None
    if not isinstance(recipe, Conversion):
        raise FxvaeError(f"{type(vae).__name__} was not made by fxvae.convert; convert the autoencoder first")
    return recipe


def reparameterize_of(vae: nn.Module) -> Reparameterize:
    recipe = conversion(vae)
    try:
        module = unwrap(vae).get_submodule(recipe.reparameterize)
    except AttributeError:
        module = None
    if not isinstance(module, Reparameterize):
        raise FxvaeError(f"{recipe.reparameterize!r} is gone from {type(vae).__name__}; convert again")
    return module


def posterior(vae: nn.Module) -> DiagonalGaussian:
    """q(z | x) of the VAE's latest forward: ``.mu``, ``.log_sigma``, ``.sample()``, ``.mode()``, ``.kl()``.

    After an eval forward the log-sigma head runs now, on what that forward kept.

    >>> _ = vae.eval()(x)
    >>> post = fxvae.posterior(vae)
    >>> post.mu.shape, post.log_sigma.shape
    (torch.Size([16, 8]), torch.Size([16, 8]))
    """
    return reparameterize_of(vae).posterior()
