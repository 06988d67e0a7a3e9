"""The choices that shape a comparison: :func:`fxvae.compare`'s keyword arguments and ``fxvae compare``'s options,
declared once (the command line is generated from these fields, as the conversion options are)."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from fxvae.errors import InputError
from fxvae.latents.configs import LatentConfig, config_of
from fxvae.latents.family import Family
from fxvae.latents.registry import FAMILIES
from fxvae.measure.likelihoods import LikelihoodName

StartName = Literal["scratch", "warm", "calibrated", "random", "ae"]
"""``"scratch"``: the same model with every parameter re-initialised; ``"warm"``: ``convert(ae, x)`` (a discrete
latent: its codebook or projections fitted to the training data's codes); ``"calibrated"`` (Gaussian):
``convert(ae, x, calibration=train, log_sigma_init="auto")``; ``"random"`` (discrete): the trained AE's encoder
and decoder with the quantiser at the random initialisation a new one has (a codebook drawn from N(0, I), or FSQ's
projections as a new Linear draws them), i.e. warm without the fit to the data; ``"ae"``: the AE itself, trained
on."""
DensityKind = Literal["gaussian", "gmm"]
"""An ex-post density fitted to a model's training codes (:func:`fxvae.fit_density`): a full-covariance Gaussian,
or a mixture of 10 of them (scikit-learn)."""
Latent = Literal["gaussian", "vq", "fsq"]
"""The built-in latent families; a family registered with :func:`fxvae.latents.registry.register_family` is
accepted too."""
LATENT_FIELDS = ("codebook_size", "levels", "fold", "log_sigma_init")
"""The comparison options that configure the latent, passed to the family's config where it has the field."""
Optimizer = Literal["adam", "adamw", "sgd"]
Precision = Literal["fp32", "bf16", "fp16"]
"""The training forward's precision: float32; or autocast to bfloat16 or float16 (float16 with a gradient scaler).
The likelihood, the KL and the held-out measurement stay float32 under every choice."""
Schedule = Literal["constant", "cosine", "one-cycle"]
"""The learning rate over the run: constant; a cosine from ``lr`` to 0; or one cycle (a rise from lr / 25 to
lr over the first 30% of the steps, then a cosine down to lr / 1e4, as ``torch.optim.lr_scheduler.OneCycleLR``)."""


@dataclass(frozen=True)
class CompareOptions:
    """How :func:`fxvae.compare` trains and measures; every field is an option of ``fxvae compare``.

    >>> fxvae.study.CompareOptions(epochs=3, seeds=2).epochs
    3
    """

    starts: tuple[StartName, ...] | None = field(
        default=None,
        metadata={
            "help": "Starts to train: scratch (the same model re-initialised), warm (the AE's conversion), "
            "calibrated (gaussian: converted with the data's statistics), random (vq, fsq: the trained AE with its "
            "quantiser at a new one's random initialisation, i.e. warm without the fit to the data), ae (the AE "
            "itself, as the reference row). Default: ae,scratch,warm,calibrated for gaussian, scratch,warm,random "
            "for vq and fsq."
        },
    )
    epochs: int = field(default=20, metadata={"help": "Epochs of every start."})
    latent: Latent = field(
        default="gaussian",
        metadata={"help": "The latent every start converts to: gaussian (VAEs), vq or fsq (discrete tokens)."},
    )
    codebook_size: int = field(default=512, metadata={"help": "vq: the number of codes."})
    levels: tuple[int, ...] = field(default=(8, 5, 5, 5), metadata={"help": "fsq: levels per dimension."})
    fold: bool = field(
        default=True,
        metadata={
            "help": "gaussian, the calibrated start: fold the standardising map into the mu head and the decoder's "
            "first layer where they are plain layers (--fold), or keep it as its own frozen module run before and "
            "after the reparameterisation (--no-fold), the AE's layers keeping their weights."
        },
    )
    log_sigma_init: float | Literal["auto"] = field(
        default="auto",
        metadata={
            "help": "gaussian, the calibrated start: its log-sigma head's starting bias, auto (each dimension from "
            "the decoder's sensitivity) or a number (that log sigma everywhere). The warm and scratch starts begin "
            "at 0, the prior's scale."
        },
    )
    likelihood: LikelihoodName = field(
        default="gaussian", metadata={"help": "What the reconstruction is: the loss and the measurement."}
    )
    sigma: float | Literal["optimal"] = field(
        default="optimal",
        metadata={
            "help": "Gaussian sigma or Laplace b; 'optimal': fitted once to the AE's error on the training data and "
            "shared by every start."
        },
    )
    beta: float = field(default=1.0, metadata={"help": "Weight of the KL term in the training loss."})
    kl_warmup: int = field(default=0, metadata={"help": "Steps over which the KL weight rises linearly to beta."})
    free_bits: float = field(default=0.0, metadata={"help": "Nats each latent dimension pays at least (training)."})
    optimizer: Optimizer = field(default="adam", metadata={"help": "The optimiser of every start."})
    lr: float = field(default=1e-3, metadata={"help": "Learning rate (the peak of a schedule)."})
    schedule: Schedule = field(
        default="cosine", metadata={"help": "Learning rate over the run, after the warm-up (docs/compare.md)."}
    )
    lr_warmup: int | None = field(
        default=None,
        metadata={
            "help": "Steps over which the learning rate rises linearly from 0, on any schedule (default: one epoch)."
        },
    )
    log_sigma_lr: float = field(
        default=1.0,
        metadata={"help": "The log-sigma head's learning rate, as a multiple of lr (its bias is a log scale)."},
    )
    batch_size: int = field(
        default=64, metadata={"help": "Samples per forward (per optimiser step: times accumulate)."}
    )
    accumulate: int = field(
        default=1,
        metadata={
            "help": "Batches of batch_size whose gradients make one optimiser step: the batch order, the steps "
            "and the schedules are those of a batch accumulate times larger."
        },
    )
    precision: Precision = field(
        default="fp32",
        metadata={
            "help": "The training forward: fp32, or autocast to bf16 or fp16 (with a gradient scaler); the "
            "likelihood, the KL and the measurement stay fp32."
        },
    )
    compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the model's training forward (inductor; compiles once per run)."},
    )
    channels_last: bool = field(
        default=False,
        metadata={
            "help": "Conv models: 4-d parameters and batches in channels-last memory format "
            "(1.06x on CPU for conv_ae, docs/benchmarks.md)."
        },
    )
    holdout: float = field(
        default=0.1, metadata={"help": "Without test data: the fraction of the data held out (a seeded split)."}
    )
    seeds: int = field(default=1, metadata={"help": "Repeats of every start, seeds 0, 1, ..."})
    k: int = field(default=8, metadata={"help": "Posterior draws per held-out sample after each epoch."})
    final_k: int = field(default=100, metadata={"help": "Posterior draws per held-out sample at the end."})
    eval_samples: int | None = field(
        default=None,
        metadata={
            "help": "Measure each epoch on this many held-out samples: a fixed seeded subset, the same for every "
            "start and seed (default: all). The final measurement always uses all of them."
        },
    )
    eval_every: int = field(
        default=1, metadata={"help": "Measure every this many epochs (epoch 0 and the last are always measured)."}
    )
    workers: int | None = field(
        default=None,
        metadata={
            "help": "DataLoader processes that read a Dataset or image folder, ahead of the training step (default: "
            "a DataLoader's num_workers, else min(4, CPU cores - 1)); tensors are always indexed in the training "
            "process. The batches are the same with any number."
        },
    )
    max_minutes: float | None = field(
        default=None, metadata={"help": "A time budget: every start stops at the same epoch once it would pass it."}
    )
    shown: int = field(default=8, metadata={"help": "Held-out samples and prior samples in the pictures."})
    bottleneck: str | None = field(
        default=None, metadata={"help": "Force the bottleneck of every start (see fxvae inspect)."}
    )
    image_shape: tuple[int, ...] | None = field(
        default=None,
        metadata={"help": "Show samples in the pictures as images of this shape (8,8 for flattened 8x8 digits)."},
    )
    density: tuple[DensityKind, ...] | None = field(
        default=None,
        metadata={
            "help": "Ex-post densities fitted to each model's training codes at the end of a gaussian comparison "
            "(the AE's likelihood and samples, the VAEs' ex-post samples): gaussian (full covariance), gmm (10 "
            "components, needs scikit-learn). Default: both, gmm only where scikit-learn imports."
        },
    )

    def __post_init__(self) -> None:
        if self.latent not in FAMILIES:
            raise InputError(f"latent={self.latent!r} must be one of {tuple(FAMILIES)}")
        family = FAMILIES[self.latent]
        starts = default_starts(family) if self.starts is None else tuple(self.starts)
        object.__setattr__(self, "starts", starts)
        known = typing.get_args(StartName)
        if not starts or any(s not in known for s in starts) or len(set(starts)) != len(starts):
            raise InputError(f"starts={self.starts!r} must be distinct names among {', '.join(known)}")
        if "ae" in starts and len(starts) == 1:
            raise InputError("starts=('ae',) has no VAE to compare: add scratch, warm or calibrated")
        wrong = next((s for s in starts if s != "ae" and s not in family.starts), None)
        if wrong is not None:
            fits = " or ".join(sorted({f.what for f in FAMILIES.values() if wrong in f.starts}))
            raise InputError(
                f"the {wrong!r} start is for {fits}; with latent={self.latent!r} the starts are "
                f"{', '.join(s for s in typing.get_args(StartName) if s == 'ae' or s in family.starts)}"
            )
        object.__setattr__(self, "levels", tuple(self.levels))
        if self.density is not None:
            object.__setattr__(self, "density", tuple(self.density))
            kinds = typing.get_args(DensityKind)
            if any(d not in kinds for d in self.density) or len(set(self.density)) != len(self.density):
                raise InputError(f"density={self.density!r} must be distinct names among {', '.join(kinds)}")
            if family.estimator != "posterior":
                raise InputError(
                    f"density= fits ex-post densities at the end of a Gaussian comparison; latent={self.latent!r} "
                    "has none: leave density out"
                )
        for name in (
            "epochs",
            "seeds",
            "k",
            "final_k",
            "batch_size",
            "accumulate",
            "shown",
            "codebook_size",
            "eval_every",
        ):
            _positive_int(name, getattr(self, name))
        if self.eval_samples is not None:
            _positive_int("eval_samples", self.eval_samples)
        if self.workers is not None and (
            not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 0
        ):
            raise InputError(f"workers={self.workers!r} must be a whole number of loader processes, 0 or more")
        for name in ("kl_warmup", "lr_warmup"):
            value = getattr(self, name)
            if value is None and name == "lr_warmup":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InputError(f"{name}={value!r} must be a whole number of steps, 0 or more")
        for name in ("lr", "beta", "log_sigma_lr"):
            _positive_float(name, getattr(self, name))
        if not (isinstance(self.free_bits, (int, float)) and self.free_bits >= 0):
            raise InputError(f"free_bits={self.free_bits!r} must be 0 or more nats")
        if not (isinstance(self.holdout, (int, float)) and 0 < self.holdout < 1):
            raise InputError(f"holdout={self.holdout!r} must be a fraction between 0 and 1")
        if self.sigma != "optimal":
            _positive_float("sigma", self.sigma)
        if self.max_minutes is not None:
            _positive_float("max_minutes", self.max_minutes)
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(self.image_shape))
            if not self.image_shape or any(not isinstance(n, int) or n < 1 for n in self.image_shape):
                raise InputError(f"image_shape={self.image_shape!r} must be positive whole numbers, e.g. (8, 8)")
        start = self.log_sigma_init
        if start != "auto" and (
            isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start)
        ):
            raise InputError(f"log_sigma_init={start!r} must be a finite number or 'auto'")
        for name in ("compile", "channels_last", "fold"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name}={getattr(self, name)!r} must be True or False")
        kinds = (
            ("likelihood", LikelihoodName),
            ("optimizer", Optimizer),
            ("schedule", Schedule),
            ("precision", Precision),
        )
        for name, kind in kinds:
            if getattr(self, name) not in typing.get_args(kind):
                raise InputError(f"{name}={getattr(self, name)!r} must be one of {typing.get_args(kind)}")

    def latent_config(self) -> LatentConfig:
        """The latent every start converts to: the family's config, with the comparison's latent options.

        >>> CompareOptions(latent="vq", codebook_size=64).latent_config()
        VQ(codebook_size=64, beta=0.25, ema=True, decay=0.99, dead_code_threshold=0.03)
        """
        config = config_of(self.latent)
        names = {f.name for f in dataclasses.fields(config)}
        return dataclasses.replace(config, **{n: getattr(self, n) for n in LATENT_FIELDS if n in names})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompareOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        tuples = ("starts", "image_shape", "levels", "density")
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in data.items() if k in names})


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name}={value!r} must be a positive whole number")


def _positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{name}={value!r} must be a positive number")


def default_starts(family: Family) -> tuple[StartName, ...]:
    """The starts of a comparison that names none: the family's own, and the AE itself where the comparison
    measures the AE and its VAE on the same axes (a latent with a posterior), so that the plain command answers
    "the AE or its VAE?".

    >>> default_starts(FAMILIES["gaussian"]), default_starts(FAMILIES["vq"])
    (('ae', 'scratch', 'warm', 'calibrated'), ('scratch', 'warm', 'random'))
    """
    own = typing.cast(tuple[StartName, ...], family.starts)
    return ("ae", *own) if family.estimator == "posterior" else own
