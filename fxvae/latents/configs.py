"""What the latent becomes, as typed configs: :class:`Gaussian` (a VAE), :class:`VQ` and :class:`FSQ`.

A config holds one latent family's choices and checks them where it is made. ``convert(ae, x, latent=...)``
takes one (the strings ``"gaussian"``, ``"vq"``, ``"fsq"`` are its defaults), and the recipe a conversion leaves
on its VAE holds it (``fxvae.conversion(vae).options.latent``). Every config class is known by its
``family`` name from the moment it is defined: a saved file names the family, and its fields are the config's.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from fxvae.errors import InputError

Standardize = Literal["auto", "element", "channel", "whiten"]
"""How calibration standardises the latent: ``"element"``, a mean and spread per latent element;
``"channel"``, per channel (features last for linear latents, channels first for conv latents), shared
over positions; ``"whiten"``, a mean per channel and a ZCA whitening matrix over channels (a rotation too,
since latent dimensions correlate); ``"auto"``: element for flat latents, channel otherwise."""
CodebookUpdate = Literal["ema", "gradient"]
"""How a VQ codebook learns: ``"ema"``, each entry the moving average of the codes it wins (no loss term
for it); ``"gradient"``, by the optimiser, from the codebook term ||sg(z) - z_q||^2 of the loss."""
HeadChoice = Literal["auto", "layer", "pointwise"]
"""How a Gaussian conversion makes its heads: ``"layer"``, the AE's bottleneck layer becomes the mu head and a
zero copy of it the log-sigma head; ``"pointwise"``, mu is the latent itself and the log-sigma head a zero
pointwise layer on it; ``"auto"``, the layer where the latent is one layer's output (else pointwise)."""

CONFIGS: dict[str, type[LatentConfig]] = {}
"""Every config class by its family name, filled as the classes are defined."""


@dataclass(frozen=True)
class LatentConfig:
    """The choices of one latent family; subclasses are frozen dataclasses with a ``family`` name.

    >>> fxvae.VQ(codebook_size=64).family
    'vq'
    """

    family: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "family" in cls.__dict__:
            CONFIGS[cls.family] = cls

    def to_record(self) -> dict[str, Any]:
        """The config as the flat fields a saved recipe holds (the family's own names of its options)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> LatentConfig:
        """The config :meth:`to_record` wrote."""
        return cls(**fields)

    @classmethod
    def record_fields(cls) -> tuple[str, ...]:
        """The names :meth:`to_record` writes."""
        return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class Gaussian(LatentConfig):
    """A VAE's diagonal Gaussian posterior, z = mu + exp(log sigma) * eps, under a N(0, I) prior.

    ``log_sigma_init`` is the log-sigma head's starting bias: 0 (sigma = 1) starts at the prior's scale, a
    negative value keeps training-mode samples close to the AE's latent, ``"auto"`` (with calibration data) sets
    each dimension from the decoder's sensitivity. ``standardize`` is how calibration data standardise the latent
    (:data:`Standardize`); ``head_kind`` how the heads are made (:data:`HeadChoice`). ``fold`` is where the
    calibration map goes: folded into the mu head and the decoder's first layer where they are plain layers, or
    (False) kept as a frozen module of its own, run before and after the reparameterisation, the AE's layers
    keeping their weights.

    >>> vae, kl = fxvae.convert(ae, x, latent=fxvae.Gaussian(log_sigma_init=-2.0, head_kind="pointwise"))
    >>> fxvae.conversion(vae).head_kind
    'pointwise'
    """

    family: ClassVar[str] = "gaussian"
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
    head_kind: HeadChoice = field(
        default="auto",
        metadata={
            "help": "Gaussian heads: the AE's bottleneck layer as the mu head (layer), or mu the latent itself and a "
            "pointwise log-sigma head (pointwise); auto: the layer where there is one."
        },
    )
    fold: bool = field(
        default=True,
        metadata={
            "help": "With calibration data: fold the standardising map into the mu head and the decoder's first layer "
            "where they are plain layers (True), or keep it as its own frozen module run before and after the "
            "reparameterisation (False); either way eval outputs equal the AE's."
        },
    )

    def __post_init__(self) -> None:
        start = self.log_sigma_init
        if start != "auto" and (
            isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start)
        ):
            raise InputError(f"log_sigma_init={start!r} must be a finite number or 'auto'")
        _one_of(self, "standardize", Standardize)
        _one_of(self, "head_kind", HeadChoice)
        if not isinstance(self.fold, bool):
            raise InputError(
                f"fold={self.fold!r} must be True (fold the calibration map into plain layers) or False (keep it as "
                "a module of its own): pass a bool"
            )


@dataclass(frozen=True)
class VQ(LatentConfig):
    """Vector quantisation (a VQ-VAE): each code becomes the nearest of ``codebook_size`` learned codes.

    ``beta`` weighs the commitment term ||z - sg(z_q)||^2. With ``ema`` the codebook is the moving average
    (``decay``) of the codes each entry wins; without, the optimiser learns it from the codebook term. A code
    used less than ``dead_code_threshold`` times the average code's use restarts at an encoder output (0: never).
    The codebook starts at the k-means centres of the calibration data's codes, which ``convert`` needs.

    >>> vq, loss = fxvae.convert(ae, x, latent=fxvae.VQ(codebook_size=32, beta=0.5), calibration=torch.randn(256, 64))
    >>> fxvae.conversion(vq).quantizer.codebook_size
    32
    """

    family: ClassVar[str] = "vq"
    codebook_size: int = field(
        default=512, metadata={"help": "VQ: the number of codes K, log2 K bits per position of the latent."}
    )
    beta: float = field(default=0.25, metadata={"help": "VQ: the weight of the commitment term ||z - sg(z_q)||^2."})
    ema: bool = field(
        default=True,
        metadata={"help": "VQ: the codebook learns by moving averages of its codes (--ema) or by gradient (--no-ema)."},
    )
    decay: float = field(default=0.99, metadata={"help": "VQ: the decay of the codebook's moving averages."})
    dead_code_threshold: float = field(
        default=0.03,
        metadata={
            "help": "VQ: a code used less than this fraction of the average code's use restarts at an encoder "
            "output (0: never)."
        },
    )

    def __post_init__(self) -> None:
        size = self.codebook_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise InputError(f"codebook_size={size!r} must be an integer of at least 2")
        if not isinstance(self.ema, bool):
            raise InputError(
                f"ema={self.ema!r} must be True (moving averages) or False (the codebook learns by gradient)"
            )
        for name, fits, expected in (
            ("beta", lambda v: 0 <= v < math.inf, "a finite number of at least 0"),
            ("decay", lambda v: 0 < v < 1, "a number between 0 and 1 (both excluded)"),
            ("dead_code_threshold", lambda v: 0 <= v < 1, "a number in [0, 1)"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not fits(value):
                raise InputError(f"{name}={value!r} must be {expected}")

    @property
    def codebook_update(self) -> CodebookUpdate:
        return "ema" if self.ema else "gradient"

    def to_record(self) -> dict[str, Any]:
        # The names files have held since the first discrete release.
        return {
            "codebook_size": self.codebook_size,
            "commitment": self.beta,
            "codebook_update": self.codebook_update,
            "ema_decay": self.decay,
            "dead_code_threshold": self.dead_code_threshold,
        }

    @classmethod
    def from_record(cls, fields: dict[str, Any]) -> VQ:
        update = fields.get("codebook_update", "ema")
        if update not in typing.get_args(CodebookUpdate):
            raise InputError(f"codebook_update={update!r} must be one of {typing.get_args(CodebookUpdate)}")
        return cls(
            codebook_size=fields.get("codebook_size", 512),
            beta=fields.get("commitment", 0.25),
            ema=update == "ema",
            decay=fields.get("ema_decay", 0.99),
            dead_code_threshold=fields.get("dead_code_threshold", 0.03),
        )

    @classmethod
    def record_fields(cls) -> tuple[str, ...]:
        return ("codebook_size", "commitment", "codebook_update", "ema_decay", "dead_code_threshold")


@dataclass(frozen=True)
class FSQ(LatentConfig):
    """Finite scalar quantisation: each of ``len(levels)`` dimensions rounded to ``levels[d]`` values; projections
    are inserted where the latent's width per position differs from their count. No codebook to learn.

    >>> fsq, loss = fxvae.convert(ae, x, latent=fxvae.FSQ(levels=(5, 5, 5)))
    >>> fxvae.conversion(fsq).quantizer.codebook_size
    125
    """

    family: ClassVar[str] = "fsq"
    levels: tuple[int, ...] = field(
        default=(8, 5, 5, 5),
        metadata={
            "help": "FSQ: levels per dimension, comma-separated; projections are inserted where the latent's "
            "width per position differs from their count."
        },
    )

    def __post_init__(self) -> None:
        # JSON and command lines give lists: the config holds a tuple.
        object.__setattr__(self, "levels", check_levels(self.levels))


def config_of(latent: LatentConfig | str) -> LatentConfig:
    """``latent`` as a config: a config as it is, a family's name as that family's defaults.

    >>> config_of("fsq")
    FSQ(levels=(8, 5, 5, 5))
    """
    if isinstance(latent, LatentConfig):
        return latent
    if isinstance(latent, str) and latent in CONFIGS:
        return CONFIGS[latent]()
    raise InputError(
        f"latent={latent!r} must be a latent config (fxvae.Gaussian(...), fxvae.VQ(...), fxvae.FSQ(...)) or the name "
        f"of one's defaults: one of {tuple(CONFIGS)}"
    )


def _one_of(config: LatentConfig, name: str, kind: Any) -> None:
    if getattr(config, name) not in typing.get_args(kind):
        raise InputError(f"{name}={getattr(config, name)!r} must be one of {typing.get_args(kind)}")


def check_levels(levels: object) -> tuple[int, ...]:
    """``levels`` as a tuple of ints of at least 2 each, or an InputError that says what is wrong."""
    if not isinstance(levels, (tuple, list)) or not levels or not all(isinstance(n, int) for n in levels):
        raise InputError(f"levels={levels!r} must be a non-empty sequence of integers, e.g. levels=(8, 5, 5, 5)")
    if any(isinstance(n, bool) or n < 2 for n in levels):
        raise InputError(
            f"levels={tuple(levels)!r} has a dimension with fewer than 2 levels: each dimension needs at least 2 "
            "(e.g. levels=(8, 5, 5, 5))"
        )
    if math.prod(levels) >= 2**63:
        raise InputError(f"levels={tuple(levels)!r} make more codes than an int64 token holds: use fewer levels")
    return tuple(levels)
