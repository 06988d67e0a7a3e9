"""What a decoder's output means: likelihoods p(x | recon), shared by measurement, training and calibration.

A likelihood turns a reconstruction and its target into ``log_prob(recon, x)``, one value per sample summed
over every data dimension, in nats. :func:`fxvae.evaluate` reports with it, the training losses of
:func:`fxvae.compare` are its ``nll``, and ``log_sigma_init="auto"`` weighs the decoder's sensitivity by its
``fisher`` weight, so that training and measurement cannot disagree about what the reconstruction is.

- ``"bernoulli"``: the reconstruction is logits; targets in [0, 1] may be soft (then the value is a
  cross-entropy against soft targets, not a log-likelihood of binary data).
- ``"bernoulli-probs"``: the reconstruction is probabilities (a decoder that ends in a sigmoid).
- ``"gaussian"``: the reconstruction is the mean; the scale is ``sigma`` (a float, or a tensor per data
  dimension) or ``"optimal"``, the shared sigma that maximises the likelihood: sigma^2 is the mean squared
  error (the calibrated decoder of Rybkin, Daniilidis & Levine 2021).
- ``"laplace"``: the reconstruction is the location; the scale is ``b``, or ``"optimal"``: the mean absolute
  error.
- a callable ``log_prob(recon, x) -> per-sample tensor``, for anything else.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

from fxvae.errors import InputError

LikelihoodName = Literal["gaussian", "bernoulli", "bernoulli-probs", "laplace"]
"""The likelihoods known by name."""
Scale = float | torch.Tensor | Literal["optimal"]
"""A Gaussian's sigma or a Laplace's b: one number, a tensor per data dimension, or ``"optimal"``."""

_UNIT_SAMPLE = 16
"""A logits output needs at least this many values, all inside [0, 1], before it looks like probabilities."""
_LOG_FLOOR = -100.0
"""``bernoulli-probs`` clamps log p and log(1 - p) here, as ``torch.nn.functional.binary_cross_entropy`` does."""
_GRAD_EPS = 1e-12
"""The floor of p (1 - p) in the ``bernoulli-probs`` gradient (torch's), which keeps it finite at p = 0 or 1."""
_PROBABILITY_EPS = 1e-6
"""A probability's Fisher weight 1 / (p (1 - p)) reads p clamped this far from 0 and 1."""


class Likelihood:
    """Base class: ``log_prob(recon, x)`` per sample, in nats, summed over every data dimension.

    >>> lik = fxvae.likelihoods.Gaussian(sigma=1.0)
    >>> lik.log_prob(torch.zeros(2, 3), torch.zeros(2, 3))
    tensor([-2.7568, -2.7568])
    """

    name: str = "custom"

    def log_prob(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def nll(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The training loss: -log p(x | recon), averaged over the batch (nats per sample)."""
        return -self.log_prob(recon, x).mean()

    def check(self, recon: torch.Tensor, x: torch.Tensor) -> None:
        """Raise an :class:`~fxvae.InputError` where ``recon`` and ``x`` do not fit this likelihood."""
        if recon.shape != x.shape:
            raise InputError(
                f"the {self.name} likelihood compares the reconstruction {list(recon.shape)} with the data "
                f"{list(x.shape)}, which differ; pass a likelihood callable log_prob(recon, x) for other outputs"
            )

    def check_output(self, recon: torch.Tensor) -> None:
        """Raise (or warn) where the reconstruction alone does not look like what this likelihood reads."""

    def fisher(self, recon: torch.Tensor) -> torch.Tensor:
        """The Fisher information of the reconstruction under this likelihood, per output element."""
        raise InputError(f"the {self.name} likelihood has no Fisher weight: pass a named likelihood here")

    def mean(self, recon: torch.Tensor) -> torch.Tensor:
        """The data-space mean the reconstruction stands for (what pictures show)."""
        return recon

    @property
    def needs_fit(self) -> bool:
        """Whether a scale is still to be fitted to data (``"optimal"``)."""
        return False

    def describe(self) -> str:
        return self.name


class Bernoulli(Likelihood):
    """Independent Bernoulli pixels; the reconstruction is logits (or, with ``logits=False``, probabilities).

    Targets may be soft (any value in [0, 1]); the value is then the cross-entropy against the soft targets,
    whose floor is their own binary entropy, not a log-likelihood of binary data.

    Probabilities (``logits=False``) have each log clamped at -100 nats, log p -> max(log p, -100) and the same
    for log(1 - p), as ``torch.nn.functional.binary_cross_entropy`` computes them (with log1p for log(1 - p)).
    That is exact for every p and 1 - p above e^-100 (about 3.7e-44): a saturated decoder's p = 2.7e-11 costs
    2.7e-11 nats on a pixel that is 0, the full 24.3 nats on one that is 1 and 12.2 on a grey 0.5. Only a p
    that rounded to exactly 0 or 1 (a float32 sigmoid past |logit| of about 17 towards 1, 104 towards 0) pays
    the capped 100 nats. The gradient is torch's, (p - x) / max(p (1 - p), 1e-12); NaN stays NaN. Logits
    (the default) need no clamp: they are read in log space throughout.

    >>> lik = fxvae.likelihoods.Bernoulli()
    >>> lik.log_prob(torch.zeros(1, 4), torch.ones(1, 4))  # 4 pixels at p = 1/2: 4 log 2
    tensor([-2.7726])
    >>> probs = fxvae.likelihoods.Bernoulli(logits=False)
    >>> probs.log_prob(torch.tensor([[2.7e-11, 2.7e-11, 0.0]]), torch.tensor([[0.0, 1.0, 1.0]]))  # -(0 + 24.3 + 100)
    tensor([-124.3352])
    """

    def __init__(self, *, logits: bool = True) -> None:
        self.logits = logits
        self.name = "bernoulli" if logits else "bernoulli-probs"

    def log_prob(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.logits:
            per_element = F.binary_cross_entropy_with_logits(recon, x.to(recon.dtype), reduction="none")
        else:
            per_element = _BinaryCrossEntropy.apply(recon, x.to(recon.dtype))
        return -per_element.flatten(1).sum(1)

    def nll(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.logits:
            return super().nll(recon, x)
        # One fused reduction: a training step's loss, the same value as -log_prob(recon, x).mean().
        return F.binary_cross_entropy_with_logits(recon, x.to(recon.dtype), reduction="sum") / len(x)

    def check(self, recon: torch.Tensor, x: torch.Tensor) -> None:
        super().check(recon, x)
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise InputError(
                f"the {self.name} likelihood needs targets in [0, 1], but the data spans [{x.min().item():.4g}, "
                f"{x.max().item():.4g}]: scale the data to [0, 1], or pass likelihood='gaussian'"
            )
        self.check_output(recon)

    def check_output(self, recon: torch.Tensor) -> None:
        inside = recon.numel() >= _UNIT_SAMPLE and bool(recon.min() >= 0) and bool(recon.max() <= 1)
        if self.logits and inside:
            warnings.warn(
                "likelihood='bernoulli' reads the reconstruction as logits, but every value lies in [0, 1]: if the "
                "decoder ends in a sigmoid (probabilities), pass likelihood='bernoulli-probs'",
                stacklevel=3,
            )
        if not self.logits and recon.numel() and (recon.min() < 0 or recon.max() > 1):
            raise InputError(
                f"likelihood='bernoulli-probs' needs probabilities, but the reconstruction spans "
                f"[{recon.min().item():.4g}, {recon.max().item():.4g}]: pass likelihood='bernoulli' for logits"
            )

    def fisher(self, recon: torch.Tensor) -> torch.Tensor:
        if self.logits:
            p = torch.sigmoid(recon)
            return p * (1 - p)
        p = recon.clamp(_PROBABILITY_EPS, 1 - _PROBABILITY_EPS)
        return 1 / (p * (1 - p))

    def mean(self, recon: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(recon) if self.logits else recon


class _BinaryCrossEntropy(torch.autograd.Function):
    """-(x log p + (1 - x) log(1 - p)) per element with each log clamped at -100: the values and gradients of
    ``F.binary_cross_entropy(p, x, reduction="none")``, which instead raises on NaN (asserts on a GPU)."""

    @staticmethod
    def forward(ctx: FunctionCtx, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(p, x)
        log_p, log_q = _clamped_logs(p)
        return -(x * log_p + (1 - x) * log_q)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        p, x = ctx.saved_tensors
        grad_p = grad_x = None
        if ctx.needs_input_grad[0]:
            # The unclamped loss's slope, bounded: a saturated pixel on the wrong side is still pushed back.
            grad_p = grad * (p - x) / (p * (1 - p)).clamp(min=_GRAD_EPS)
        if ctx.needs_input_grad[1]:
            log_p, log_q = _clamped_logs(p)
            grad_x = grad * (log_q - log_p)
        return grad_p, grad_x


def _clamped_logs(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p and log(1 - p), each at least -100 (NaN stays NaN)."""
    return torch.log(p).clamp(min=_LOG_FLOOR), torch.log1p(-p).clamp(min=_LOG_FLOOR)


class _Scaled(Likelihood):
    """A location family with a scale: fixed, per data dimension, or fitted to the error (``"optimal"``)."""

    scale_name = "scale"

    def __init__(self, scale: Scale = "optimal", *, fitted: bool = False) -> None:
        if isinstance(scale, str):
            if scale != "optimal":
                raise InputError(f"{self.scale_name}={scale!r} must be a positive number, a tensor or 'optimal'")
        elif isinstance(scale, torch.Tensor):
            if not scale.is_floating_point() or not bool((scale > 0).all()) or not bool(torch.isfinite(scale).all()):
                raise InputError(f"{self.scale_name} must be a tensor of positive finite values")
        elif not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise InputError(f"{self.scale_name}={scale!r} must be a positive number, a tensor or 'optimal'")
        self.scale = scale
        self.fitted = fitted

    @property
    def needs_fit(self) -> bool:
        return isinstance(self.scale, str)

    def error(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per element, the error whose mean is the optimal scale's statistic."""
        raise NotImplementedError

    def scale_of(self, statistic: float) -> float:
        """The optimal scale for a mean error ``statistic``."""
        raise NotImplementedError

    def with_scale(self, statistic: float) -> _Scaled:
        """This likelihood with its ``"optimal"`` scale fitted to a mean error (a floor keeps it positive)."""
        return type(self)(max(self.scale_of(statistic), 1e-12), fitted=True)

    def _scale_for(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scale, str):
            # Training with "optimal": the batch's own error, detached (the sigma-VAE's calibrated decoder).
            statistic = self.error(recon.detach(), x).mean().item()
            return torch.tensor(max(self.scale_of(statistic), 1e-12), dtype=recon.dtype, device=recon.device)
        if isinstance(self.scale, torch.Tensor):
            return self.scale.to(dtype=recon.dtype, device=recon.device)
        return torch.tensor(float(self.scale), dtype=recon.dtype, device=recon.device)

    def check(self, recon: torch.Tensor, x: torch.Tensor) -> None:
        super().check(recon, x)
        if isinstance(self.scale, torch.Tensor):
            try:
                torch.broadcast_shapes(self.scale.shape, x.shape[1:])
            except RuntimeError as err:
                raise InputError(
                    f"{self.scale_name} of shape {list(self.scale.shape)} does not broadcast against one sample "
                    f"{list(x.shape[1:])}: pass a number or a tensor of the data's per-sample shape"
                ) from err

    def fisher(self, recon: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scale, str):
            raise InputError(f"the {self.name} scale is not fitted yet: fit it to data first (with_scale)")
        return torch.ones_like(recon) / self._scale_for(recon, recon).pow(2)

    def describe(self) -> str:
        if isinstance(self.scale, str):
            return f"{self.name}({self.scale_name}=optimal)"
        value = "per-dimension" if isinstance(self.scale, torch.Tensor) else f"{float(self.scale):.4g}"
        return f"{self.name}({self.scale_name}={value}{', optimal' if self.fitted else ''})"

    @property
    def scale_value(self) -> float | None:
        """The scale as one number, where it is one."""
        return float(self.scale) if isinstance(self.scale, (int, float)) else None


class Gaussian(_Scaled):
    """x | recon ~ N(recon, sigma^2) per data dimension; ``sigma="optimal"`` is the root mean squared error.

    Under ``"optimal"`` a training step uses its batch's error (detached); :func:`fxvae.evaluate` fits one
    sigma to all its data first and reports it.

    >>> lik = fxvae.likelihoods.Gaussian(sigma=0.5)
    >>> lik.log_prob(torch.zeros(1, 2), torch.ones(1, 2))  # 2 * log N(1; 0, 0.5^2)
    tensor([-4.4516])
    """

    name = "gaussian"
    scale_name = "sigma"

    def __init__(self, sigma: Scale = "optimal", *, fitted: bool = False) -> None:
        super().__init__(sigma, fitted=fitted)

    def error(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x - recon).pow(2)

    def scale_of(self, statistic: float) -> float:
        return math.sqrt(statistic)

    def log_prob(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma = self._scale_for(recon, x)
        per_element = -0.5 * ((x - recon) / sigma).pow(2) - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
        return per_element.flatten(1).sum(1)

    def nll(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.scale, torch.Tensor):
            return super().nll(recon, x)
        # A shared sigma: one fused squared-error sum, the same value as -log_prob(recon, x).mean().
        sigma = self._scale_for(recon, x).item() if isinstance(self.scale, str) else float(self.scale)
        squared = F.mse_loss(recon, x.to(recon.dtype), reduction="sum") / (2 * sigma**2 * len(x))
        return squared + x[0].numel() * (math.log(sigma) + 0.5 * math.log(2 * math.pi))


class Laplace(_Scaled):
    """x | recon ~ Laplace(recon, b) per data dimension; ``b="optimal"`` is the mean absolute error.

    >>> lik = fxvae.likelihoods.Laplace(b=1.0)
    >>> lik.log_prob(torch.zeros(1, 2), torch.ones(1, 2))  # 2 * (-1 - log 2)
    tensor([-3.3863])
    """

    name = "laplace"
    scale_name = "b"

    def __init__(self, b: Scale = "optimal", *, fitted: bool = False) -> None:
        super().__init__(b, fitted=fitted)

    def error(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x - recon).abs()

    def scale_of(self, statistic: float) -> float:
        return statistic

    def log_prob(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b = self._scale_for(recon, x)
        per_element = -(x - recon).abs() / b - torch.log(2 * b)
        return per_element.flatten(1).sum(1)


class LogProb(Likelihood):
    """A user's ``log_prob(recon, x) -> tensor of shape [batch]`` as a likelihood.

    >>> lik = fxvae.likelihoods.LogProb(lambda recon, x: -(recon - x).abs().sum(1))
    >>> lik.log_prob(torch.zeros(2, 3), torch.ones(2, 3))
    tensor([-3., -3.])
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def log_prob(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.fn(recon, x)

    def check(self, recon: torch.Tensor, x: torch.Tensor) -> None:
        value = self.fn(recon, x)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (len(x),):
            got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(
                f"the likelihood {self.name!r} returned {got} for a batch of {len(x)}: it must return one "
                "log-probability per sample, a tensor of shape [batch]"
            )
        if not bool(torch.isfinite(value).all()):
            raise InputError(f"the likelihood {self.name!r} returned NaN or inf: check it on this data")

    def describe(self) -> str:
        return f"custom({self.name})"


LikelihoodLike = LikelihoodName | Likelihood | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""What the ``likelihood=`` arguments take: a name, a :class:`Likelihood`, or a ``log_prob`` callable."""


def get(likelihood: LikelihoodLike, *, sigma: Scale | None = None) -> Likelihood:
    """The likelihood object for a name (with its scale ``sigma``: a Gaussian's sigma, a Laplace's b), an
    object, or a ``log_prob(recon, x)`` callable.

    >>> fxvae.likelihoods.get("gaussian", sigma=0.1).describe()
    'gaussian(sigma=0.1)'
    """
    if isinstance(likelihood, Likelihood):
        if sigma is not None:
            raise InputError("sigma= goes with a likelihood name; a likelihood object carries its own scale")
        return likelihood
    if likelihood in ("gaussian", "laplace"):
        cls = Gaussian if likelihood == "gaussian" else Laplace
        return cls("optimal" if sigma is None else sigma)
    if sigma is not None:
        raise InputError(f"sigma= is the scale of 'gaussian' or 'laplace'; likelihood={likelihood!r} has none")
    if likelihood in ("bernoulli", "bernoulli-probs"):
        return Bernoulli(logits=likelihood == "bernoulli")
    if callable(likelihood) and not isinstance(likelihood, str):
        return LogProb(likelihood)
    names = ", ".join(repr(n) for n in LikelihoodName.__args__)
    raise InputError(f"likelihood={likelihood!r} is not one of {names}, a Likelihood or a log_prob(recon, x) callable")


def fit(likelihood: Likelihood, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Likelihood:
    """``likelihood`` with an ``"optimal"`` scale fitted to (reconstruction, data) pairs; others as they are.

    The statistic is streamed in float64 over every element. A Gaussian reconstruction further from the data
    than the data's own spread is no Gaussian mean of it (logits, say): that is warned about.

    >>> x, recon = torch.tensor([[0.0, 4.0]]), torch.tensor([[1.0, 2.0]])
    >>> fxvae.likelihoods.fit(fxvae.likelihoods.Gaussian(), [(recon, x)]).describe()  # sigma^2 = (1 + 4) / 2
    'gaussian(sigma=1.581, optimal)'
    """
    if not isinstance(likelihood, _Scaled) or not likelihood.needs_fit:
        return likelihood
    error, count, total, squares = 0.0, 0, 0.0, 0.0
    for recon, x in pairs:
        likelihood.check(recon, x)
        error += likelihood.error(recon.detach().double(), x.double()).sum().item()
        values = x.double()
        total += values.sum().item()
        squares += values.pow(2).sum().item()
        count += x.numel()
    if count == 0:
        raise InputError("there is no data to fit the likelihood's scale to")
    spread = squares / count - (total / count) ** 2
    if isinstance(likelihood, Gaussian) and error / count > spread:
        warnings.warn(
            "the reconstruction is further from the data than the data's own spread, so it is not a Gaussian mean "
            "of it; if the decoder returns logits, pass likelihood='bernoulli'",
            stacklevel=3,
        )
    return likelihood.with_scale(error / count)
