"""The recipe a conversion leaves on its VAE, and reading a VAE back: its recipe, its posterior.

:class:`Options` are the choices that shape a conversion; :class:`Conversion` records what was made
(``vae.meta["fxvae"]``, and the metadata of files :func:`fxvae.save` writes).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

import torch.fx as fx
from torch import nn

from fxvae.analysis.bottleneck import Bottleneck, HeadKind
from fxvae.errors import CheckpointError, FxvaeError, InputError
from fxvae.latents.gaussian import DiagonalGaussian, Reparameterize
from fxvae.latents.quantize import CodebookUpdate, Family, Quantized, Quantizer, check_levels
from fxvae.measure.likelihoods import LikelihoodName

META_KEY = "fxvae"
ModuleT = typing.TypeVar("ModuleT", bound=nn.Module)

Standardize = Literal["auto", "element", "channel", "whiten"]
"""How calibration standardises the latent: ``"element"``, a mean and spread per latent element;
``"channel"``, per channel (features last for linear latents, channels first for conv latents), shared
over positions; ``"whiten"``, a mean per channel and a ZCA whitening matrix over channels (a rotation too,
since latent dimensions correlate); ``"auto"``: element for flat latents, channel otherwise."""
Likelihood = LikelihoodName
"""What ``log_sigma_init="auto"`` assumes the reconstruction is (:data:`fxvae.likelihoods.LikelihoodName`): the
mean of a Gaussian or a Laplace (their scale is the AE's own error), Bernoulli logits or probabilities."""
LatentFamily = Literal["gaussian", "vq", "fsq"]
"""What the latent becomes: ``"gaussian"``, a VAE's posterior; ``"vq"``, the nearest of a learned codebook's
codes (a VQ-VAE); ``"fsq"``, finite scalar quantisation (docs/discrete.md)."""


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
        metadata={
            "help": "What the reconstruction is, for log_sigma_init 'auto' and a discrete latent's step-0 error: a "
            "Gaussian or Laplace mean, Bernoulli logits ('bernoulli') or probabilities ('bernoulli-probs', a decoder "
            "ending in a sigmoid)."
        },
    )
    latent: LatentFamily = field(
        default="gaussian",
        metadata={
            "help": "What the latent becomes: gaussian (a VAE), vq (a VQ-VAE; needs calibration data for its "
            "k-means codebook) or fsq (finite scalar quantisation)."
        },
    )
    codebook_size: int = field(
        default=512, metadata={"help": "VQ: the number of codes K, log2 K bits per position of the latent."}
    )
    levels: tuple[int, ...] = field(
        default=(8, 5, 5, 5),
        metadata={
            "help": "FSQ: levels per dimension, comma-separated; projections are inserted where the latent's "
            "width per position differs from their count."
        },
    )
    commitment: float = field(
        default=0.25, metadata={"help": "VQ: beta, the weight of the commitment term ||z - sg(z_q)||^2."}
    )
    codebook_update: CodebookUpdate = field(
        default="ema",
        metadata={"help": "VQ: the codebook learns by moving averages of its codes (ema) or by gradient."},
    )
    ema_decay: float = field(default=0.99, metadata={"help": "VQ: the decay of the codebook's moving averages."})
    dead_code_threshold: float = field(
        default=0.03,
        metadata={
            "help": "VQ: a code used less than this fraction of the average code's use restarts at an encoder "
            "output (0: never)."
        },
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
        for name, kind in (
            ("standardize", Standardize),
            ("likelihood", Likelihood),
            ("latent", LatentFamily),
            ("codebook_update", CodebookUpdate),
        ):
            if getattr(self, name) not in typing.get_args(kind):
                raise InputError(f"{name}={getattr(self, name)!r} must be one of {typing.get_args(kind)}")
        # JSON and command lines give lists: the recipe holds a tuple.
        object.__setattr__(self, "levels", check_levels(self.levels))
        size = self.codebook_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise InputError(f"codebook_size={size!r} must be an integer of at least 2")
        for name, (fits, expected) in _RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not fits(value):
                raise InputError(f"{name}={value!r} must be {expected}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, family in _ONLY_FOR.items():
            if self.latent != family and getattr(self, name) != defaults[name]:
                raise InputError(
                    f"{name}={getattr(self, name)!r} applies to latent={family!r} only, and this conversion makes "
                    f"latent={self.latent!r}: leave {name} out"
                )


_ONLY_FOR = {
    "log_sigma_init": "gaussian",
    "standardize": "gaussian",
    "codebook_size": "vq",
    "commitment": "vq",
    "codebook_update": "vq",
    "ema_decay": "vq",
    "dead_code_threshold": "vq",
    "levels": "fsq",
}
"""The options that shape one latent family only: set for another, they are refused."""
_RANGES: dict[str, tuple[typing.Callable[[float], bool], str]] = {
    "commitment": (lambda v: 0 <= v < math.inf, "a finite number of at least 0"),
    "ema_decay": (lambda v: 0 < v < 1, "a number between 0 and 1 (both excluded)"),
    "dead_code_threshold": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
}


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
class QuantizerInfo:
    """What a discrete conversion put at the latent (``Conversion.quantizer``) and what it cost at step 0.

    >>> vq, loss = fxvae.convert(ae, x, latent="vq", codebook_size=16, calibration=torch.randn(256, 64))
    >>> info = fxvae.conversion(vq).quantizer
    >>> info.family, info.module, info.rate_bits, info.code_shape, info.samples
    ('vq', 'quantize', 4.0, (), 256)
    >>> info.ae_mse > 0 and info.quantized_mse > 0  # reconstruction MSE on the data, before and after quantising
    True
    """

    family: Family
    module: str
    """The quantiser's name in the model (:class:`fxvae.VectorQuantize` or :class:`fxvae.FiniteScalarQuantize`)."""
    codebook_size: int
    """How many distinct codes there are: K for VQ, prod(levels) for FSQ."""
    rate_bits: float
    """Bits per position: log2 K, or the sum of log2 of the levels."""
    code_shape: tuple[int, ...]
    """Per-sample shape of the codes: the latent's without its feature dimension (``()``: one per sample)."""
    feature_dim: int
    """The latent dimension holding a code's features (-1: features last; 1: channels first)."""
    width: int
    """Features per code."""
    projected: bool = False
    """FSQ: whether projections to ``len(levels)`` dimensions and back were inserted."""
    samples: int = 0
    """Calibration samples the quantiser was fitted on (0: none, the start is not data-driven)."""
    ae_mse: float | None = None
    """The AE's mean squared reconstruction error on the calibration data, in data space (for
    ``likelihood="bernoulli"``, of the pixel probabilities the logits stand for)."""
    quantized_mse: float | None = None
    """The quantised model's, at step 0 (before any training), on the same data."""
    fit: Literal["kmeans", "data", "none"] | None = None
    """How the start was fitted to the calibration data: ``"kmeans"``, the VQ codebook at the k-means centres;
    ``"data"``, FSQ's projections at the principal components and its ranges the data's; ``"none"``, FSQ's start
    without data, kept because it measured a lower reconstruction error on the calibration data than the fit
    (see ``unfitted_mse``); None without calibration data."""
    unfitted_mse: float | None = None
    """FSQ: the reconstruction error of the start without data on the calibration data, which the fit is kept
    only if it beats."""


@dataclass(frozen=True)
class Conversion:
    """How a VAE was made from its AE; stored as ``vae.meta["fxvae"]`` and in files :func:`fxvae.save` writes.

    >>> vae, kl = fxvae.convert(ae, x)
    >>> recipe = fxvae.conversion(vae)
    >>> recipe.tracer, recipe.bottleneck.node, recipe.key_map
    ('fx', '_3', {'2.weight': 'mu_head.weight', '2.bias': 'mu_head.bias'})
    """

    tracer: str
    """The capture tier's tracer (``"fx"``, ``"export"``, ``"hooks"``, or a registered tier's):
    :func:`fxvae.capture.tiers.tier_of` gives the tier that splits and calibrates this VAE."""
    bottleneck: Bottleneck
    options: Options
    mu_head: str | None
    """The module that computes mu: the AE's bottleneck layer under a new name; None for a pointwise head."""
    log_sigma_head: str | None
    """The log-sigma head; None for a discrete latent."""
    reparameterize: str | None
    """The :class:`fxvae.Reparameterize` at the latent; None for a discrete latent (see ``quantizer``)."""
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
    quantizer: QuantizerInfo | None = None
    """The quantiser at a discrete latent (``latent="vq"`` or ``"fsq"``); None for a Gaussian one."""

    @property
    def latent_module(self) -> str:
        """The module the rewrite inserted at the latent: the reparameterisation, or the quantiser."""
        return self.quantizer.module if self.quantizer is not None else str(self.reparameterize)

    @property
    def log_sigma_init(self) -> float | Literal["auto"]:
        return self.options.log_sigma_init

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.bottleneck.shape

    @property
    def head_kind(self) -> HeadKind:
        """How the log-sigma head was made (``"layer"`` or ``"pointwise"``); a discrete latent has no head.

        >>> vq, _ = fxvae.convert(ae, x, latent="fsq", levels=(5, 5, 5))
        >>> fxvae.conversion(vq).head_kind  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fxvae.errors.InputError: head_kind describes a Gaussian VAE's log-sigma head, and this conversion ...
        """
        if self.quantizer is not None:
            raise InputError(
                f"head_kind describes a Gaussian VAE's log-sigma head, and this conversion made latent="
                f"{self.quantizer.family!r}, which has none: read .quantizer (its module {self.quantizer.module!r}), "
                "or .bottleneck.head_kind for the head a Gaussian conversion would make"
            )
        return self.bottleneck.head_kind

    def to_json(self) -> str:
        """The recipe as JSON (what :func:`fxvae.save` stores in the file's metadata)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Conversion:
        """The recipe :meth:`to_json` wrote. Every field is checked against its type, nested records included:
        a damaged recipe raises :class:`~fxvae.CheckpointError` naming the field, never another error.

        >>> text = fxvae.conversion(vae).to_json()
        >>> fxvae.Conversion.from_json(text) == fxvae.conversion(vae)
        True
        >>> fxvae.Conversion.from_json(text.replace('"width": 8,', '"width": "8",', 1))
        Traceback (most recent call last):
        fxvae.errors.CheckpointError: the recipe's field bottleneck.width is '8', where an int belongs
        """
        try:
            data = json.loads(text)
        except ValueError as err:
            raise CheckpointError(f"the recipe is not JSON ({err})") from err
        return _decode(cls, data, "")


def _decode(hint: typing.Any, value: typing.Any, where: str) -> typing.Any:
    """``value`` read from JSON as the type ``hint`` says (lists become tuples, dicts dataclasses), or a
    CheckpointError naming the field ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _decode_record(typing.cast(type, hint), value, where)
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif origin is typing.Union or isinstance(hint, types.UnionType):
        errors = []
        for arm in args:
            try:
                return _decode(arm, value, where)
            except CheckpointError as err:
                errors.append(err)
        values = [arm for arm in args if arm is not type(None)]
        if len(values) == 1 and value is not None:  # an optional field: the value's own fault is the news
            raise errors[args.index(values[0])]
    elif origin is tuple:
        if isinstance(value, list):
            items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
            if len(items) == len(value):
                return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(items, value, strict=True)))
    elif origin is dict:
        if isinstance(value, dict):
            return {_decode(args[0], k, where): _decode(args[1], v, f"{where}[{k!r}]") for k, v in value.items()}
    elif hint is type(None):
        if value is None:
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise CheckpointError(
        f"the recipe's field {where or 'top level'} is {_shown(value)}, where {_expected(hint)} belongs"
    )


def _decode_record(cls: type, value: typing.Any, where: str) -> typing.Any:
    """A dataclass from its JSON object: every field known, the required ones present, each of its type."""
    if not isinstance(value, dict):
        raise CheckpointError(f"the recipe's field {where or 'top level'} is {_shown(value)}, where a record belongs")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(value) - set(fields))
    missing = [n for n, f in fields.items() if n not in value and f.default is dataclasses.MISSING]
    if unknown or missing:
        raise CheckpointError(
            f"the recipe's {where or 'top level'} has unknown fields {unknown} and lacks fields {missing}"
        )
    decoded = {name: _decode(hints[name], v, f"{where}.{name}".lstrip(".")) for name, v in value.items()}
    try:
        return cls(**decoded)
    except InputError as err:  # a value of the right type that Options refuses
        raise CheckpointError(f"the recipe's {where or 'top level'} holds a value fxvae refuses: {err}") from err


def _shown(value: typing.Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _expected(hint: typing.Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if origin is typing.Union or isinstance(hint, types.UnionType):
        return " or ".join(_expected(a) for a in args)
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "an object of strings"
    if hint is type(None):
        return "null"
    name = getattr(hint, "__name__", str(hint))
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


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


def record(vae: nn.Module, recipe: Conversion) -> None:
    """Leave ``recipe`` on ``vae`` (the one place a VAE's recipe is written; :func:`conversion` reads it)."""
    unwrap(vae).meta[META_KEY] = recipe


def reparameterize_of(vae: nn.Module, what: str = "fxvae.posterior") -> Reparameterize:
    """The reparameterisation of a Gaussian VAE; ``what`` names the call that needs it, for a discrete model."""
    recipe = conversion(vae)
    if recipe.quantizer is not None:
        raise FxvaeError(
            f"{what} needs a Gaussian latent, and {type(vae).__name__} has a discrete one (latent="
            f"{recipe.quantizer.family!r}): fxvae.quantized(model) gives the latest forward's codes and codebook "
            "use, fxvae.tokenize(model, x) the codes of inputs, fxvae.detokenize(model, codes) their decoding"
        )
    return _inserted(vae, str(recipe.reparameterize), Reparameterize)


def _inserted(vae: nn.Module, name: str, kind: type[ModuleT]) -> ModuleT:
    """The module the rewrite inserted under ``name``, checked to be still there."""
    try:
        module = unwrap(vae).get_submodule(name)
    except AttributeError:
        module = None
    if not isinstance(module, kind):
        raise FxvaeError(f"{name!r} is gone from {type(vae).__name__}; convert again")
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


def quantizer_of(vae: nn.Module, what: str) -> Quantizer:
    """The quantiser of a discrete model; ``what`` names the call that needs it, for a Gaussian VAE."""
    recipe = conversion(vae)
    if recipe.quantizer is None:
        raise FxvaeError(
            f"{what} needs a discrete latent, and {type(vae).__name__} has a Gaussian one: convert with "
            "latent='vq' or latent='fsq' (fxvae.posterior reads a Gaussian VAE's latent)"
        )
    return _inserted(vae, recipe.quantizer.module, Quantizer)


def quantized(vae: nn.Module) -> Quantized:
    """The quantised latent of a discrete model's latest forward: ``.latent``, ``.codes``, ``.perplexity``,
    ``.used`` (the fraction of the codebook used).

    >>> vq, loss = fxvae.convert(ae, x, latent="fsq", levels=(5, 5, 5), calibration=torch.randn(64, 64))
    >>> _ = vq.eval()(x)
    >>> step = fxvae.quantized(vq)
    >>> step.codes.shape, step.latent.shape, 0 < step.used <= 1
    (torch.Size([16]), torch.Size([16, 8]), True)
    """
    return quantizer_of(vae, "fxvae.quantized").quantized()
