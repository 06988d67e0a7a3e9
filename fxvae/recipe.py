"""The recipe a conversion leaves on its VAE, and reading a VAE back: its recipe, its posterior.

:class:`Options` are the choices that shape a conversion; :class:`Conversion` records what was made
(``vae.meta["fxvae"]``, and the metadata of files :func:`fxvae.save` writes).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Literal

import torch.fx as fx
from torch import nn

from fxvae.bottleneck import Bottleneck, Candidate, HeadKind
from fxvae.errors import FxvaeError, InputError
from fxvae.latent import DiagonalGaussian, Reparameterize
from fxvae.tracing import TracerName

META_KEY = "fxvae"

Standardize = Literal["auto", "element", "channel", "whiten"]
"""How calibration standardises the latent: ``"element"``, a mean and spread per latent element;
``"channel"``, per channel (features last for linear latents, channels first for conv latents), shared
over positions; ``"whiten"``, a mean per channel and a ZCA whitening matrix over channels (a rotation too,
since latent dimensions correlate); ``"auto"``: element for flat latents, channel otherwise."""
Likelihood = Literal["gaussian", "bernoulli"]
"""What ``log_sigma_init="auto"`` assumes the reconstruction is: the mean of a Gaussian (its noise is the
AE's own squared error) or the logits of a Bernoulli."""


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
    log_sigma_init: float | Literal["auto"] = field(
        default=0.0,
        metadata={
            "help": "Initial log sigma, the log-sigma head's bias: 0 starts at the prior's scale; a negative "
            "value keeps training-mode samples close to the AE's latent; 'auto' (with calibration data) sets "
            "each dimension from the decoder's sensitivity."
        },
    )
    standardize: Standardize = field(
        default="auto",
        metadata={"help": "With calibration data: standardise the latent per element, channel, or whiten it."},
    )
    likelihood: Likelihood = field(
        default="gaussian",
        metadata={"help": "For log_sigma_init 'auto': the reconstruction is a Gaussian mean or Bernoulli logits."},
    )

    def __post_init__(self) -> None:
        if self.bottleneck is not None and not isinstance(self.bottleneck, str):
            raise InputError(
                f"bottleneck={self.bottleneck!r} must be a node name or module path (a string); "
                "fxvae.find_bottleneck lists the candidates"
            )
        start = self.log_sigma_init
        if start != "auto" and not (isinstance(start, (int, float)) and math.isfinite(start)):
            raise InputError(f"log_sigma_init={start!r} must be a finite number or 'auto'")
        for name, kind in (("standardize", Standardize), ("likelihood", Likelihood)):
            if getattr(self, name) not in typing.get_args(kind):
                raise InputError(f"{name}={getattr(self, name)!r} must be one of {typing.get_args(kind)}")


@dataclass(frozen=True)
class CalibrationInfo:
    """What calibration did to a VAE (``Conversion.calibration``); the constants are the VAE's buffers.

    >>> vae, kl = fxvae.convert(ae, x, calibration=torch.randn(64, 64))
    >>> info = fxvae.conversion(vae).calibration
    >>> info.standardize, info.samples, info.folded_mu, info.folded_decoder
    ('element', 64, None, '4')
    """

    standardize: Literal["element", "channel", "whiten"]
    axis: int
    """The latent axis channel and whitening maps act along (-1: features last, 1: channels first)."""
    samples: int
    """How many samples the statistics came from."""
    module: str
    """The module holding the map's constants (and running it where it is not folded)."""
    folded_mu: str | None
    """The mu head the standardising map is folded into, or None (the calibration module runs it)."""
    folded_decoder: str | None
    """The decoder layer the inverse map is folded into, or None (the calibration module runs it)."""


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
    calibration: CalibrationInfo | None = None
    """How the latent was standardised with the user's data (see :func:`fxvae.calibrate`), if it was."""

    @property
    def log_sigma_init(self) -> float | Literal["auto"]:
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
                "calibration": CalibrationInfo(**data["calibration"]) if data.get("calibration") else None,
            }
        )


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
