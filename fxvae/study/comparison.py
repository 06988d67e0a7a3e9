"""What a comparison measured, and the report it makes: the AE against its VAEs on the same axes (a row per model,
a cell bold only beyond the standard error of its difference, a verdict computed from them), then a table per
start, a verdict in words, pictures.

Everything here is rebuilt from the records of ``metrics.jsonl`` alone (:func:`fxvae.study.ledger.read`), so
a report can be made again, or from a comparison that was stopped, without training anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fxvae.measure.evaluation import Estimate, Evaluation

NEAR_NATS = 1.0
""""Close to converged": within this many nats per sample of scratch's final -ELBO."""
STILL_IMPROVING = 0.1
"""A run whose held-out -ELBO fell by more than this many nats in its last epoch had not converged."""


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
class Comparison:
    """The result of :func:`fxvae.compare`: per start and seed, the held-out curves and final measurements.

    ``to_markdown()`` is the report, ``plot(dir)`` writes its pictures, ``epochs_to_within()`` says how fast each
    start gets close to scratch's final -ELBO, ``final_values(start)`` are the table's final values (what the
    verdict quotes) and ``best()`` is the run that ends lowest (its ``model_file`` loads with ``fxvae.load``).

    >>> starts = ("ae", "scratch", "warm", "calibrated")
    >>> result = fxvae.compare(ae, torch.randn(120, 64), starts=starts, epochs=1, k=1, final_k=2, progress=False)
    >>> result.starts, len(result.runs)
    (['ae', 'scratch', 'warm', 'calibrated'], 4)
    >>> vaes = [s for s in result.starts if s != "ae"]  # the AE's value is its reconstruction term, not a -ELBO
    >>> result.best().final_objective == min(v for s in vaes for v in result.final_values(s))
    True
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
        never). A seed whose reference has no final measurement is left out."""
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

    def verdict(self) -> list[str]:
        """Sentences computed from the table's numbers: what the warm starts buy against scratch, the price of
        the latent, the best run's model file, and what to trust."""
        lines: list[str] = []
        if self.runs and all(r.final is None for r in self.runs):
            lines.append(
                "No run has a final measurement (the comparison was interrupted before it): resume it to measure "
                "the final values that the verdict compares."
            )
        reached = self.epochs_to_within()
        scratch = self.final_values("scratch")
        epochs = max((r.points[-1].epoch for r in self.runs if r.points), default=0)
        if scratch:
            reference = statistics.mean(scratch)
            zero = {
                s: statistics.mean(r.points[0].objective for r in runs)
                for s in self.starts
                if s != "ae" and (runs := [r for r in self.of(s) if r.points])
            }
            at_zero = ", ".join(f"{s} {_against(value, reference)}" for s, value in zero.items())
            lines.append(
                f"Before any step, against scratch's final held-out {self.measure} ({reference:.2f} nats): {at_zero}."
            )
            base = _mean_epochs(reached.get("scratch", []), epochs)
            for start in self.starts:
                if start in ("scratch", "ae") or start not in reached:
                    continue
                got = _mean_epochs(reached[start], epochs)
                per_seed = ", ".join(_epoch_text(e, epochs) for e in reached[start])
                speed = _speed(got, base)
                if got == 0:
                    when = "before any step"
                else:
                    when = f"after {got:.1f} epochs" if got is not None else f"not within {epochs} epochs"
                seeds = f" (per seed: {per_seed})" if len(reached[start]) > 1 else ""
                lines.append(
                    f"{start} gets within {NEAR_NATS:g} nat of scratch's final {self.measure} {when}{seeds}{speed}."
                )
            spread = statistics.stdev(scratch) if len(scratch) > 1 else None
            for start in self.starts:
                values = self.final_values(start)
                if start in ("scratch", "ae") or not values:
                    continue
                final = statistics.mean(values)
                gap = final - reference
                side = "above" if gap > 0 else "below"
                if spread is None:
                    judged = "one seed: no spread to judge the gap by"
                else:
                    within = abs(gap) <= 2 * spread
                    judged = f"{'within' if within else 'beyond'} twice the seeds' spread (sd {spread:.2f})"
                lines.append(
                    f"At the end, {start} is {abs(gap):.2f} nats {side} scratch ({final:.2f} against "
                    f"{reference:.2f}): {judged}."
                )
        for start in self.starts:
            drops = [c[-2] - c[-1] for r in self.of(start) if r.is_vae and len(c := r.objective()) >= 2]
            if drops and statistics.mean(drops) > STILL_IMPROVING:
                lines.append(
                    f"{start} was still improving at the end ({_fmt(drops)} nats in its last epoch): its final "
                    "value is not converged, and more epochs would lower it."
                )
        lines += self._noise()
        # With the AE-against-VAE measurements, their own section states the price, with its standard errors.
        lines += [] if self.has_axes else self._price()
        if self.throughput and not self.has_axes:
            step = "quantised model's" if self.discrete else "VAE"
            lines.append(
                f"A {step} training step runs at {self.throughput['ratio']:.2f}x the AE step's rate "
                f"({self.throughput['vae_steps_per_s']:.1f} against {self.throughput['ae_steps_per_s']:.1f} steps/s)."
            )
        lines += self._best_file()
        if self.stopped:
            lines.append(f"The comparison ended early: {self.stopped}.")
        return lines

    # --- AE against VAE ---------------------------------------------------------------------------------

    @property
    def has_axes(self) -> bool:
        """Whether the final records hold the AE-against-VAE measurements (records older than them do not).

        >>> Comparison({}, [RunRecord("warm", 0)]).has_axes
        False
        """
        return any(r.axes is not None for r in self.runs)

    def models(self) -> list[Model]:
        """The AE-vs-VAE table's rows: the AE with each density it was measured with, then each VAE start.

        >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3))
        >>> nll = {"gaussian": Estimate(27.0, 0.3), "gmm": Estimate(26.0, 0.3)}
        >>> runs = [RunRecord("ae", 0, final=final, axes=Axes(nll=nll)),
        ...         RunRecord("warm", 0, final=final, axes=Axes(nll={"prior": Estimate(25.0, 0.3)}))]
        >>> [m.name for m in Comparison({}, runs).models()]
        ['ae + gaussian', 'ae + gmm', 'warm']
        """
        models = []
        for start in self.starts:
            measured = [r.axes for r in self.of(start) if r.axes is not None]
            if not measured:
                continue
            if start != "ae":
                models.append(Model(start))
                continue
            kinds = {k for a in measured for k in (*a.nll, *a.samples, *a.latent, *a.densities) if k != "prior"}
            # An AE without a density (none was fitted) still has its reconstruction, latent and cost columns.
            kinds = kinds or {"prior"}
            models += [Model(start, kind) for kind in sorted(kinds, key=lambda k: (k != "gaussian", k))]
        return models

    def ex_post_kind(self) -> str | None:
        """The density the VAEs' second samples column draws from: a gmm where measured, else a gaussian (None:
        the VAEs' samples were measured from their prior only).

        >>> far = Distance(Estimate(0.05, 0.002))
        >>> runs = [RunRecord("warm", 0, axes=Axes(samples={"prior": far, "gaussian": far, "gmm": far}))]
        >>> Comparison({}, runs).ex_post_kind()
        'gmm'
        """
        kinds = {k for r in self.runs if r.is_vae and r.axes for k in r.axes.samples if k != "prior"}
        return next((k for k in ("gmm", "gaussian", *sorted(kinds)) if k in kinds), None)

    def measured(self, model: Model, axis: Axis) -> dict[int, Measured]:
        """Per seed: ``model``'s value on ``axis`` (runs without a final measurement left out).

        >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3))
        >>> c = Comparison({}, [RunRecord("warm", 3, final=final, axes=Axes(nll={"prior": Estimate(25.0, 0.3)}))])
        >>> c.measured(Model("warm"), next(a for a in ae_vs_vae_axes(c) if a.name.startswith("NLL")))
        {3: Measured(value=25.0, stderr=0.3, per_sample=None)}
        """
        out = {}
        for run in self.of(model.start):
            if run.final is not None and (value := axis.read(run, model.source)) is not None:
                out[run.seed] = value
        return out

    def difference(self, a: Model, b: Model, axis: Axis) -> Difference | None:
        """``a - b`` on ``axis`` over the seeds both have: per seed, paired per sample where both recorded
        per-sample values (the same held-out samples, the same posterior noise), else the two standard errors
        combined. Over several seeds the standard error is the larger of the seeds' spread of the difference
        / sqrt(seeds) and the measurements' own; with one seed, the measurement's (None where it has none).

        >>> final = Evaluation("vae", 3, 1, "gaussian", 0, 4, recon=Estimate(1.0, 0.1))
        >>> def run(start, source, nll):
        ...     axes = Axes(nll={source: Estimate.of(torch.tensor(nll))}, paired_nll={source: nll})
        ...     return RunRecord(start, 0, final=final, axes=axes)
        >>> c = Comparison({}, [run("ae", "gmm", [30.0, 20.0, 25.0]), run("warm", "prior", [29.0, 19.1, 24.0])])
        >>> nll = next(a for a in ae_vs_vae_axes(c) if a.name.startswith("NLL"))
        >>> d = c.difference(Model("ae", "gmm"), Model("warm"), nll)
        >>> round(d.value, 2), d.paired, d.beyond  # unpaired, its standard error would be 3 nats
        (0.97, True, True)
        """
        one, two = self.measured(a, axis), self.measured(b, axis)
        seeds = sorted(set(one) & set(two))
        if not seeds:
            return None
        diffs, errors, paired = [], [], True
        for seed in seeds:
            x, y = one[seed], two[seed]
            diffs.append(x.value - y.value)
            error = None
            if x.per_sample is not None and y.per_sample is not None:
                error = _paired_stderr(x.per_sample, y.per_sample)
            if error is None:
                paired = False
                if x.stderr is not None and y.stderr is not None:
                    error = math.hypot(x.stderr, y.stderr)
            errors.append(error)
        mean = statistics.mean(diffs)
        within = math.sqrt(sum(e**2 for e in errors)) / len(errors) if None not in errors else None
        if len(seeds) > 1:
            between = statistics.stdev(diffs) / math.sqrt(len(seeds))
            stderr: float | None = max(between, within or 0.0)
        else:
            stderr = within
        return Difference(mean, stderr, paired and None not in errors, len(seeds))

    def better(self, a: Model, b: Model, axis: Axis) -> bool:
        """Whether ``a`` is better than ``b`` on ``axis`` beyond the standard error of their difference.

        >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3))
        >>> runs = [RunRecord("ae", 0, final=final, axes=Axes(nll={"gmm": Estimate(26.0, 0.3)})),
        ...         RunRecord("warm", 0, final=final, axes=Axes(nll={"prior": Estimate(25.0, 0.3)}))]
        >>> c = Comparison({}, runs)
        >>> nll = next(a for a in ae_vs_vae_axes(c) if a.name.startswith("NLL"))
        >>> c.better(Model("warm"), Model("ae", "gmm"), nll), c.better(Model("ae", "gmm"), Model("warm"), nll)
        (True, False)
        """
        d = self.difference(a, b, axis)
        if axis.better is None or d is None or not d.beyond:
            return False
        return d.value < 0 if axis.better == "lower" else d.value > 0

    def ae_vs_vae_table(self) -> list[dict[str, Any]]:
        """One row per model (see :meth:`models`): ``{"model": name, axis name: {"values": [per seed],
        "bold": bool}}``, a cell bold where it is better than every other row that measures something else
        beyond the standard error of the difference (:meth:`better`). Columns no row measured are left out.

        >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3))
        >>> nll = {"gaussian": Estimate(27.0, 0.3), "gmm": Estimate(25.8, 0.3)}
        >>> runs = [RunRecord("ae", 0, final=final, axes=Axes(nll=nll)),
        ...         RunRecord("warm", 0, final=final, axes=Axes(nll={"prior": Estimate(24.0, 0.3)}))]
        >>> table = Comparison({}, runs).ae_vs_vae_table()
        >>> [(row["model"], row["NLL (k=?)"]["values"], row["NLL (k=?)"]["bold"]) for row in table]
        [('ae + gaussian', [27.0], False), ('ae + gmm', [25.8], False), ('warm', [24.0], True)]
        """
        models, axes = self.models(), ae_vs_vae_axes(self)
        cells = {(m, a.name): [v.value for v in self.measured(m, a).values()] for m in models for a in axes}
        axes = [a for a in axes if any(cells[m, a.name] for m in models)]
        rows = []
        for model in models:
            row: dict[str, Any] = {"model": model.name}
            for axis in axes:
                others = [o for o in models if axis.key(o) != axis.key(model) and cells[o, axis.name]]
                bold = bool(cells[model, axis.name] and others) and all(self.better(model, o, axis) for o in others)
                row[axis.name] = {"values": cells[model, axis.name], "bold": bold}
            rows.append(row)
        return rows

    def ae_vs_vae_verdict(self) -> list[str]:
        """Sentences computed from the AE-vs-VAE table's numbers: what the VAE gains and costs (first), then the
        evidence per axis, each difference with its standard error (:meth:`difference`).

        >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3))
        >>> runs = [RunRecord("ae", 0, final=final, axes=Axes(nll={"gmm": Estimate(27.0, 0.3)})),
        ...         RunRecord("warm", 0, final=final, axes=Axes(nll={"prior": Estimate(25.0, 0.3)}))]
        >>> verdict = Comparison({}, runs).ae_vs_vae_verdict()
        >>> print(verdict[0])
        What the VAE gains on this model and data: a better likelihood; what it costs: nothing beyond the standard
        errors.
        >>> verdict[1]
        "NLL of ae + gmm minus each VAE's, in nats per sample, unpaired: warm +2.00 ± 0.42."
        """
        models = self.models()
        ae = [m for m in models if m.is_ae]
        vaes = [m for m in models if not m.is_ae]
        if not vaes:
            return []
        if not ae:
            return [
                "The comparison ran no ae start: add ae to the starts to compare the AE against its VAEs on these "
                "axes (the table compares the VAE starts alone)."
            ]
        by_name = {a.name: a for a in ae_vs_vae_axes(self)}
        axis = {key: next(a for n, a in by_name.items() if n.startswith(key)) for key in ("MSE (eval)", "NLL")}
        axis |= {k: by_name[k] for k in ("samples (own prior or density)", "interpolation", "steps/s")}
        gains: list[str] = []
        costs: list[str] = []
        lines: list[str] = []
        for key, gain, cost, say in (
            (
                "samples (own prior or density)",
                "samples closer to the data",
                "samples further from the data than the AE's from its density",
                self._sampling_lines,
            ),
            ("NLL", "a better likelihood", "a worse likelihood than the AE's with its density", self._likelihood_lines),
            ("interpolation", "a smoother latent", "a rougher latent", self._latent_lines),
        ):
            ranked = self._vae_against_ae(axis[key], ae, vaes)
            if ranked == "vae":
                gains.append(gain)
            elif ranked == "ae":
                costs.append(cost)
            elif key == "NLL" and ae and not self._measured_any(ae, axis[key]) and self._measured_any(vaes, axis[key]):
                gains.append("a likelihood (the AE has none without a density)")
            lines += say(axis[key], ae, vaes)
        ranked = self._vae_against_ae(axis["MSE (eval)"], ae, vaes)
        if ranked == "ae":
            costs.append("reconstruction in the data's units")
        elif ranked == "vae":
            gains.append("reconstruction in the data's units")
        lines += self._reconstruction_lines(axis["MSE (eval)"], ae, vaes)
        rate = self._rate_line(axis["steps/s"], ae, vaes)
        if rate is not None:
            lines.append(rate[0])
            if rate[1]:
                costs.append("step rate")
        lines += self._downstream_lines(models)
        summary = (
            f"What the VAE gains on this model and data: {', '.join(gains) or 'nothing beyond the standard errors'}"
            f"; what it costs: {', '.join(costs) or 'nothing beyond the standard errors'}."
        )
        return [summary, *lines]

    def _measured_any(self, models: Sequence[Model], axis: Axis) -> bool:
        return any(self.measured(m, axis) for m in models)

    def _best(self, models: Sequence[Model], axis: Axis) -> Model | None:
        means = {
            m: statistics.mean(v.value for v in values.values()) for m in models if (values := self.measured(m, axis))
        }
        if not means:
            return None
        sign = -1 if axis.better == "higher" else 1
        return min(means, key=lambda m: sign * means[m])

    def _mean(self, model: Model, axis: Axis) -> float:
        return statistics.mean(v.value for v in self.measured(model, axis).values())

    def _vae_against_ae(self, axis: Axis, ae: Sequence[Model], vaes: Sequence[Model]) -> str | None:
        """ "vae" where the best VAE row beats the best AE row beyond the standard error, "ae" where the
        reverse, None otherwise."""
        best_vae, best_ae = self._best(vaes, axis), self._best(ae, axis)
        if best_vae is None or best_ae is None:
            return None
        if self.better(best_vae, best_ae, axis):
            return "vae"
        return "ae" if self.better(best_ae, best_vae, axis) else None

    def _judged(self, a: Model, b: Model, axis: Axis, digits: int | None) -> str:
        d = self.difference(a, b, axis)
        if d is None:
            return ""
        if d.stderr is None:
            return f" ({d.text(digits)}; no standard error to judge it by)"
        word = "beyond" if d.beyond else "within"
        return f" ({d.text(digits)}, {word} {_times(BEYOND)} its standard error)"

    def _sampling_lines(self, axis: Axis, ae: Sequence[Model], vaes: Sequence[Model]) -> list[str]:
        best_vae, best_ae = self._best(vaes, axis), self._best(ae, axis)
        if best_vae is None:
            return []
        features = next(
            (d.features for r in self.runs if r.axes for d in r.axes.samples.values() if d.features), "the data"
        )
        listed = ", ".join(f"{m.name} {_sig(self._mean(m, axis))}" for m in (*ae, *vaes) if self.measured(m, axis))
        lines = [
            f"Samples against held-out data (kernel MMD², lower is closer; features: {features}), the AE decoding "
            f"draws of the density fitted to its codes, each VAE its prior N(0, I): {listed}."
        ]
        if best_ae is not None:
            gap = self._judged(best_vae, best_ae, axis, None)
            if self.better(best_vae, best_ae, axis):
                verdict = f"the VAE gains sampling: {best_vae.name} samples closer than {best_ae.name}{gap}"
            elif self.better(best_ae, best_vae, axis):
                verdict = f"{best_ae.name} samples closer than every VAE from its prior{gap}"
            else:
                verdict = (
                    f"{best_ae.name} samples as well as {best_vae.name}{gap}, as Ghosh et al. (2020) found of an AE "
                    "with an ex-post density"
                )
            lines.append(verdict + ".")
        kind = self.ex_post_kind()
        if kind is not None:
            for vae in vaes:
                # The samples column read at another source of the same run: ex-post minus prior.
                ex_post = Model(vae.start, kind)
                if self.better(ex_post, vae, axis):
                    lines.append(
                        f"{vae.name} samples closer from an ex-post {kind} fitted to its codes than from its prior "
                        f"({_sig(self._mean(ex_post, axis))} against {_sig(self._mean(vae, axis))}): its codes do "
                        "not fill N(0, I), the mismatch Dai & Wipf (2019) describe."
                    )
        return lines

    def _likelihood_lines(self, axis: Axis, ae: Sequence[Model], vaes: Sequence[Model]) -> list[str]:
        lines = []
        for model in ae:
            diffs = [(v, d) for v in vaes if (d := self.difference(model, v, axis)) is not None]
            if not diffs:
                continue
            paired = all(d.paired for _, d in diffs)
            how = "paired per held-out sample (the same samples and posterior noise)" if paired else "unpaired"
            seeds = max(d.seeds for _, d in diffs)
            over = f", the mean of {seeds} seeds' differences" if seeds > 1 else ""
            listed = ", ".join(f"{v.name} {d.text()}" for v, d in diffs)
            lines.append(f"NLL of {model.name} minus each VAE's, in nats per sample, {how}{over}: {listed}.")
        best_vae, best_ae = self._best(vaes, axis), self._best(ae, axis)
        if best_vae is not None and best_ae is None and ae:
            lines.append(
                f"The AE has no NLL (no density was fitted to its codes); {best_vae.name}'s is "
                f"{self._mean(best_vae, axis):.2f} nats."
            )
        return lines

    def _latent_lines(self, axis: Axis, ae: Sequence[Model], vaes: Sequence[Model]) -> list[str]:
        lines = []
        latent = next(a for a in ae_vs_vae_axes(self) if a.name == "latent to prior")
        listed = ", ".join(f"{m.name} {_sig(self._mean(m, latent))}" for m in (*ae, *vaes) if self.measured(m, latent))
        if listed:
            lines.append(
                "Held-out codes against draws of the prior each model samples from (kernel MMD² in latent space, "
                f"lower: the prior fits its codes): {listed}."
            )
        best_vae, best_ae = self._best(vaes, axis), self._best(ae, axis)
        if best_vae is not None and best_ae is not None:
            gap = self._judged(best_vae, best_ae, axis, None)
            ae_value, vae_value = _sig(self._mean(best_ae, axis)), _sig(self._mean(best_vae, axis))
            lines.append(
                "Decoded midpoints of straight lines between held-out codes against held-out data (MMD², lower: a "
                f"smoother latent): the AE {ae_value}, {best_vae.name} {vae_value}{gap}."
            )
        return lines

    def _reconstruction_lines(self, axis: Axis, ae: Sequence[Model], vaes: Sequence[Model]) -> list[str]:
        reference = next((m for m in ae if self.measured(m, axis)), None)
        if reference is None:
            return []
        ae_value = self._mean(reference, axis)
        per_vae = []
        for vae in vaes:
            if not self.measured(vae, axis):
                continue
            value = self._mean(vae, axis)
            ratio = f"{value / ae_value:.2f}x, " if ae_value > 0 else ""
            d = self.difference(vae, reference, axis)
            per_vae.append(f"{vae.name} {_sig(value)} ({ratio}{d.text(None) if d else ''})")
        psnr = next(a for a in ae_vs_vae_axes(self) if a.name == "PSNR (dB)")
        extra = ""
        if self.measured(reference, psnr):
            values = ", ".join(
                f"{'the AE' if m.is_ae else m.name} {self._mean(m, psnr):.2f}"
                for m in (reference, *vaes)
                if self.measured(m, psnr)
            )
            extra = f" PSNR in dB: {values}."
        return [
            "Reconstruction in the data's units (held-out MSE per element in eval mode: the AE on its code, each VAE "
            f"on z = its posterior mean; the difference to the AE with its standard error): the AE "
            f"{_sig(ae_value)}; {', '.join(per_vae)}.{extra}"
        ]

    def _rate_line(self, axis: Axis, ae: Sequence[Model], vaes: Sequence[Model]) -> tuple[str, bool] | None:
        reference = next((m for m in ae if self.measured(m, axis)), None)
        measured = [v for v in vaes if self.measured(v, axis)]
        if reference is None or not measured:
            return None
        base = self._mean(reference, axis)
        rates = [self._mean(v, axis) for v in measured]
        ratio = statistics.mean(rates) / base
        slower = [v for v in measured if self.better(reference, v, axis)]
        # Timings without a spread (one seed) are judged by their ratio alone.
        unjudged = all((d := self.difference(reference, v, axis)) is None or d.stderr is None for v in measured)
        costs = bool(slower) or (unjudged and ratio < 1)
        return (
            f"A VAE training step runs at {ratio:.2f}x the AE's rate ({statistics.mean(rates):.1f} against "
            f"{base:.1f} steps/s).",
            costs,
        )

    def _downstream_lines(self, models: Sequence[Model]) -> list[str]:
        lines = []
        axes = {a.name: a for a in ae_vs_vae_axes(self)}
        shown = [m for m in models if not m.is_ae or m == next(x for x in models if x.is_ae)]
        probe = axes["probe accuracy"]
        listed = ", ".join(f"{m.start} {self._mean(m, probe):.3f}" for m in shown if self.measured(m, probe))
        if listed:
            lines.append(
                f"Linear-probe accuracy on held-out codes (logistic regression on the training codes): {listed}."
            )
        auroc = axes["anomaly AUROC"]
        listed = ", ".join(f"{m.start} {self._mean(m, auroc):.3f}" for m in shown if self.measured(m, auroc))
        if listed:
            lines.append(
                "Anomaly AUROC on the held-out labels (the AE scored by its reconstruction error, each VAE by its "
                f"per-sample NLL): {listed}."
            )
        return lines

    def _noise(self) -> list[str]:
        """How far a run's last per-epoch -ELBO (k draws) lies from its final one (final_k draws) after the same
        epoch: the per-epoch values' noise, which the epochs to within 1 nat are counted with."""
        gaps = [
            (abs(r.points[-1].objective - r.final_objective), r)
            for r in self.runs
            if r.is_vae and r.points and r.final_objective is not None
        ]
        gap, run = max(gaps, key=lambda g: g[0], default=(0.0, None))
        if self.discrete or run is None or gap <= NEAR_NATS / 2:
            return []
        o = self.config.get("options", {})
        return [
            f"The per-epoch measurements (k = {o.get('k', '?')}) lie up to {gap:.2f} nats from the final ones "
            f"(k = {o.get('final_k', '?')}) after the same epoch ({run.start} seed {run.seed}): that is their noise, "
            f"and the epochs to within {NEAR_NATS:g} nat, counted with them, are uncertain by as much; a larger k or "
            "more held-out samples steady them."
        ]

    def _price(self) -> list[str]:
        """The price of a latent: the AE's reconstruction against each VAE start's, never averaged across starts.
        Eval-mode MSE in the data's units where the records hold it; else the reconstruction term in nats."""
        ae = [r for r in self.of("ae") if r.final is not None]
        vae_starts = [s for s in self.starts if s != "ae" and any(r.final is not None for r in self.of(s))]
        if not ae or not vae_starts:
            return []
        price = "discrete codes" if self.discrete else "a latent that can be sampled"
        ae_mse = [r.mse["eval"] for r in ae if r.mse]
        measured = {s: [r.mse for r in self.of(s) if r.final is not None and r.mse] for s in vae_starts}
        if ae_mse and any(measured.values()):
            reference = statistics.mean(ae_mse)
            per_start = []
            for start, mses in measured.items():
                if not mses:
                    continue
                value = statistics.mean(m["eval"] for m in mses)
                text = f"{start} {_sig(value)}" + (f" ({value / reference:.2f}x)" if reference > 0 else "")
                sampled = [m["sampled"] for m in mses if m.get("sampled") is not None]
                if sampled:
                    text += f" (with z sampled as in training: {_sig(statistics.mean(sampled))})"
                per_start.append(text)
            at = "each quantised model on its codes" if self.discrete else "each VAE on z = the posterior mean"
            return [
                f"Held-out MSE per element in the data's units, in eval mode (the AE on its code, {at}): the AE "
                f"{_sig(reference)}; {', '.join(per_start)}: the price of {price}."
            ]
        ae_recon = statistics.mean(r.final.recon.value for r in ae if r.final is not None)
        per_start = [
            f"{s} {statistics.mean(r.final.recon.value for r in self.of(s) if r.final is not None):.2f}"
            for s in vae_starts
        ]
        term = (
            "the quantised models' (at their codes)"
            if self.discrete
            else "the VAEs' (an expectation over sampled z, so it holds the posterior's noise too)"
        )
        return [
            f"The AE's held-out reconstruction term is {ae_recon:.2f} nats; {term}: {', '.join(per_start)}: the "
            f"price of {price} (these records hold no MSE, so eval-mode reconstructions cannot be compared)."
        ]

    def _best_file(self) -> list[str]:
        best = self.best()
        if best is None or not best.model_file:
            return []
        model = self.config.get("model", "the autoencoder")
        return [
            f"The best run by final held-out {self.measure} is {best.start} seed {best.seed} "
            f"({best.final_objective:.2f} nats); its model is `{best.model_file}` (relative to the comparison's "
            f'folder): `vae, _ = fxvae.load(ae, "{best.model_file}", x)` loads it, where ae is an instance of '
            f"{model} (its weights do not matter) and x a batch of inputs."
        ]

    def to_markdown(self, figures: Sequence[str] = ()) -> str:
        """The report: warnings, the AE against its VAEs (where the records measured it, with its pictures among
        ``figures``), what was run, the table of starts, its verdict, and the other ``figures`` (file names)."""
        c = self.config
        what = "discrete-latent model" if self.discrete else "VAE"
        if self.has_axes:
            lines = [f"# {c.get('model', 'autoencoder')}: the AE against its VAEs", ""]
        else:
            lines = [f"# {c.get('model', 'autoencoder')}: the AE's {what} against one trained from scratch", ""]
        warnings = c.get("warnings") or []
        if warnings:
            lines += ["## Warnings", ""]
            lines += [f"- {warning}" for warning in warnings]
            lines.append("")
        if self.has_axes:
            lines += self._ae_vs_vae_markdown([f for f in figures if f in AE_VS_VAE_FIGURES])
            figures = [f for f in figures if f not in AE_VS_VAE_FIGURES]
        lines += ["## What was run", ""]
        lines += [f"- {line}" for line in _describe(c, self.stopped)]
        lines += ["", "## Which VAE start" if self.has_axes else "## Results", ""]
        final_k = c.get("options", {}).get("final_k", "?")
        near = f"epochs to within {NEAR_NATS:g} nat of scratch's final {self.measure}"
        mse = (
            "MSE (eval) is the mean squared error per element between the held-out data and the reconstruction's "
            "mean, in the data's units, in eval mode ({})."
        )
        if self.discrete:
            lines.append(
                "Held-out values in nats per sample, mean ± sd over the seeds, the final ones measured after the "
                "last epoch. The distortion is the reconstruction term of the quantised model; its -ELBO adds the "
                "codes' KL against a uniform prior, positions x log K. Rate in bits per sample; perplexity (the "
                "exponential of the codes' entropy) and codes used (the share of the codebook that occurs) describe "
                "the codebook's use over the held-out data. The AE row holds its reconstruction term. "
                + mse.format("each quantised model on its codes, the AE on its code")
            )
            header = [
                "start",
                "distortion epoch 0",
                "distortion final",
                "MSE (eval)",
                "-ELBO final",
                "bits/sample",
                "perplexity",
                "codes used (%)",
                near,
                "steps/s",
            ]
        else:
            lines.append(
                "Held-out values in nats per sample, mean ± sd over the seeds, the final ones measured after the "
                "last epoch. -ELBO is measured with beta = 1 whatever the training used; NLL is the "
                f"importance-weighted bound with k = {final_k}. The AE row holds its reconstruction term (it has no "
                "ELBO). " + mse.format("each VAE on z = the posterior mean, the AE on its code")
            )
            header = [
                "start",
                "-ELBO epoch 0",
                "-ELBO final",
                f"NLL (k={final_k})",
                "recon",
                "MSE (eval)",
                "KL",
                "active units",
                near,
                "steps/s",
            ]
        align = ["---" if name in ("start", near) else "---:" for name in header]
        lines += ["", "| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
        for row in self.table():
            epochs = max(row["epochs"], default=0)
            reached = row["reached"]
            per_seed = ", ".join(_epoch_text(e, epochs) for e in reached)
            if reached and all(e is not None for e in reached) and len(reached) > 1:
                reached_text = f"{_fmt(reached, 1)} ({per_seed})"
            else:
                reached_text = per_seed or "-"
            if self.discrete:
                middle = [
                    _fmt(row["epoch0"]),
                    _fmt(row["final"]),
                    _fmt_sig(row["mse"]),
                    _fmt(row["neg_elbo"]),
                    _fmt(row["rate_bits"], 1),
                    _fmt(row["perplexity"], 1),
                    _fmt(row["codes_used"], 1),
                ]
            else:
                middle = [
                    _fmt(row["epoch0"]),
                    _fmt(row["final"]),
                    _fmt(row["nll"]),
                    _fmt(row["recon"]),
                    _fmt_sig(row["mse"]),
                    _fmt(row["kl"]),
                    _fmt(row["active"], 1),
                ]
            cells = [row["start"], *middle, reached_text, _fmt(row["steps_per_s"], 1)]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "### Verdict: which start" if self.has_axes else "## Verdict", ""]
        lines += [f"- {line}" for line in self.verdict()]
        if figures:
            lines += ["", "## Pictures", ""]
            for name in figures:
                lines += [f"![{name}]({name})", ""]
        return "\n".join(lines).rstrip() + "\n"

    def _ae_vs_vae_markdown(self, figures: Sequence[str]) -> list[str]:
        """The report's first section: what the columns are, the table, the verdict and the pictures."""
        rows = self.ae_vs_vae_table()
        axes = [a for a in ae_vs_vae_axes(self) if rows and a.name in rows[0]]
        final_k = self.config.get("options", {}).get("final_k", "?")
        features = next((d.features for r in self.runs if r.axes for d in r.axes.samples.values() if d.features), None)
        dims = next((r.axes.latent_dims for r in self.runs if r.axes and r.axes.latent_dims), None)
        kind = self.ex_post_kind()
        said = {
            "MSE (eval)": "**MSE**: held-out mean squared error per element in the data's units, in eval mode (the "
            "AE on its code, a VAE on z = its posterior mean), and with z sampled as in training (VAEs)",
            "PSNR (dB)": "**PSNR**, **SSIM**: of the eval-mode reconstructions",
            "NLL": f"**NLL**: the importance-weighted bound on -log p(x) with k = {final_k}, in nats per sample; for "
            "the AE, of the generative model density, then its decoder, then the likelihood, with a proposal "
            "centred on its code",
            "samples (own prior or density)": "**samples**: the kernel MMD² (Gretton et al. 2012) of decoded draws "
            f"against held-out data (features: {features}), from the row's prior or density"
            + (
                f"; **samples (ex-post {kind})**: a VAE's decoder on draws of a {kind} fitted to its training codes "
                "(Ghosh et al. 2020)"
                if kind
                else ""
            ),
            "latent to prior": "**latent to prior**: the MMD² of held-out codes against draws of that prior or "
            "density, in latent space",
            "active units": "**active units**: latent elements whose posterior mean varies over the data"
            + (f" (of {dims})" if dims else ""),
            "interpolation": "**interpolation**: the MMD² of decoded midpoints of straight lines between held-out "
            "codes against held-out data",
            "probe accuracy": "**probe accuracy**: a logistic regression on the training codes, scored on held-out "
            "codes",
            "anomaly AUROC": "**anomaly AUROC**: the AE scored by its reconstruction error, a VAE by its per-sample "
            "NLL",
            "steps/s": "**steps/s**: training steps per second",
        }
        higher = [a.name for a in axes if a.better == "higher"]
        lines = [
            "## AE vs VAE",
            "",
            "One row per model: the AE with each density fitted to its training codes (it samples by decoding draws "
            "of it), and each VAE start with its prior N(0, I); mean ± sd over the seeds. Lower is better"
            f"{', except ' + ', '.join(higher) if higher else ''}. **Bold**: better than every other row by more "
            f"than {_times(BEYOND)} the standard error of the difference (paired per held-out sample where the "
            "records hold per-sample values; over seeds, at least the seeds' spread of the difference / sqrt(seeds)).",
            "",
            "| model | " + " | ".join(a.name for a in axes) + " |",
            "| --- | " + " | ".join("---:" for _ in axes) + " |",
        ]
        for row in rows:
            cells = []
            for axis in axes:
                values = row[axis.name]["values"]
                text = _fmt_sig(values) if axis.digits is None else _fmt(values, axis.digits)
                cells.append(f"**{text}**" if row[axis.name]["bold"] else text)
            lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"- {text}." for name, text in said.items() if any(a.name.startswith(name) for a in axes)]
        lines += ["", "### Verdict: AE vs VAE", ""]
        lines += [f"- {line}" for line in self.ae_vs_vae_verdict()]
        for name in figures:
            lines += ["", f"![{name}]({name})"]
        return [*lines, ""]

    def plot(self, directory: str | Path) -> list[Path]:
        """Write the report's pictures as PNGs in ``directory`` (matplotlib: the ``plot`` extra)."""
        from fxvae.study.plots import plot_all

        return plot_all(self, Path(directory))


def objective_of(evaluation: Evaluation) -> float:
    """See :attr:`Point.objective`."""
    value = evaluation.neg_elbo if evaluation.kind == "vae" else evaluation.recon
    return value.value


def _fmt(values: Sequence[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _sig(value: float, digits: int = 3) -> str:
    """A value in the data's units, whose scale is the data's: significant digits, not decimals."""
    return f"{value:.{digits}g}"


def _fmt_sig(values: Sequence[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return _sig(values[0], digits)
    return f"{_sig(statistics.mean(values), digits)} ± {_sig(statistics.stdev(values), 2)}"


def _against(value: float, reference: float) -> str:
    """``value`` against ``reference`` in nats. A ratio only where both are positive: nats of a density can be
    negative or zero, and a ratio against them says nothing (or flips the sign's meaning)."""
    if value > 0 and reference > 0:
        return f"at {value / reference:.2f}x ({value:.2f} nats, {value - reference:+.2f})"
    return f"{value - reference:+.2f} nats (at {value:.2f})"


def _epoch_text(epoch: int | None, epochs: int) -> str:
    return f">{epochs}" if epoch is None else str(epoch)


def _speed(got: float | None, base: float | None) -> str:
    """How a start's epochs to get close compare with scratch's own."""
    if got is None or base is None or got == 0:
        return ""
    if base == 0:
        return "; scratch itself is that close from epoch 0 (it barely trains: more epochs, or a higher lr)"
    if base >= got:
        return f", {base / got:.1f}x fewer epochs than scratch's {base:.1f}"
    return f", {got / base:.1f}x more epochs than scratch's {base:.1f}"


def _mean_epochs(reached: Sequence[int | None], epochs: int) -> float | None:
    if not reached or any(e is None for e in reached):
        return None
    return statistics.mean(e for e in reached if e is not None)


def _describe(config: dict[str, Any], stopped: str | None) -> list[str]:
    o = config.get("options", {})
    data = config.get("data", {})
    lines = [
        f"Model: {config.get('model')} ({config.get('parameters', 0):,} parameters), bottleneck "
        f"{config.get('bottleneck')} {config.get('latent_shape')}, traced with {config.get('tracer')}.",
        f"Data: {data.get('train')} training and {data.get('test')} held-out samples of shape "
        f"{config.get('input_shape')}; {_split_text(data.get('split'))}.",
        _loss_line(config),
        f"Starts: {', '.join(o.get('starts', ()))}; seeds {config.get('seeds')}; {o.get('epochs')} epochs of "
        f"{config.get('steps_per_epoch')} steps (batch {o.get('batch_size')}), the same batch order and noise "
        "stream for every start of a seed.",
        f"Optimiser: {o.get('optimizer')}, lr {o.get('lr')}, schedule {o.get('schedule')}"
        + (
            f", linear warm-up over {o.get('lr_warmup')} steps"
            if o.get("lr_warmup")
            else ", linear warm-up over the first epoch"
            if o.get("lr_warmup") is None
            else ""
        )
        + ".",
        _measured_line(o),
        f"Machine: {config.get('device')}, {config.get('threads')} torch thread(s), {config.get('world', 1)} "
        f"process(es); torch {config.get('torch')}, fxvae {config.get('fxvae')}.",
    ]
    if stopped:
        lines.append(f"Stopped early: {stopped}.")
    return lines


def _split_text(split: str | None) -> str:
    """The split as the config says it, except that data drawn from the user's own ``data`` is never called
    "never trained on": the AE checkpoint may have been trained on it (records older than the warning)."""
    if split is None or "never trained on" not in split:
        return str(split)
    drawn = split.replace(", never trained on", "").replace("never trained on", "").rstrip(", ")
    return f"{drawn}; the comparison's runs do not train on it, but the AE checkpoint may have been trained on it"


def _measured_line(options: dict[str, Any]) -> str:
    if options.get("latent", "gaussian") != "gaussian":
        return (
            "Measured on the held-out data after every epoch (and at epoch 0, before any step) and again at the end; "
            "a quantised model's codes are deterministic, so nothing is sampled."
        )
    return (
        f"Measured after every epoch with k = {options.get('k')} posterior draws (and at epoch 0, before any step); "
        f"at the end with k = {options.get('final_k')}."
    )


def _loss_line(config: dict[str, Any]) -> str:
    o = config.get("options", {})
    latent = o.get("latent", "gaussian")
    if latent == "vq":
        return (
            f"Latent: vq, {o.get('codebook_size')} codes per position; loss = reconstruction + the quantiser's "
            "commitment term, in nats at half the reconstruction's Fisher information per sample; likelihood "
            f"{config.get('likelihood')}."
        )
    if latent == "fsq":
        levels = tuple(o.get("levels", ()))
        return f"Latent: fsq, levels {levels}; loss = reconstruction; likelihood {config.get('likelihood')}."
    return (
        f"Likelihood: {config.get('likelihood')}; loss = reconstruction + beta * KL with beta {o.get('beta')}"
        + (f", warmed up over {o.get('kl_warmup')} steps" if o.get("kl_warmup") else "")
        + (f", free bits {o.get('free_bits')}" if o.get("free_bits") else "")
        + "."
    )


# --- AE against VAE ------------------------------------------------------------------------------------------

AE_VS_VAE_FIGURES = ("ae_vs_vae_samples.png", "ae_vs_vae_interpolation.png")
"""The pictures the AE-vs-VAE section shows (:func:`fxvae.study.plots.plot_all` writes them)."""


def _times(factor: float) -> str:
    """``factor`` as a multiplier in a sentence: "twice", "3 times"."""
    return {1.0: "once", 2.0: "twice"}.get(factor, f"{factor:g} times")


BEYOND = 2.0
"""A cell of the AE-vs-VAE table is bold, and the verdict calls a difference real, where it exceeds this many
standard errors of the difference: one standard error is passed by chance a third of the time with no
difference at all (a calibrated start's MSE, 1.00x the AE's, was +0.000133 ± 0.00011 on the digits), two about
one time in twenty."""


@dataclass(frozen=True)
class Model:
    """A row of the AE-vs-VAE table: a start and what it samples from, ``"prior"`` (a VAE's N(0, I)) or the
    kind of density fitted to its codes (the AE's rows).

    >>> Model("ae", "gmm").name, Model("warm", "prior").name
    ('ae + gmm', 'warm')
    """

    start: str
    source: str = "prior"

    @property
    def name(self) -> str:
        return self.start if self.source == "prior" else f"{self.start} + {self.source}"

    @property
    def is_ae(self) -> bool:
        return self.start == "ae"


@dataclass(frozen=True)
class Measured:
    """One model's value on one axis under one seed: its standard error where measured, and its per-sample
    values where recorded (paired with another model's of the same seed).

    >>> Measured(24.3, 0.4).per_sample is None
    True
    """

    value: float
    stderr: float | None = None
    per_sample: list[float] | None = None


@dataclass(frozen=True)
class Difference:
    """``a - b`` on one axis, the mean over the seeds both have, and its standard error (None: not measurable,
    such as one seed of a value without a standard error).

    >>> Difference(-1.5, 0.4, paired=True, seeds=1).beyond
    True
    """

    value: float
    stderr: float | None
    paired: bool
    seeds: int

    @property
    def beyond(self) -> bool:
        """Whether the difference is beyond :data:`BEYOND` standard errors."""
        return self.stderr is not None and abs(self.value) > BEYOND * self.stderr

    def text(self, digits: int | None = 2) -> str:
        value = f"{self.value:+.{digits}f}" if digits is not None else f"{self.value:+.3g}"
        if self.stderr is None:
            return value
        return value + (f" ± {self.stderr:.{digits}f}" if digits is not None else f" ± {self.stderr:.2g}")


@dataclass(frozen=True)
class Axis:
    """A column of the AE-vs-VAE table: how to read it from a run for one row, which way is better
    (None: neither, never bold), whether it is a property of the run shared by all its rows (the AE's MSE is
    the same whatever density it samples from), and its decimals (None: significant digits).

    >>> mse = ae_vs_vae_axes(Comparison({}, []))[0]
    >>> mse.name, mse.better, mse.key(Model("ae", "gmm"))
    ('MSE (eval)', 'lower', ('ae',))
    """

    name: str
    read: Callable[[RunRecord, str], Measured | None]
    better: Literal["lower", "higher"] | None
    shared: bool
    digits: int | None = 2

    def key(self, model: Model) -> tuple[str, ...]:
        """What the cell measures: rows with the same key hold the same measurement and are not compared."""
        return (model.start,) if self.shared else (model.start, model.source)


def _estimate(value: Estimate | None, per_sample: list[float] | None = None) -> Measured | None:
    if value is None or not math.isfinite(value.value):
        return None
    stderr = value.stderr if math.isfinite(value.stderr) else None
    return Measured(value.value, stderr, per_sample)


def _plain(value: float | None, per_sample: list[float] | None = None) -> Measured | None:
    return None if value is None or not math.isfinite(value) else Measured(float(value), None, per_sample)


def _distance(value: Distance | None) -> Measured | None:
    return None if value is None else _estimate(value.distance)


def _mse(run: RunRecord, key: str) -> Measured | None:
    if not run.mse or run.mse.get(key) is None:
        return None
    return _plain(run.mse[key], run.axes.paired_mse if key == "eval" and run.axes else None)


def _image(name: str) -> Callable[[RunRecord, str], Measured | None]:
    def read(run: RunRecord, source: str) -> Measured | None:
        values = getattr(run.axes, name) if run.axes else None
        return _plain(values.get("eval")) if values else None

    return read


def _nll(run: RunRecord, source: str) -> Measured | None:
    if run.axes is None:
        return None
    return _estimate(run.axes.nll.get(source), run.axes.paired_nll.get(source))


def _ex_post(kind: str) -> Callable[[RunRecord, str], Measured | None]:
    def read(run: RunRecord, source: str) -> Measured | None:
        # The AE's own rows already sample from their density: this column is the VAEs' second source.
        return _distance(run.axes.samples.get(kind)) if run.axes and run.is_vae else None

    return read


def ae_vs_vae_axes(comparison: Comparison) -> list[Axis]:
    """The AE-vs-VAE table's columns, in order (see :meth:`Comparison.ae_vs_vae_table`).

    >>> [a.name for a in ae_vs_vae_axes(Comparison({"options": {"final_k": 100}}, []))][3:6]
    ['SSIM', 'NLL (k=100)', 'samples (own prior or density)']
    """
    final_k = comparison.config.get("options", {}).get("final_k", "?")
    kind = comparison.ex_post_kind()
    axes = [
        Axis("MSE (eval)", lambda r, s: _mse(r, "eval"), "lower", True, None),
        Axis("MSE (z sampled)", lambda r, s: _mse(r, "sampled") if r.is_vae else None, "lower", True, None),
        Axis("PSNR (dB)", _image("psnr"), "higher", True, 2),
        Axis("SSIM", _image("ssim"), "higher", True, 3),
        Axis(f"NLL (k={final_k})", _nll, "lower", False, 2),
        Axis(
            "samples (own prior or density)",
            lambda r, s: _distance(r.axes.samples.get(s)) if r.axes else None,
            "lower",
            False,
            None,
        ),
    ]
    if kind is not None:
        axes.append(Axis(f"samples (ex-post {kind})", _ex_post(kind), "lower", False, None))
    axes += [
        Axis("latent to prior", lambda r, s: _distance(r.axes.latent.get(s)) if r.axes else None, "lower", False, None),
        Axis("active units", lambda r, s: _plain(r.axes.active_units) if r.axes else None, None, True, 1),
        Axis("interpolation", lambda r, s: _distance(r.axes.interpolation) if r.axes else None, "lower", True, None),
        Axis("probe accuracy", lambda r, s: _estimate(r.axes.probe) if r.axes else None, "higher", True, 3),
        Axis("anomaly AUROC", lambda r, s: _plain(r.axes.auroc) if r.axes else None, "higher", True, 3),
        Axis("steps/s", lambda r, s: _plain(r.steps_per_s), "higher", True, 1),
    ]
    return axes


def _paired_stderr(a: list[float], b: list[float]) -> float | None:
    if len(a) != len(b) or len(a) < 2:
        return None
    return statistics.stdev(x - y for x, y in zip(a, b, strict=True)) / math.sqrt(len(a))
