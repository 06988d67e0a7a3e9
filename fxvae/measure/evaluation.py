"""Measure a VAE the way papers do: held-out -ELBO and its terms, the importance-weighted log-likelihood,
active units and the mutual information of x and z, each with its standard error over the data.

```
x --[encoder]--> mu, log_sigma --(k draws z_i = mu + sigma * eps_i, in chunks folded into the batch)
  --[decoder, one call per chunk]--> recon_i --[likelihood]--> log p(x | z_i)
log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x)              NLL_k = -(logsumexp_i log w_i - log k)
```
p(z) is N(0, I), or a fitted :class:`~fxvae.measure.density.Density`. The encoder runs once per batch and the decoder
once per chunk of draws; the sums are kept in float64. eps comes from :func:`fxvae.measure.noise.normal`, keyed by the
seed and the sample's index in the data and the draw's index, so the numbers do not depend on ``batch_size``
or ``chunk``, and two models measured with one seed share their noise. An autoencoder that fxvae did not
convert has no ELBO: its row holds the reconstruction term alone, under the same likelihood, so that one table
can hold AE and VAE rows; given a density on its codes, it gets the importance-weighted bound too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.utils._pytree import tree_leaves

from fxvae.analysis.outputs import reconstruction_like
from fxvae.capture.tracing import propagate_shapes
from fxvae.errors import FxvaeError, InputError
from fxvae.io.data import batches, check_batch, to_device
from fxvae.latents.registry import family_of
from fxvae.measure import likelihoods, noise
from fxvae.measure.density import Density, coder
from fxvae.measure.likelihoods import Likelihood, LikelihoodLike, Scale
from fxvae.measure.sensitivity import auto_log_sigma
from fxvae.modules import eval_mode, first_tensor, input_count, input_names
from fxvae.progress import bar
from fxvae.recipe import META_KEY, Conversion, unwrap
from fxvae.surgery.split import decoder_conditions, split

ACTIVE_THRESHOLD = 0.01
"""A latent unit is active when Var_x(E_q[z_d]) exceeds this (Burda, Grosse & Salakhutdinov 2015)."""
MIXTURE = 4096
"""Posteriors in the aggregate posterior q(z) that the mutual information is estimated with."""
CACHE_BYTES = 2**21
"""By default the decoder is called on as many rows (draws of one sample) as keep its largest activation under
this many bytes, so that each layer's output is still in cache when the next layer reads it, and on at least
``MIN_ROWS`` (benchmarks/iwae_chunk_sweep.py measures both on an MLP, a conv and a 1-d conv decoder)."""
MIN_ROWS = 64
"""The fewest rows per default decoder call: each call has a fixed cost, and a conv's kernels lose efficiency on a
few images (a conv decoder of 128 KiB a row ran 5-15% slower on 16 rows a call than on 64)."""
CHUNK_ELEMENTS = 2**18
"""By default the draws are taken in blocks of about this many reconstruction elements: the likelihood and the
sums run once per block, however many decoder calls it takes. Where the decoder's activations are unknown (the
hooks tier: no graph to propagate shapes on) or the model is on a GPU, a block is also one decoder call."""
NOISE_ELEMENTS = 2**21
"""Posterior draws' elements made per :func:`fxvae.measure.noise.normal` call (about 50 MB of its float64 and int64
intermediates)."""
_LOG_2PI = math.log(2 * math.pi)
_MI_ROWS = 512


@dataclass(frozen=True)
class Estimate:
    """A mean over the data's samples and its standard error (the samples' standard deviation / sqrt(n)).

    >>> fxvae.Estimate(24.31, 0.42)
    Estimate(value=24.31, stderr=0.42)
    """

    value: float
    stderr: float

    @classmethod
    def of(cls, values: torch.Tensor) -> Estimate:
        """The estimate from per-sample values."""
        values = values.double()
        stderr = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
        return cls(values.mean().item(), stderr)

    def scaled(self, factor: float) -> Estimate:
        return Estimate(self.value * factor, self.stderr * factor)

    def __str__(self) -> str:
        return f"{self.value:.4g} ± {self.stderr:.2g}"


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured, in nats per sample, and what it was computed with.

    ``per_dim(name)`` and ``bits_per_dim(name)`` give a value per data dimension (for images: per pixel and
    channel). For an autoencoder (``kind="ae"``) only ``recon`` is measured, and with a density on its codes
    ``neg_elbo`` and ``nll`` too (see :func:`evaluate`); the other values are None.

    >>> result = fxvae.evaluate(vae, torch.randn(64, 64), likelihood="gaussian", sigma=1.0, k=8)
    >>> result.kind, result.n, result.k, result.likelihood
    ('vae', 64, 8, 'gaussian(sigma=1)')
    >>> result.nll.value <= result.neg_elbo.value
    True
    """

    kind: str
    """``"ae"``, or the latent family's (:attr:`fxvae.latents.family.Family.kind`): ``"vae"``, ``"vq"``, ``"fsq"``."""
    n: int
    """Samples measured."""
    k: int
    """Posterior draws per sample (1 for an autoencoder)."""
    likelihood: str
    """The likelihood, with the scale used (a fitted ``"optimal"`` scale says so)."""
    seed: int
    data_dims: int
    """Elements of one data sample: what ``per_dim`` divides by."""
    recon: Estimate
    """E_q[-log p(x | z)] = neg_elbo - kl (for an autoencoder: -log p(x | its reconstruction))."""
    kl: Estimate | None = None
    """KL(q(z | x) || N(0, I)), closed form."""
    neg_elbo: Estimate | None = None
    """-E_q[log p(x, z) - log q(z | x)] = recon + kl (beta = 1, whatever the training used)."""
    nll: Estimate | None = None
    """The importance-weighted estimate of -log p(x) with k draws (k = 1: the -ELBO)."""
    kl_per_dim: tuple[float, ...] = ()
    """The KL of each latent element (flattened), averaged over the data."""
    unit_variance: tuple[float, ...] = ()
    """Var_x(E_q[z_d]) of each latent element (flattened)."""
    active_units: int | None = None
    """How many latent elements have ``unit_variance`` above ``active_threshold``."""
    active_threshold: float = ACTIVE_THRESHOLD
    mutual_info: Estimate | None = None
    """I(x; z) under q, estimated on ``mixture`` samples (see :func:`evaluate`); at most log(mixture)."""
    mixture: int = 0
    scale: float | None = None
    """The Gaussian sigma or Laplace b used, where it is one number (``"optimal"``: the fitted value)."""
    rate_bits: float | None = None
    """A discrete latent's rate: bits per sample (positions x log2 of the number of codes)."""
    perplexity: float | None = None
    """A discrete latent's codebook use over the data: exp(entropy of the codes' histogram)."""
    codes_used: float | None = None
    """The fraction of a discrete latent's codes that the data used."""
    density: str | None = None
    """The prior p(z) in log w where it is a fitted density (its :meth:`~fxvae.measure.density.Density.describe`)."""
    proposal: str | None = None
    """An autoencoder's proposal q(z | x) under a density: how its width was fitted, with the widths' range."""
    per_sample: dict[str, torch.Tensor] | None = dataclasses.field(default=None, compare=False, repr=False)
    """With ``per_sample=True``: each measured value per sample (float64, in data order); not in :meth:`to_dict`."""

    @property
    def latent_dims(self) -> int:
        # A density's Monte Carlo KL has no per-dimension split; the unit variances still count the dimensions.
        return len(self.kl_per_dim) or len(self.unit_variance)

    def per_dim(self, name: str = "nll") -> Estimate:
        """A measured value (``"recon"``, ``"kl"``, ``"neg_elbo"``, ``"nll"``) in nats per data dimension."""
        return self._value(name).scaled(1 / self.data_dims)

    def bits_per_dim(self, name: str = "nll") -> Estimate:
        """A measured value in bits per data dimension (for a density on data scaled to [0, 1], add
        log2 of the number of levels, 8 for 8-bit images, to compare with discrete likelihoods)."""
        return self._value(name).scaled(1 / (self.data_dims * math.log(2)))

    def _value(self, name: str) -> Estimate:
        value = getattr(self, name, None) if name in _MEASURED else None
        if not isinstance(value, Estimate):
            raise FxvaeError(f"{name!r} was not measured for this {self.kind}; measured: {', '.join(self.measured)}")
        return value

    @property
    def measured(self) -> tuple[str, ...]:
        return tuple(name for name in _MEASURED if getattr(self, name) is not None)

    def rows(self) -> list[tuple[str, Estimate, Estimate | None, Estimate | None]]:
        """(name, nats per sample, nats per dimension, bits per dimension) of each measured value."""
        out: list[tuple[str, Estimate, Estimate | None, Estimate | None]] = []
        for name in self.measured:
            value = self._value(name)
            per = name != "mutual_info"
            out.append((name, value, self.per_dim(name) if per else None, self.bits_per_dim(name) if per else None))
        return out

    def __str__(self) -> str:
        lines = [
            f"{self.kind} on n={self.n}, k={self.k}, likelihood {self.likelihood}, seed {self.seed}",
            f"  {'':<12} {'nats/sample':>22} {'nats/dim':>12} {'bits/dim':>12}",
        ]
        for name, value, per, bits in self.rows():
            per_text = f"{per.value:.4g}" if per is not None else ""
            bits_text = f"{bits.value:.4g}" if bits is not None else ""
            lines.append(f"  {name:<12} {value!s:>22} {per_text:>12} {bits_text:>12}")
        if self.active_units is not None:
            lines.append(
                f"  active units: {self.active_units} of {self.latent_dims} (Var_x E_q[z] > {self.active_threshold})"
            )
        if self.rate_bits is not None:
            lines.append(
                f"  rate: {self.rate_bits:.4g} bits per sample; codebook perplexity {self.perplexity:.4g}, "
                f"{100 * (self.codes_used or 0):.1f}% of the codes used"
            )
        if self.density is not None:
            lines.append(f"  prior p(z): {self.density}")
        if self.proposal is not None:
            lines.append(f"  proposal q(z | x): {self.proposal}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record; :meth:`from_dict` reads it back (``per_sample`` stays out: it is tensors)."""
        record = dataclasses.asdict(dataclasses.replace(self, per_sample=None))
        del record["per_sample"]
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        values = dict(data)
        for name in _MEASURED:
            if values.get(name) is not None:
                values[name] = Estimate(**values[name])
        for name in ("kl_per_dim", "unit_variance"):
            values[name] = tuple(values.get(name, ()))
        return cls(**values)


_MEASURED = ("recon", "kl", "neg_elbo", "nll", "mutual_info")


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    likelihood: LikelihoodLike = "gaussian",
    sigma: Scale | None = None,
    k: int = 1,
    batch_size: int | None = None,
    seed: int = 0,
    chunk: int | None = None,
    active_threshold: float = ACTIVE_THRESHOLD,
    mixture: int = MIXTURE,
    progress: bool = False,
    density: Density | None = None,
    per_sample: bool = False,
) -> Evaluation:
    """Measure a VAE made by :func:`fxvae.convert` (or an autoencoder's reconstruction) on ``data``.

    ``data`` is a tensor, a Dataset or an iterable of batches such as a DataLoader; a batch's first element
    is the data input, further elements are the model's other inputs (a condition). Tensors and Datasets are
    cut into batches of ``batch_size`` (default 256). ``likelihood`` says what the reconstruction is
    (:mod:`fxvae.measure.likelihoods`): ``"gaussian"`` (the mean; its scale ``sigma`` is a number, a tensor per data
    dimension or ``"optimal"``, the default: the root of the mean squared error under q, fitted in a first
    pass over the data with one draw per sample), ``"laplace"`` (``sigma`` is its b), ``"bernoulli"``
    (logits; soft targets in [0, 1] make it a cross-entropy), ``"bernoulli-probs"``, a
    :class:`~fxvae.likelihoods.Likelihood`, or a callable ``log_prob(recon, x) -> per-sample tensor``.

    Reported, per sample (with standard errors over the data) and per data dimension:

    - ``neg_elbo`` = -(1/k) sum_i log w_i, the -ELBO (beta = 1) estimated from the same k draws as ``nll``,
      with log w_i = log p(x | z_i) + log N(z_i; 0, I) - log q(z_i | x); ``kl`` = KL(q(z|x) || N(0, I)) in
      closed form (and ``kl_per_dim``); ``recon`` = E_q[-log p(x | z)] = neg_elbo - kl (the closed-form KL
      is its control variate, so the three add up);
    - ``nll`` = -log (1/k) sum_i w_i, the importance-weighted bound of Burda et al. (2015), computed with
      logsumexp in float64. It equals ``neg_elbo`` at k = 1, is at most ``neg_elbo`` for every sample, and
      falls towards -log p(x) as k grows; with q the exact posterior, w is constant and both are exact. The
      k draws are decoded in chunks of ``chunk`` draws, each chunk one batched decoder call (by default, on
      CPU: as many rows, draws of one sample, per call as keep the decoder's largest activation within 2 MiB,
      from the shapes of its graph, and at least 64);
    - ``active_units``: latent elements with Var_x(E_q[z_d]) > ``active_threshold`` (and ``unit_variance``);
    - ``mutual_info`` = I(x; z) under q, the estimator of Hoffman & Johnson (2016) as He et al. (2019)
      compute it: E_x[log q(z|x) - log q(z)] with one draw z ~ q(z|x) per sample, and the aggregate posterior
      q(z) = (1/M) sum_j q(z | x_j) over the first M = min(n, ``mixture``) samples (so it is at most log M).

    The posterior draws eps_i (and the ``"optimal"`` scale's pre-pass draw) are :func:`fxvae.measure.noise.normal`
    numbers keyed by ``seed``, the sample's index in the data and the draw's index: a sample's values do not
    depend on ``batch_size`` or ``chunk``, and two models measured with one seed share their noise, so their
    per-sample differences are paired (common random numbers).

    ``density`` (a :class:`fxvae.Density`, from :func:`fxvae.fit_density`) replaces N(0, I) as the prior p(z):

    - for a VAE it enters log w (``nll``, ``neg_elbo``), and ``kl`` becomes the Monte Carlo estimate
      (1/k) sum_i [log q(z_i | x) - log p(z_i)] over the same draws (``kl_per_dim`` is then empty);
    - for an autoencoder, ``nll`` and ``neg_elbo`` are those of the generative model "z ~ density, then the
      AE's decoder, then the likelihood", with the proposal q(z | x) = N(code(x), diag s^2) centred on the
      AE's code (at the bottleneck :func:`fxvae.measure.density.coder` finds). Its width is the Laplace width of the
      linearised decoder under the density: 1 / s_j^2 = F_j + 1 / v_j, F_j the decoder's Fisher-weighted
      sensitivity to z_j (the probes of :func:`fxvae.measure.sensitivity.auto_log_sigma`, as ``log_sigma_init="auto"``
      uses them) over the first 512 samples of the data, v_j the density's marginal variance. Any width gives
      a valid bound; this one makes it tight for a near-linear decoder (exact in the limit of large k, and
      with a Gaussian density, a linear decoder and a Gaussian likelihood the posterior is Gaussian).
      ``proposal`` records it with the widths' range. ``recon`` stays the AE's deterministic reconstruction
      term and ``kl`` is not measured. The estimator, units and standard errors are the VAE's, so the AE's
      ``nll`` row and a VAE's share one scale. The width needs a likelihood with a Fisher weight (a named one).

    ``per_sample=True`` fills :attr:`Evaluation.per_sample` with each measured value per sample (``nll``,
    ``neg_elbo``, ``recon``, ``kl``, as measured; an autoencoder's ``recon``), float64 in data order.

    A VQ or FSQ model (``latent="vq"`` or ``"fsq"``) is measured by its deterministic reconstruction: ``recon``,
    ``kl`` = positions x log K (its one-code posterior against a uniform prior over the K codes), ``neg_elbo``,
    and ``rate_bits``, ``perplexity`` and ``codes_used`` for its codes over the data.

    The model's train/eval mode, its parameters and buffers, and the global random state are left as they
    were: the measurement runs in eval mode on its own generator, seeded by ``seed``. It runs on the model's
    device. ``progress`` shows a bar over the data on stderr.

    >>> result = fxvae.evaluate(vae, torch.rand(32, 64), likelihood="bernoulli", k=16)
    >>> sorted(result.measured)
    ['kl', 'mutual_info', 'neg_elbo', 'nll', 'recon']
    >>> fxvae.evaluate(ae, torch.rand(32, 64), likelihood="bernoulli").measured
    ('recon',)
    >>> density = fxvae.fit_density(ae, torch.rand(256, 64))
    >>> row = fxvae.evaluate(ae, torch.rand(32, 64), likelihood="bernoulli", density=density, k=8, per_sample=True)
    >>> row.measured, row.per_sample["nll"].shape
    (('recon', 'neg_elbo', 'nll'), torch.Size([32]))
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(f"k={k!r} must be a positive integer (posterior draws per sample; 1 gives the ELBO)")
    if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
        raise InputError(f"chunk={chunk!r} must be a positive integer (draws per decoder call)")
    if not isinstance(mixture, int) or mixture < 1:
        raise InputError(f"mixture={mixture!r} must be a positive integer")
    if not isinstance(model, nn.Module):
        raise InputError(f"the model is a {type(model).__name__}, not a torch.nn.Module")
    if density is not None and not isinstance(density, Density):
        raise InputError(
            f"density= takes a fxvae.Density, got a {type(density).__name__}: pass fxvae.fit_density(model, train)"
        )
    lik = likelihoods.get(likelihood, sigma=sigma)
    recipe = _conversion_or_none(model)
    family = family_of(recipe.options.latent) if recipe is not None else None
    if density is not None and family is not None and family.estimator != "posterior":
        raise InputError(
            f"a {family.name} model's latent is measured by its {family.estimator}, not by draws from a posterior "
            "under a prior: a density does not apply; leave density out"
        )
    run = _Run(model, data, recipe, batch_size, seed, progress)
    with torch.random.fork_rng(devices=_cuda_devices(run.device)), torch.no_grad():
        if recipe is None and density is None:
            result = _evaluate_ae(run, lik)
        elif recipe is None:
            result = _evaluate_ae_density(run, lik, k, chunk, density)
        elif family is not None and family.estimator == "codes":
            result = _evaluate_discrete(run, lik)
        elif family is not None and family.estimator == "point":
            result = dataclasses.replace(_evaluate_ae(run, lik), kind=family.kind)
        else:
            result = _evaluate_vae(run, lik, k, chunk, active_threshold, mixture, density)
    return result if per_sample else dataclasses.replace(result, per_sample=None)


POSTERIOR_STREAM = 0
"""The :func:`fxvae.measure.noise.normal` stream of the posterior draws."""
SCALE_STREAM = 1
"""The stream of the ``"optimal"`` scale's pre-pass draw."""
PROPOSAL_SAMPLES = 512
"""An autoencoder's proposal width is fitted on this many first samples of the data."""


def _conversion_or_none(model: nn.Module) -> Conversion | None:
    """The recipe of a model fxvae converted, None for any other model (an autoencoder)."""
    inner = unwrap(model)
    recipe = inner.meta.get(META_KEY) if isinstance(inner, fx.GraphModule) else None
    return recipe if isinstance(recipe, Conversion) else None


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


class _Run:
    """The data as checked batches on the model's device, one pass after another."""

    def __init__(
        self, model: nn.Module, data: Any, recipe: Conversion | None, batch_size: int | None, seed: int, shown: bool
    ) -> None:
        self.model = unwrap(model)
        self.recipe = recipe
        reference = first_tensor(self.model)
        self.device = reference.device if reference is not None else torch.device("cpu")
        self.count = input_count(self.model)
        # A one-shot iterator cannot be read twice; the "optimal" scale needs a first pass.
        self.data = list(data) if isinstance(data, Iterator) else data
        self.batch_size = batch_size
        self.seed = seed
        self.shown = shown
        self.input_shape: tuple[int, ...] | None = recipe.input_shape if recipe is not None else None
        self.n = 0

    def total(self) -> int | None:
        if isinstance(self.data, torch.Tensor):
            return math.ceil(len(self.data) / (self.batch_size or 256))
        try:
            return len(self.data)
        except TypeError:
            return None

    def passes(self, label: str) -> Iterator[tuple[torch.Tensor, tuple[Any, ...]]]:
        """The batches once more, checked, each with its samples' indices in the data; the first pass counts
        the samples."""
        count = 0
        with bar(label, self.total(), enabled=self.shown) as shown:
            for index, args in enumerate(batches(self.data, self.count, batch_size=self.batch_size)):
                if self.input_shape is None and args and isinstance(args[0], torch.Tensor):
                    self.input_shape = tuple(args[0].shape[1:])
                check_batch(args, self.input_shape or (), f"batch {index} of the data")
                if len(args) < self.count:
                    raise InputError(
                        f"batch {index} holds {len(args)} inputs, but the model takes {self.count} "
                        f"({', '.join(input_names(self.model, self.count))}): pass batches of (x, *conditions)"
                    )
                if len(args[0]) == 0:
                    continue
                rows = torch.arange(count, count + len(args[0]))
                count += len(args[0])
                yield rows, to_device(args, self.device)
                shown.advance()
        if count == 0:
            raise InputError("the data is empty: pass at least one sample (a tensor, a Dataset or a DataLoader)")
        self.n = count

    def first(self, limit: int) -> tuple[Any, ...]:
        """The first ``limit`` samples (fewer if the data is smaller) as one batch, whatever the batching."""
        taken: list[tuple[Any, ...]] = []
        seen = 0
        for _, args in self.passes("reading the first samples"):
            taken.append(args)
            seen += len(args[0])
            if seen >= limit:
                break
        joined = []
        for values in zip(*taken, strict=True):
            batched = all(isinstance(v, torch.Tensor) and v.dim() > 0 for v in values)
            joined.append(torch.cat(values)[:limit] if batched else values[0])
        return tuple(joined)

    def generator(self, offset: int) -> torch.Generator:
        return torch.Generator(self.device).manual_seed(self.seed + offset)


def _fitted(lik: Likelihood, run: _Run, reconstruct: Any) -> Likelihood:
    """``lik`` with an ``"optimal"`` scale fitted in a first pass over the data (others as they are)."""
    if not lik.needs_fit:
        return lik
    pairs = ((reconstruct(rows, args), args[0]) for rows, args in run.passes("fitting the likelihood's scale"))
    return likelihoods.fit(lik, pairs)


def _evaluate_ae(run: _Run, lik: Likelihood) -> Evaluation:
    model = run.model

    def reconstruct(rows: torch.Tensor, args: tuple[Any, ...]) -> torch.Tensor:
        return reconstruction_like(model(*args), args[0])

    with eval_mode(model):
        lik = _fitted(lik, run, reconstruct)
        terms = []
        for rows, args in run.passes("evaluating"):
            recon = reconstruct(rows, args)
            lik.check(recon, args[0])
            terms.append(-lik.log_prob(recon, args[0]).double().cpu())
    recon_t = torch.cat(terms)
    return Evaluation(
        kind="ae",
        n=run.n,
        k=1,
        likelihood=lik.describe(),
        seed=run.seed,
        data_dims=math.prod(run.input_shape or ()),
        recon=Estimate.of(recon_t),
        scale=getattr(lik, "scale_value", None),
        per_sample={"recon": recon_t},
    )


def _evaluate_ae_density(run: _Run, lik: Likelihood, k: int, chunk: int | None, density: Density) -> Evaluation:
    """The AE as the generative model density -> decoder -> likelihood, its bound from the proposal
    N(code, diag s^2) with the Laplace width of the linearised decoder (see :func:`evaluate`)."""
    model = run.model

    def reconstruct(rows: torch.Tensor, args: tuple[Any, ...]) -> torch.Tensor:
        return reconstruction_like(model(*args), args[0])

    with eval_mode(model):
        lik = _fitted(lik, run, reconstruct)
    if type(lik).fisher is Likelihood.fisher:
        raise InputError(
            f"the autoencoder's nll under a density fits its proposal's width with the likelihood's Fisher weight, "
            f"and {lik.describe()} has none: pass likelihood='gaussian', 'laplace', 'bernoulli' or 'bernoulli-probs'"
        )
    first = run.first(PROPOSAL_SAMPLES)
    encoder, decoder = coder(model, first)
    conditions = decoder_conditions(model, decoder, run.count)
    with eval_mode(model), eval_mode(encoder), eval_mode(decoder):
        code = encoder(*first)
        _check_latent(density, tuple(code.shape[1:]), "the autoencoder's codes")
        precision = (1 / density.marginal_variance()).reshape(density.latent_shape).to(code.device)
        with torch.enable_grad():
            log_s = auto_log_sigma(decoder, [code], [(first[0], *(first[i] for i in conditions))], lik, precision)
        scale, log_s_sum = torch.exp(log_s), log_s.double().sum()
        recon, elbo, nll = [], [], []
        for rows, args in run.passes("evaluating"):
            out = reconstruct(rows, args)
            lik.check(out, args[0])
            recon.append(-lik.log_prob(out, args[0]).double().cpu())
            mu = encoder(*args)
            draws = _Draws(decoder, lik, args, conditions, rows, run.seed, density, check=False)
            log_w_sum, log_mean, _ = draws.log_weights(mu, scale, log_s_sum, k, chunk)
            elbo.append((-log_w_sum / k).cpu())
            nll.append((math.log(k) - log_mean).cpu())
    recon_t, elbo_t, nll_t = torch.cat(recon), torch.cat(elbo), torch.cat(nll)
    proposal = (
        f"N(code, diag s^2), 1/s_j^2 = F_j + 1/v_j (F_j: the decoder's Fisher-weighted sensitivity on the first "
        f"{len(code)} samples; v_j: the density's marginal variance); s in [{scale.min().item():.3g}, "
        f"{scale.max().item():.3g}]"
    )
    return Evaluation(
        kind="ae",
        n=run.n,
        k=k,
        likelihood=lik.describe(),
        seed=run.seed,
        data_dims=math.prod(run.input_shape or ()),
        recon=Estimate.of(recon_t),
        neg_elbo=Estimate.of(elbo_t),
        nll=Estimate.of(nll_t),
        scale=getattr(lik, "scale_value", None),
        density=density.describe(),
        proposal=proposal,
        per_sample={"recon": recon_t, "neg_elbo": elbo_t, "nll": nll_t},
    )


def _check_latent(density: Density, shape: tuple[int, ...], what: str) -> None:
    if shape != density.latent_shape:
        raise InputError(
            f"{what} have shape {list(shape)}, but the density is on latents of shape {list(density.latent_shape)}: "
            "fit the density to this model (fxvae.fit_density(model, train))"
        )


def _evaluate_discrete(run: _Run, lik: Likelihood) -> Evaluation:
    """A VQ or FSQ model: its deterministic reconstruction, the rate of its codes and their use.

    The posterior is one code per position, so against a uniform prior over the K codes its KL is
    positions x log K nats; ``neg_elbo`` is recon + kl, the bound VQ-VAE papers report.
    """
    recipe = run.recipe
    info = recipe.quantizer
    quantizer = run.model.get_submodule(info.module)
    encoder, decoder = split(run.model)
    conditions = decoder_conditions(run.model, decoder, run.count)
    positions = math.prod(info.code_shape)
    with eval_mode(encoder), eval_mode(decoder):

        def reconstruct(args: tuple[Any, ...]) -> tuple[torch.Tensor, torch.Tensor]:
            codes = quantizer.codes(encoder(*args))
            out = decoder(quantizer.lookup(codes), *(args[i] for i in conditions))
            return reconstruction_like(out, args[0]), codes

        lik = _fitted(lik, run, lambda rows, args: reconstruct(args)[0])
        recon, counts = [], torch.zeros(info.codebook_size, dtype=torch.float64, device=run.device)
        for _, args in run.passes("evaluating"):
            out, codes = reconstruct(args)
            lik.check(out, args[0])
            recon.append(-lik.log_prob(out, args[0]).double().cpu())
            counts += torch.bincount(codes.reshape(-1), minlength=info.codebook_size).double()
    recon_t = torch.cat(recon)
    kl = torch.full_like(recon_t, positions * math.log(info.codebook_size))
    share = counts / counts.sum()
    return Evaluation(
        kind=info.family,
        n=run.n,
        k=1,
        likelihood=lik.describe(),
        seed=run.seed,
        data_dims=math.prod(run.input_shape or ()),
        recon=Estimate.of(recon_t),
        kl=Estimate.of(kl),
        neg_elbo=Estimate.of(recon_t + kl),
        scale=getattr(lik, "scale_value", None),
        rate_bits=positions * info.rate_bits,
        perplexity=math.exp(torch.special.entr(share).sum().item()),
        codes_used=float((counts > 0).double().mean()),
        per_sample={"recon": recon_t, "kl": kl, "neg_elbo": recon_t + kl},
    )


class _Moments:
    """Per-element count, mean and sum of squared deviations, merged batch by batch (Chan et al.) in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | float = 0.0
        self.m2: torch.Tensor | float = 0.0

    def add(self, values: torch.Tensor) -> None:
        values = values.double()
        count = len(values)
        mean = values.mean(0)
        m2 = (values - mean).pow(2).sum(0)
        total = self.n + count
        delta = mean - self.mean
        self.mean = self.mean + delta * count / total
        self.m2 = self.m2 + m2 + delta.pow(2) * self.n * count / total
        self.n = total

    def variance(self) -> torch.Tensor:
        return torch.as_tensor(self.m2) / max(self.n - 1, 1)


class _Draws:
    """One batch's k posterior draws, decoded in chunks: the per-sample sums that the bounds are made of."""

    def __init__(
        self,
        decoder: nn.Module,
        lik: Likelihood,
        args: tuple[Any, ...],
        conditions: list[int],
        rows: torch.Tensor,
        seed: int,
        density: Density | None,
        check: bool,
    ) -> None:
        self.decoder, self.lik, self.x = decoder, lik, args[0]
        self.conditions = [args[i] for i in conditions]
        self.rows, self.seed, self.density = rows, seed, density
        # A callable likelihood is checked by calling it: once per evaluation, not once per batch.
        self.check = check

    def log_weights(
        self, mu: torch.Tensor, sigma: torch.Tensor, log_sigma_sum: torch.Tensor, k: int, chunk: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sum_i log w_i, logsumexp_i log w_i, sum_i [log q(z_i | x) - log p(z_i)]) per sample, in float64.

        ``sigma`` broadcasts against ``mu``; ``log_sigma_sum`` is sum_d log sigma_d per sample (or one value).
        The draws are taken ``size`` at a time (``chunk``, or about ``CHUNK_ELEMENTS`` reconstruction elements),
        and without a ``chunk`` each block is decoded ``rows`` rows per call, the cache rule's
        (:func:`chunk_rows`): the decoder's activations stay in cache, while the likelihood and the sums run
        once per block, their per-call cost paid rarely.
        """
        x, density = self.x, self.density
        size = chunk or max(1, CHUNK_ELEMENTS // max(1, x.numel()))
        rows = None
        # On a GPU every call is a launch and a wide one fills the device: the cache rule is a CPU rule.
        if chunk is None and k > 1 and mu.device.type == "cpu":
            rows = chunk_rows(self.decoder, mu[:1], [_rows(value, slice(0, 1)) for value in self.conditions])
            size = max(size, (rows or 0) // len(x))
        # The noise is made for many chunks at once: each call has a fixed cost, which small chunks would repeat.
        block = size * max(1, NOISE_ELEMENTS // (size * mu.numel()))
        log_w_sum = torch.zeros(len(x), dtype=torch.float64, device=mu.device)
        gap_sum = torch.zeros_like(log_w_sum)
        log_mean = None
        for start in range(0, k, size):
            draws_here = min(size, k - start)
            if start % block == 0:
                made = range(start, min(start + block, k))
                noise_block = noise.normal(
                    self.seed, POSTERIOR_STREAM, self.rows, made, tuple(mu.shape[1:]), dtype=mu.dtype, device=mu.device
                )
            eps = noise_block[start - made.start : start - made.start + draws_here]
            z = (mu + sigma * eps).flatten(0, 1)
            tiled = [_tile(value, draws_here) for value in self.conditions]
            target = _tile(x, draws_here)
            out = self._decode(z, tiled, target, rows)
            if self.check:
                self.lik.check(out, target)
                self.check = False
            log_px = self.lik.log_prob(out, target).double().view(draws_here, len(x))
            log_qz = -0.5 * eps.double().pow(2).flatten(2).sum(2) - log_sigma_sum
            if density is None:
                # The 2 pi terms of log N(z; 0, I) and log q(z | x) cancel.
                log_pz = -0.5 * z.double().pow(2).flatten(1).sum(1).view(draws_here, len(x))
            else:
                log_pz = density.log_prob(z).view(draws_here, len(x))
                log_qz = log_qz - 0.5 * mu[0].numel() * _LOG_2PI
            log_w = log_px + log_pz - log_qz
            chunk_lse = torch.logsumexp(log_w, 0)
            log_mean = chunk_lse if log_mean is None else torch.logaddexp(log_mean, chunk_lse)
            log_w_sum = log_w_sum + log_w.sum(0)
            gap_sum = gap_sum + (log_qz - log_pz).sum(0)
        return log_w_sum, log_mean, gap_sum

    def _decode(self, z: torch.Tensor, conditions: list[Any], target: torch.Tensor, rows: int | None) -> torch.Tensor:
        """The reconstructions of the draws ``z`` (rows folded as (draw, sample)), ``rows`` rows per decoder call."""
        if rows is None or rows >= len(z):
            return reconstruction_like(self.decoder(z, *conditions), target)
        parts = []
        for start in range(0, len(z), rows):
            here = slice(start, start + rows)
            out = self.decoder(z[here], *(_rows(value, here) for value in conditions))
            parts.append(reconstruction_like(out, target[here]))
        return torch.cat(parts)


def _evaluate_vae(
    run: _Run,
    lik: Likelihood,
    k: int,
    chunk: int | None,
    active_threshold: float,
    mixture: int,
    density: Density | None = None,
) -> Evaluation:
    encoder, decoder = split(run.model)
    conditions = decoder_conditions(run.model, decoder, run.count)
    if density is not None:
        _check_latent(density, run.recipe.latent_shape, "the VAE's latents")
    with eval_mode(encoder), eval_mode(decoder):

        def reconstruct(rows: torch.Tensor, args: tuple[Any, ...]) -> torch.Tensor:
            mu, log_sigma = encoder(*args)
            eps = noise.normal(
                run.seed, SCALE_STREAM, rows, range(1), tuple(mu.shape[1:]), dtype=mu.dtype, device=mu.device
            )[0]
            z = mu + torch.exp(log_sigma) * eps
            return reconstruction_like(decoder(z, *(args[i] for i in conditions)), args[0])

        lik = _fitted(lik, run, reconstruct)
        mi_draws = run.generator(2)
        elbo, kl, nll = [], [], []
        kl_sum: torch.Tensor | float = 0.0
        moments = _Moments()
        posteriors: list[tuple[torch.Tensor, torch.Tensor]] = []
        kept = 0
        for rows, args in run.passes("evaluating"):
            x = args[0]
            mu, log_sigma = encoder(*args)
            flat_mu, flat_ls = mu.flatten(1).double(), log_sigma.flatten(1).double()
            moments.add(flat_mu)
            if kept < mixture:
                take = min(mixture - kept, len(x))
                posteriors.append((flat_mu[:take], flat_ls[:take]))
                kept += take
            draws = _Draws(decoder, lik, args, conditions, rows, run.seed, density, check=not elbo)
            log_w_sum, log_mean, gap_sum = draws.log_weights(mu, torch.exp(log_sigma), flat_ls.sum(1), k, chunk)
            if density is None:
                kl_elements = 0.5 * (flat_mu.pow(2) + torch.exp(2 * flat_ls) - 1) - flat_ls
                kl.append(kl_elements.sum(1).cpu())
                kl_sum = kl_sum + kl_elements.sum(0)
            else:
                kl.append((gap_sum / k).cpu())
            elbo.append((-log_w_sum / k).cpu())
            nll.append((math.log(k) - log_mean).cpu())
    elbo_t, kl_t, nll_t = torch.cat(elbo), torch.cat(kl), torch.cat(nll)
    variance = moments.variance()
    mu_all = torch.cat([m for m, _ in posteriors])
    ls_all = torch.cat([s for _, s in posteriors])
    return Evaluation(
        kind="vae",
        n=run.n,
        k=k,
        likelihood=lik.describe(),
        seed=run.seed,
        data_dims=math.prod(run.input_shape or ()),
        recon=Estimate.of(elbo_t - kl_t),
        kl=Estimate.of(kl_t),
        neg_elbo=Estimate.of(elbo_t),
        nll=Estimate.of(nll_t),
        kl_per_dim=tuple((torch.as_tensor(kl_sum) / run.n).tolist()) if density is None else (),
        unit_variance=tuple(variance.tolist()),
        active_units=int((variance > active_threshold).sum()),
        active_threshold=active_threshold,
        mutual_info=_mutual_info(mu_all, ls_all, mi_draws),
        mixture=len(mu_all),
        scale=getattr(lik, "scale_value", None),
        density=density.describe() if density is not None else None,
        per_sample={"recon": elbo_t - kl_t, "kl": kl_t, "neg_elbo": elbo_t, "nll": nll_t},
    )


def _rows(value: Any, samples: slice) -> Any:
    """A batch's ``samples`` of an input (a value without a batch dimension as it is)."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value
    return value[samples]


_ROW_BYTES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], int | None]] = weakref.WeakKeyDictionary()


def chunk_rows(decoder: nn.Module, z: torch.Tensor, conditions: list[Any]) -> int | None:
    """Rows (draws of one sample) per decoder call that keep the decoder's largest activation within
    :data:`CACHE_BYTES` (at least :data:`MIN_ROWS`), from shape propagation on its graph; None where its
    activations are unknown (a decoder that is no GraphModule, as the hooks tier's, or one that shape
    propagation cannot run).

    ``z`` and ``conditions`` are one sample's decoder inputs. The largest activation per row is the growth
    of each node's outputs from one row to two, so constants and parameters do not count. Measured once per
    decoder and input shape.

    >>> _, decoder = fxvae.split(vae)
    >>> chunk_rows(decoder, torch.zeros(1, 8), [])  # an 8 -> 32 -> 64 decoder: 64 floats, 256 bytes a row
    8192
    """
    if not isinstance(decoder, fx.GraphModule):
        return None
    key = (tuple(z.shape), z.dtype, *(tuple(c.shape) if isinstance(c, torch.Tensor) else type(c) for c in conditions))
    known = _ROW_BYTES.setdefault(decoder, {})
    if key not in known:
        known[key] = _largest_row_bytes(decoder, z, conditions)
    row_bytes = known[key]
    return None if not row_bytes else max(MIN_ROWS, CACHE_BYTES // row_bytes)


def _largest_row_bytes(decoder: fx.GraphModule, z: torch.Tensor, conditions: list[Any]) -> int | None:
    nodes = list(decoder.graph.nodes)
    saved = [node.meta.get("tensor_meta") for node in nodes]
    sizes = []
    try:
        for rows in (1, 2):
            propagate_shapes(decoder, (_tile(z, rows), *(_tile(value, rows) for value in conditions)))
            sizes.append([_meta_bytes(node.meta.get("tensor_meta")) for node in nodes])
    except Exception:
        # A chunk chosen automatically falls back quietly (STYLE.md, habit 6): a decoder that shape propagation
        # cannot run (data-dependent control flow, a fixed batch) is decoded by the output-elements rule.
        return None
    finally:
        # The decoder's annotations stay those it came with.
        for node, meta in zip(nodes, saved, strict=True):
            if meta is None:
                node.meta.pop("tensor_meta", None)
            else:
                node.meta["tensor_meta"] = meta
    return max((two - one for one, two in zip(*sizes, strict=True)), default=0) or None


def _meta_bytes(meta: Any) -> int:
    leaves = tree_leaves(meta, is_leaf=lambda m: isinstance(m, TensorMetadata))
    return sum(m.shape.numel() * m.dtype.itemsize for m in leaves if isinstance(m, TensorMetadata))


def _tile(value: Any, times: int) -> Any:
    """``times`` copies of a batch along dim 0, matching draws folded as (draw, sample) into the batch."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or times == 1:
        return value
    return value.repeat(times, *([1] * (value.dim() - 1)))


def _mutual_info(mu: torch.Tensor, log_sigma: torch.Tensor, generator: torch.Generator) -> Estimate:
    """E_i[log q(z_i | x_i) - log (1/M) sum_j q(z_i | x_j)], z_i ~ q(z | x_i), over M posteriors (float64)."""
    count = len(mu)
    eps = torch.randn(mu.shape, generator=generator, dtype=torch.float64, device=mu.device)
    z = mu + torch.exp(log_sigma) * eps
    inverse_variance = torch.exp(-2 * log_sigma)
    scaled_mu = mu * inverse_variance
    # -2 log q(z | x_j) = sum_d (z - mu_j)^2 / sigma_j^2 + 2 log sigma_j + log 2 pi, expanded as matmuls.
    constant = (mu * scaled_mu).sum(1) + 2 * log_sigma.sum(1) + mu.shape[1] * _LOG_2PI
    terms = []
    for start in range(0, count, _MI_ROWS):
        rows = z[start : start + _MI_ROWS]
        quadratic = rows.pow(2) @ inverse_variance.T - 2 * rows @ scaled_mu.T + constant
        log_marginal = torch.logsumexp(-0.5 * quadratic, 1) - math.log(count)
        own = eps[start : start + _MI_ROWS]
        log_own = -0.5 * own.pow(2).sum(1) - log_sigma[start : start + _MI_ROWS].sum(1) - 0.5 * mu.shape[1] * _LOG_2PI
        terms.append(log_own - log_marginal)
    return Estimate.of(torch.cat(terms).cpu())
