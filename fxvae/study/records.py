"""What a comparison measured, as its records hold it: per start and seed, the held-out curve (:class:`Point`),
the final measurement and the AE-against-VAE axes (:class:`Axes`), gathered in :class:`Records` with the queries
that the report, its verdicts and its pictures make of them.

Everything here is rebuilt from the records of ``metrics.jsonl`` alone (:func:`fxvae.study.ledger.read`), so
a report can be made again, or from a comparison that was stopped, without training anything. What the records
say (:mod:`fxvae.study.verdict`, :mod:`fxvae.study.ae_vs_vae`, :mod:`fxvae.study.report`,
:mod:`fxvae.study.plots`) reads them from here; :class:`fxvae.Comparison` joins the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fxvae.measure.evaluation import Estimate, Evaluation

NEAR_NATS = 1.0
""""Close to converged": within this many nats per sample of scratch's final -ELBO."""


@dataclass(frozen=True)
class Point:
    """A run after ``epoch`` epochs (0: before any step): held-out measurement and training time so far."""

    epoch: int
    step: int
    train_loss: float | None
    seconds: float
    evaluation: Evaluation

    @property
    def objective(self) -> float:
        """What the comparison ranks by: the held-out -ELBO of a VAE; the reconstruction term (the distortion)
        of a discrete latent, whose -ELBO adds a constant, and of the AE."""
        return objective_of(self.evaluation)


@dataclass(frozen=True)
class Distance:
    """A sample-quality measurement as a final record holds it (``fxvae.SampleQuality.to_dict()``): how far a set
    of samples lies from a reference set (lower is closer), with its standard error and permutation p-value.

    >>> d = Distance.from_dict({"distance": {"value": 0.012, "stderr": 0.002}, "p_value": 0.01,
    ...                         "features": "the data, flattened", "n_samples": 500, "n_reference": 360})
    >>> d.distance.value, d.features
    (0.012, 'the data, flattened')
    """

    distance: Estimate
    p_value: float | None = None
    features: str = ""
    n_samples: int = 0
    n_reference: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Distance:
        return cls(
            Estimate(**data["distance"]),
            data.get("p_value"),
            data.get("features", ""),
            data.get("n_samples", 0),
            data.get("n_reference", 0),
        )


@dataclass(frozen=True)
class Axes:
    """A run's AE-against-VAE measurements: the final record's ``"axes"``, read by :meth:`from_dict`.

    Keys of ``nll``, ``samples``, ``latent`` and ``paired_nll`` name what the model samples from: ``"prior"``
    (a VAE's N(0, I)) or a density kind fitted to the codes (``"gaussian"``, ``"gmm"``).

    >>> axes = Axes.from_dict({"nll": {"prior": {"value": 24.3, "stderr": 0.4}}, "active_units": 6,
    ...                        "latent_dims": 8, "paired": {"nll": {"prior": [24.0, 24.6]}, "mse": [0.01, 0.02]}})
    >>> axes.nll["prior"].value, axes.active_units, axes.paired_mse
    (24.3, 6, [0.01, 0.02])
    """

    psnr: dict[str, float | None] | None = None
    """``{"eval": dB, "sampled": dB or None}`` for images, else None."""
    ssim: dict[str, float | None] | None = None
    nll: dict[str, Estimate] = field(default_factory=dict)
    samples: dict[str, Distance] = field(default_factory=dict)
    """Decoded draws of the prior or density against held-out data."""
    latent: dict[str, Distance] = field(default_factory=dict)
    """Held-out codes against draws of the prior or density, in latent space."""
    active_units: int | None = None
    latent_dims: int | None = None
    interpolation: Distance | None = None
    """Decoded midpoints of straight lines between held-out codes against held-out data."""
    probe: Estimate | None = None
    """Linear-probe accuracy on the codes (labels given)."""
    auroc: float | None = None
    auroc_score: str | None = None
    """The per-sample anomaly score the AUROC ranks by: ``"recon"`` or ``"nll"``."""
    paired_nll: dict[str, list[float]] = field(default_factory=dict)
    """Per held-out sample, in data order, under the seed every model of a seed shares (common random numbers)."""
    paired_mse: list[float] | None = None
    """Per held-out sample eval-mode MSE, in data order."""
    densities: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Axes:
        paired = data.get("paired") or {}
        return cls(
            psnr=data.get("psnr"),
            ssim=data.get("ssim"),
            nll={k: Estimate(**v) for k, v in (data.get("nll") or {}).items() if v is not None},
            samples={k: Distance.from_dict(v) for k, v in (data.get("samples") or {}).items() if v is not None},
            latent={k: Distance.from_dict(v) for k, v in (data.get("latent") or {}).items() if v is not None},
            active_units=data.get("active_units"),
            latent_dims=data.get("latent_dims"),
            interpolation=Distance.from_dict(data["interpolation"]) if data.get("interpolation") else None,
            probe=Estimate(**data["probe"]) if data.get("probe") else None,
            auroc=data.get("auroc"),
            auroc_score=data.get("auroc_score"),
            paired_nll=dict(paired.get("nll") or {}),
            paired_mse=paired.get("mse"),
            densities=dict(data.get("densities") or {}),
        )


@dataclass
class RunRecord:
    """One start under one seed."""

    start: str
    seed: int
    points: list[Point] = field(default_factory=list)
    final: Evaluation | None = None
    steps_per_s: float | None = None
    reconstructions: list[Any] | None = None
    """Data-space means of the shown held-out samples' reconstructions (eval mode)."""
    samples: list[Any] | None = None
    """Prior draws decoded: z ~ N(0, I) for a VAE, codes drawn uniformly from the codebook for a discrete latent;
    the AE: draws of the density named by :attr:`samples_from`, or (records without densities) its plain
    conversion's decoder on z ~ N(0, I)."""
    samples_from: str | None = None
    """The density fitted to the AE's codes that its :attr:`samples` decode (None: the prior)."""
    mse: dict[str, float | None] | None = None
    """The final held-out mean squared error per element, in the data's units: ``{"eval": ..., "sampled": ...}``
    ("sampled": a Gaussian VAE's z drawn as in training, else None). None in records older than the field."""
    model_file: str | None = None
    """The run's final model, written with :func:`fxvae.save`, relative to the comparison's folder."""
    axes: Axes | None = None
    """The AE-against-VAE measurements of the final record (None in records older than them)."""
    pictures: dict[str, Any] | None = None
    """Decoded samples per source (``{"samples": {"prior" or a density kind: [...]}, "interpolation": [...]}``)."""

    @property
    def is_vae(self) -> bool:
        return self.start != "ae"

    @property
    def final_objective(self) -> float | None:
        """The table's final value: :attr:`Point.objective` of the final measurement (None before it)."""
        return None if self.final is None else objective_of(self.final)

    def objective(self) -> list[float]:
        return [p.objective for p in self.points]


@dataclass
class Records:
    """A comparison's records: its config, and per start and seed the held-out curves and final measurements.

    ``epochs_to_within()`` says how fast each start gets close to scratch's final -ELBO, ``final_values(start)``
    are the table's final values (what the verdict quotes) and ``best()`` is the run that ends lowest (its
    ``model_file`` loads with ``fxvae.load``). :class:`fxvae.Comparison` adds what they say.

    >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3), neg_elbo=Estimate(25.0, 0.3))
    >>> point = Point(1, 10, None, 0.5, final)
    >>> records = Records({}, [RunRecord("scratch", 0, [point], final), RunRecord("warm", 0, [point], final)])
    >>> records.starts, records.final_values("warm"), records.epochs_to_within()
    (['scratch', 'warm'], [25.0], {'scratch': [1], 'warm': [1]})
    """

    config: dict[str, Any]
    runs: list[RunRecord]
    shown: list[Any] | None = None
    """The held-out samples the reconstruction pictures show."""
    throughput: dict[str, float] | None = None
    stopped: str | None = None
    """Why the comparison ended before its epochs (a budget), if it did."""

    @property
    def discrete(self) -> bool:
        return self.config.get("options", {}).get("latent", "gaussian") != "gaussian"

    @property
    def measure(self) -> str:
        """The name of what the comparison ranks by (see :attr:`Point.objective`)."""
        return "distortion" if self.discrete else "-ELBO"

    @property
    def has_axes(self) -> bool:
        """Whether the final records hold the AE-against-VAE measurements (records older than them do not).

        >>> Records({}, [RunRecord("warm", 0)]).has_axes
        False
        """
        return any(r.axes is not None for r in self.runs)

    @property
    def starts(self) -> list[str]:
        return list(dict.fromkeys(r.start for r in self.runs))

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    def run(self, start: str, seed: int) -> RunRecord | None:
        return next((r for r in self.runs if r.start == start and r.seed == seed), None)

    def of(self, start: str) -> list[RunRecord]:
        return [r for r in self.runs if r.start == start]

    def final_values(self, start: str) -> list[float]:
        """The table's final values of ``start``: :attr:`RunRecord.final_objective` of each seed measured at the
        end. The verdict quotes these, never a per-epoch measurement."""
        return [v for r in self.of(start) if r.points and (v := r.final_objective) is not None]

    def epochs_to_within(self, nats: float = NEAR_NATS, reference: str = "scratch") -> dict[str, list[int | None]]:
        """Per start, per seed: the first epoch whose held-out -ELBO is within ``nats`` of the reference start's
        final measurement (the table's final value) under the same seed (0: already before any step; None:
        never). A seed whose reference has no final measurement is left out.

        Only measured epochs count: measured every ``eval_every`` epochs, a run that got within reach between
        two measurements is counted at the later one, up to ``eval_every - 1`` epochs after it got there.

        >>> far, near = (Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(v, 0.3), neg_elbo=Estimate(v, 0.3))
        ...              for v in (40.0, 24.5))
        >>> every_5 = [Point(0, 0, None, 0.0, far), Point(5, 50, None, 5.0, far), Point(10, 100, None, 10.0, near)]
        >>> Records({}, [RunRecord("scratch", 0, every_5, near)]).epochs_to_within()
        {'scratch': [10]}
        """
        result: dict[str, list[int | None]] = {}
        for start in self.starts:
            reached: list[int | None] = []
            for run in self.of(start):
                ref = self.run(reference, run.seed)
                if not run.is_vae or ref is None or ref.final_objective is None:
                    continue
                target = ref.final_objective + nats
                reached.append(next((p.epoch for p in run.points if p.objective <= target), None))
            if reached:
                result[start] = reached
        return result

    def best(self) -> RunRecord | None:
        """The VAE (or quantised) run with the lowest final value of :attr:`measure` (None before any final)."""
        finished = [r for r in self.runs if r.is_vae and r.final_objective is not None]
        return min(finished, key=lambda r: (r.final_objective, self.starts.index(r.start), r.seed), default=None)

    def table(self) -> list[dict[str, Any]]:
        """One row per start, each value a list over the seeds (see :meth:`to_markdown` for the columns)."""
        reached = self.epochs_to_within()
        rows = []
        for start in self.starts:
            runs = [r for r in self.of(start) if r.points]
            finals = [r.final for r in runs if r.final is not None]
            rows.append(
                {
                    "start": start,
                    "epoch0": [r.points[0].objective for r in runs],
                    "final": self.final_values(start),
                    "nll": [f.nll.value for f in finals if f.nll is not None],
                    "neg_elbo": [f.neg_elbo.value for f in finals if f.neg_elbo is not None],
                    "recon": [f.recon.value for f in finals],
                    "mse": [r.mse["eval"] for r in runs if r.final is not None and r.mse],
                    "kl": [f.kl.value for f in finals if f.kl is not None],
                    "active": [f.active_units for f in finals if f.active_units is not None],
                    "mutual_info": [f.mutual_info.value for f in finals if f.mutual_info is not None],
                    "reached": reached.get(start, []),
                    "steps_per_s": [r.steps_per_s for r in runs if r.steps_per_s],
                    "rate_bits": [f.rate_bits for f in finals if f.rate_bits is not None],
                    "perplexity": [f.perplexity for f in finals if f.perplexity is not None],
                    "codes_used": [100 * f.codes_used for f in finals if f.codes_used is not None],
                    "epochs": [r.points[-1].epoch for r in runs],
                }
            )
        return rows


def objective_of(evaluation: Evaluation) -> float:
    """See :attr:`Point.objective`."""
    value = evaluation.neg_elbo if evaluation.kind == "vae" else evaluation.recon
    return value.value
