"""The recipe a conversion leaves on its VAE, and reading a VAE back: its recipe, its posterior.

:class:`Options` are the choices that shape a conversion; :class:`Conversion` records what was made
(``vae.meta["fxvae"]``, and the metadata of files :func:`fxvae.save` writes).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

import torch.fx as fx
from torch import nn

from fxvae.analysis.bottleneck import Bottleneck, HeadKind
from fxvae.errors import CheckpointError, FxvaeError, InputError
from fxvae.latents.configs import CONFIGS, Gaussian, LatentConfig, config_of
from fxvae.measure.likelihoods import LikelihoodName

META_KEY = "fxvae"
ModuleT = typing.TypeVar("ModuleT", bound=nn.Module)

Likelihood = LikelihoodName
"""What ``log_sigma_init="auto"`` assumes the reconstruction is (:data:`fxvae.measure.likelihoods.LikelihoodName`): the
mean of a Gaussian or a Laplace (their scale is the AE's own error), Bernoulli logits or probabilities."""
QuantizerFamily = Literal["vq", "fsq"]


@dataclass(frozen=True)
class Options:
    """The choices that shape a conversion: what :func:`fxvae.convert` was asked for, what a saved VAE replays.
    ``convert(ae, x, options=fxvae.conversion(vae).options)`` makes the same choices again.

    >>> fxvae.Options(latent=fxvae.VQ(codebook_size=64)).latent.codebook_size
    64
    """

    bottleneck: str | None = field(
        default=None,
        metadata={"help": "Force the bottleneck: an fx node name or a module path (inspect lists candidates)."},
    )
    likelihood: Likelihood = field(
        default="gaussian",
        metadata={
            "help": "What the reconstruction is, for log_sigma_init 'auto' and a discrete latent's step-0 error: a "
            "Gaussian or Laplace mean, Bernoulli logits ('bernoulli') or probabilities ('bernoulli-probs', a decoder "
            "ending in a sigmoid)."
        },
    )
    latent: LatentConfig = field(
        default=Gaussian(),
        metadata={"help": "What the latent becomes, with its own choices: fxvae.Gaussian, fxvae.VQ or fxvae.FSQ."},
    )

    def __post_init__(self) -> None:
        if self.bottleneck is not None and not isinstance(self.bottleneck, str):
            raise InputError(
                f"bottleneck={self.bottleneck!r} must be a node name or module path (a string); "
                "fxvae.find_bottleneck lists the candidates"
            )
        if self.likelihood not in typing.get_args(Likelihood):
            raise InputError(f"likelihood={self.likelihood!r} must be one of {typing.get_args(Likelihood)}")
        object.__setattr__(self, "latent", config_of(self.latent))

    def to_record(self) -> dict[str, typing.Any]:
        """The options as a saved recipe holds them: flat, the latent by its family's name beside its fields."""
        return {
            "bottleneck": self.bottleneck,
            "likelihood": self.likelihood,
            "latent": self.latent.family,
            **self.latent.to_record(),
        }

    @classmethod
    def from_record(cls, value: typing.Any, where: str) -> Options:
        """The options :meth:`to_record` wrote, or a file's of an earlier format, where every family's fields
        were written: another family's field is accepted at its default only."""
        if not isinstance(value, dict):
            raise CheckpointError(f"the recipe's field {where} is {_shown(value)}, where a record belongs")
        family = value.get("latent", "gaussian")
        if family not in CONFIGS:
            raise CheckpointError(
                f"the recipe's field {where}.latent is {_shown(family)}, where one of {list(CONFIGS)} belongs"
            )
        config = CONFIGS[family]
        own = {name: value[name] for name in config.record_fields() if name in value}
        others = {
            name: v
            for name, v in value.items()
            if name not in own and name not in ("bottleneck", "likelihood", "latent")
        }
        defaults = {k: v for c in CONFIGS.values() if c is not config for k, v in c().to_record().items()}
        wrong = sorted(name for name, v in others.items() if name not in defaults or _as_saved(defaults[name]) != v)
        if wrong:
            raise CheckpointError(f"the recipe's {where} has fields {wrong} that latent={family!r} does not take")
        try:
            return cls(
                bottleneck=_decode(str | None, value.get("bottleneck"), f"{where}.bottleneck"),
                likelihood=_decode(Likelihood, value.get("likelihood", "gaussian"), f"{where}.likelihood"),
                latent=config.from_record(own),
            )
        except InputError as err:
            raise CheckpointError(f"the recipe's {where} holds a value fxvae refuses: {err}") from err


def _as_saved(value: typing.Any) -> typing.Any:
    """A value as JSON gives it back (tuples as lists)."""
    return json.loads(json.dumps(value))


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

    >>> vq, loss = fxvae.convert(ae, x, latent=fxvae.VQ(codebook_size=16), calibration=torch.randn(256, 64))
    >>> info = fxvae.conversion(vq).quantizer
    >>> info.family, info.module, info.rate_bits, info.code_shape, info.samples
    ('vq', 'quantize', 4.0, (), 256)
    >>> info.ae_mse > 0 and info.quantized_mse > 0  # reconstruction MSE on the data, before and after quantising
    True
    """

    family: QuantizerFamily
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
    latent_module: str = ""
    """The module the rewrite inserted at the latent: the reparameterisation, the quantiser, another family's."""

    @property
    def log_sigma_init(self) -> float | Literal["auto"]:
        """The Gaussian latent's log-sigma start (:attr:`fxvae.Gaussian.log_sigma_init`)."""
        latent = self.options.latent
        if not isinstance(latent, Gaussian):
            raise InputError(
                f"log_sigma_init is a Gaussian latent's, and this conversion made latent={latent.family!r}: "
                "read .options.latent"
            )
        return latent.log_sigma_init

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.bottleneck.shape

    @property
    def head_kind(self) -> HeadKind:
        """How the log-sigma head was made (``"layer"`` or ``"pointwise"``); a discrete latent has no head.

        >>> vq, _ = fxvae.convert(ae, x, latent=fxvae.FSQ(levels=(5, 5, 5)))
        >>> fxvae.conversion(vq).head_kind  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        fxvae.errors.InputError: head_kind describes a Gaussian VAE's log-sigma head, and this conversion ...
        """
        if self.log_sigma_head is None:
            raise InputError(
                f"head_kind describes a Gaussian VAE's log-sigma head, and this conversion made latent="
                f"{self.options.latent.family!r}, which has none: read .latent_module ({self.latent_module!r}), "
                "or .bottleneck.head_kind for the head a Gaussian conversion would make"
            )
        return self.bottleneck.head_kind

    def to_json(self) -> str:
        """The recipe as JSON (what :func:`fxvae.save` stores in the file's metadata)."""
        data = dataclasses.asdict(self)
        data["options"] = self.options.to_record()
        return json.dumps(data)

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
        if isinstance(data, dict) and "latent_module" not in data:  # written before the field was
            quantizer = data.get("quantizer")
            data["latent_module"] = (
                quantizer.get("module") if isinstance(quantizer, dict) else data.get("reparameterize")
            )
        return _decode(cls, data, "")


def _decode(hint: typing.Any, value: typing.Any, where: str) -> typing.Any:
    """``value`` read from JSON as the type ``hint`` says (lists become tuples, dicts dataclasses), or a
    CheckpointError naming the field ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Options:
        return Options.from_record(value, where or "options")
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


def inserted(vae: nn.Module, name: str, kind: type[ModuleT]) -> ModuleT:
    """The module the rewrite inserted under ``name``, checked to be still there."""
    try:
        module = unwrap(vae).get_submodule(name)
    except AttributeError:
        module = None
    if not isinstance(module, kind):
        raise FxvaeError(f"{name!r} is gone from {type(vae).__name__}; convert again")
    return module
