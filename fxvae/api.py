"""The one-call conversion: trace, find the bottleneck, rewrite, and hand back the VAE with its KL."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from fxvae.bottleneck import Bottleneck, locate
from fxvae.errors import CheckpointError, FxvaeError
from fxvae.latent import DiagonalGaussian, KLDivergence, Reparameterize, latest_posterior
from fxvae.rewrite import rewrite
from fxvae.tracing import TracerName, as_args, trace

META_KEY = "fxvae"


@dataclass(frozen=True)
class Conversion:
    """How a VAE was made from its AE; stored as ``vae.meta["fxvae"]``.

    >>> vae.meta["fxvae"].tracer, vae.meta["fxvae"].bottleneck.node, vae.meta["fxvae"].key_map
    ('fx', 'sigmoid', {'enc.2.weight': 'mu_head.weight', 'enc.2.bias': 'mu_head.bias'})
    """

    tracer: TracerName
    bottleneck: Bottleneck
    log_sigma_init: float
    mu_head: str
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
    """Why torch.fx.symbolic_trace was not used, when the tracer is "export"."""

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.bottleneck.shape


def convert(
    model: nn.Module,
    example_inputs: Any,
    *,
    bottleneck: str | None = None,
    log_sigma_init: float = 0.0,
    copy: bool = True,
) -> tuple[fx.GraphModule, KLDivergence]:
    """Turn a trained autoencoder into a VAE with the same inputs and outputs.

    The bottleneck is found automatically (see :func:`fxvae.find_bottleneck`); ``bottleneck=`` forces one
    by fx node name or module path. Its layer is cloned into a mu head, a log-sigma head of the same kind
    and shapes starts with weight 0 and bias ``log_sigma_init``, and z = mu + exp(log_sigma) * eps feeds
    the untouched decoder. In eval mode z = mu, so the VAE returns exactly what ``model`` returns.

    ``log_sigma_init`` trades the two ends of the start: 0 (sigma = 1) starts at the prior's scale,
    so the initial KL is only 1/2 * sum(mu^2), but training-mode samples are far from the AE's latents;
    a negative value sigma_0 << 1 keeps training mode AE-like from the first step at the cost of about
    -log(sigma_0) - 1/2 extra nats of KL per latent dimension.

    ``copy=False`` lets the VAE share the AE's parameters (mu head included) to save memory: training
    the VAE then trains the AE. With the default, the VAE owns its parameters; ``model`` is never changed.

    Returns ``(vae, kl)``: ``vae`` is a ``torch.fx.GraphModule`` in ``model``'s train/eval mode, and
    ``kl()`` is the KL(q(z|x) || N(0, I)) of its latest forward, summed over latent dimensions and
    averaged over the batch (``kl(mu, log_sigma)`` for given tensors).

    >>> vae, kl = fxvae.convert(ae, torch.randn(16, 1, 28, 28))
    >>> vae.train()
    >>> loss = F.mse_loss(vae(x), x) + kl()
    """
    args = as_args(example_inputs)
    traced = trace(_owned_copy(model) if copy else model, args)
    gm = traced.graph_module
    found = locate(gm, args, traced.tracer, bottleneck)
    done = rewrite(gm, found, log_sigma_init=log_sigma_init, copy_weights=copy)
    gm.train(model.training)
    ae_keys = model.state_dict().keys()
    vae_keys = gm.state_dict().keys()
    gm.meta[META_KEY] = Conversion(
        tracer=traced.tracer,
        bottleneck=found,
        log_sigma_init=float(log_sigma_init),
        mu_head=done.mu_head,
        log_sigma_head=done.log_sigma_head,
        reparameterize=done.reparameterize,
        key_map=done.key_map,
        dropped_keys=tuple(k for k in ae_keys if k not in vae_keys and k not in done.key_map),
        new_keys=tuple(k for k in vae_keys if k not in ae_keys and k not in done.key_map.values()),
        dynamic_batch=traced.dynamic_batch,
        fx_failure=traced.fx_failure,
    )
    return gm, KLDivergence(gm.get_submodule(done.reparameterize))


def _owned_copy(model: nn.Module) -> nn.Module:
    """A deep copy that owns its parameters and buffers (tied ones stay tied to each other).

    Copying the model before tracing is several times cheaper than copying the traced GraphModule,
    which regenerates its code.
    """
    owned = copy.deepcopy(model)
    for p in owned.parameters():
        p.grad = None
    return owned


def conversion(vae: fx.GraphModule) -> Conversion:
    """The :class:`Conversion` recipe of a VAE made by :func:`convert`.

    >>> fxvae.conversion(vae).bottleneck.layer
    'enc.2'
    """
    # DistributedDataParallel, DataParallel and torch.compile wrap the VAE; their recipe is inside.
    for attr in ("module", "_orig_mod"):
        if not isinstance(vae, fx.GraphModule) and isinstance(getattr(vae, attr, None), nn.Module):
            vae = getattr(vae, attr)
    recipe = vae.meta.get(META_KEY) if isinstance(vae, fx.GraphModule) else None
    if not isinstance(recipe, Conversion):
        raise FxvaeError(f"{type(vae).__name__} was not made by fxvae.convert; convert the autoencoder first")
    return recipe


def posterior(vae: fx.GraphModule) -> DiagonalGaussian:
    """q(z | x) of the VAE's latest forward: ``.mu``, ``.log_sigma``, ``.sample()``, ``.mode()``, ``.kl()``.

    >>> vae(x)
    >>> post = fxvae.posterior(vae)
    >>> post.mu.shape, post.kl()
    """
    recipe = conversion(vae)
    module = next((m for m in vae.modules() if isinstance(m, Reparameterize)), None)
    if module is None:
        raise FxvaeError(f"{recipe.reparameterize!r} is gone from {type(vae).__name__}; convert again")
    return latest_posterior(module)


def load_ae_state_dict(vae: fx.GraphModule, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load an autoencoder's state dict (e.g. a third-party checkpoint) into a VAE converted from it.

    Keys map one to one, except the bottleneck layer's, which move to the mu head
    (``Conversion.key_map``, e.g. ``enc.2.weight -> mu_head.weight``). The log-sigma head keeps its
    initialisation. Missing or unexpected keys raise a :class:`CheckpointError` naming them.

    >>> fxvae.load_ae_state_dict(vae, safetensors.torch.load_file("ae.safetensors"))
    """
    recipe = conversion(vae)
    mapped = {recipe.key_map.get(k, k): v for k, v in state_dict.items() if k not in recipe.dropped_keys}
    expected = vae.state_dict()
    missing = [k for k in expected if k not in mapped and k not in recipe.new_keys]
    unexpected = [k for k in mapped if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"the state dict does not fit {type(vae).__name__}: missing keys {missing[:10]}, "
            f"unexpected keys {unexpected[:10]}; load a checkpoint of the autoencoder that was converted"
        )
    mismatched = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in mapped.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise CheckpointError(
            f"shape mismatch for {mismatched[:10]}; is this checkpoint for another model size?"
        )
    vae.load_state_dict(mapped, strict=False)
