"""The AE against its VAEs on the same axes: a row per model (the AE with each density fitted to its codes, each
VAE with its prior), a column per axis (:func:`columns`), a cell bold only beyond the standard error of its
difference (:meth:`AeVsVae.better`), and a verdict computed from them (:meth:`AeVsVae.verdict`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fxvae.measure.evaluation import Estimate
from fxvae.study.formats import sig, times
from fxvae.study.records import Distance, Records, RunRecord

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

    >>> mse = columns(Records({}, []))[0]
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


def columns(records: Records) -> list[Axis]:
    """The AE-vs-VAE table's columns, in order (see :meth:`AeVsVae.table`).

    >>> [a.name for a in columns(Records({"options": {"final_k": 100}}, []))][3:6]
    ['SSIM', 'NLL (k=100)', 'samples (own prior or density)']
    """
    final_k = records.config.get("options", {}).get("final_k", "?")
    kind = AeVsVae(records).ex_post_kind()
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


@dataclass(frozen=True)
class AeVsVae:
    """The AE-vs-VAE comparison of ``records``: its rows (:meth:`models`), each model's values (:meth:`measured`),
    their differences with standard errors (:meth:`difference`), the table and its verdict."""

    records: Records

    def models(self) -> list[Model]:
        """The AE-vs-VAE table's rows: the AE with each density it was measured with, then each VAE start.

        >>> from fxvae.measure.evaluation import Evaluation
        >>> from fxvae.study.records import Axes
        >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3))
        >>> nll = {"gaussian": Estimate(27.0, 0.3), "gmm": Estimate(26.0, 0.3)}
        >>> runs = [RunRecord("ae", 0, final=final, axes=Axes(nll=nll)),
        ...         RunRecord("warm", 0, final=final, axes=Axes(nll={"prior": Estimate(25.0, 0.3)}))]
        >>> [m.name for m in AeVsVae(Records({}, runs)).models()]
        ['ae + gaussian', 'ae + gmm', 'warm']
        """
        models = []
        for start in self.records.starts:
            measured = [r.axes for r in self.records.of(start) if r.axes is not None]
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

        >>> from fxvae.study.records import Axes
        >>> far = Distance(Estimate(0.05, 0.002))
        >>> runs = [RunRecord("warm", 0, axes=Axes(samples={"prior": far, "gaussian": far, "gmm": far}))]
        >>> AeVsVae(Records({}, runs)).ex_post_kind()
        'gmm'
        """
        kinds = {k for r in self.records.runs if r.is_vae and r.axes for k in r.axes.samples if k != "prior"}
        return next((k for k in ("gmm", "gaussian", *sorted(kinds)) if k in kinds), None)

    def measured(self, model: Model, axis: Axis) -> dict[int, Measured]:
        """Per seed: ``model``'s value on ``axis`` (runs without a final measurement left out).

        >>> from fxvae.measure.evaluation import Evaluation
        >>> from fxvae.study.records import Axes
        >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3))
        >>> runs = [RunRecord("warm", 3, final=final, axes=Axes(nll={"prior": Estimate(25.0, 0.3)}))]
        >>> c = AeVsVae(Records({}, runs))
        >>> c.measured(Model("warm"), next(a for a in columns(c.records) if a.name.startswith("NLL")))
        {3: Measured(value=25.0, stderr=0.3, per_sample=None)}
        """
        out = {}
        for run in self.records.of(model.start):
            if run.final is not None and (value := axis.read(run, model.source)) is not None:
                out[run.seed] = value
        return out

    def difference(self, a: Model, b: Model, axis: Axis) -> Difference | None:
        """``a - b`` on ``axis`` over the seeds both have: per seed, paired per sample where both recorded
        per-sample values (the same held-out samples, the same posterior noise), else the two standard errors
        combined. Over several seeds the standard error is the larger of the seeds' spread of the difference
        / sqrt(seeds) and the measurements' own; with one seed, the measurement's (None where it has none).

        >>> from fxvae.measure.evaluation import Evaluation
        >>> from fxvae.study.records import Axes
        >>> final = Evaluation("vae", 3, 1, "gaussian", 0, 4, recon=Estimate(1.0, 0.1))
        >>> def run(start, source, nll):
        ...     axes = Axes(nll={source: Estimate.of(torch.tensor(nll))}, paired_nll={source: nll})
        ...     return RunRecord(start, 0, final=final, axes=axes)
        >>> c = AeVsVae(Records({}, [run("ae", "gmm", [30.0, 20.0, 25.0]), run("warm", "prior", [29.0, 19.1, 24.0])]))
        >>> nll = next(a for a in columns(c.records) if a.name.startswith("NLL"))
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

        >>> from fxvae.measure.evaluation import Evaluation
        >>> from fxvae.study.records import Axes
        >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3))
        >>> runs = [RunRecord("ae", 0, final=final, axes=Axes(nll={"gmm": Estimate(26.0, 0.3)})),
        ...         RunRecord("warm", 0, final=final, axes=Axes(nll={"prior": Estimate(25.0, 0.3)}))]
        >>> c = AeVsVae(Records({}, runs))
        >>> nll = next(a for a in columns(c.records) if a.name.startswith("NLL"))
        >>> c.better(Model("warm"), Model("ae", "gmm"), nll), c.better(Model("ae", "gmm"), Model("warm"), nll)
        (True, False)
        """
        d = self.difference(a, b, axis)
        if axis.better is None or d is None or not d.beyond:
            return False
        return d.value < 0 if axis.better == "lower" else d.value > 0

    def table(self) -> list[dict[str, Any]]:
        """One row per model (see :meth:`models`): ``{"model": name, axis name: {"values": [per seed],
        "bold": bool}}``, a cell bold where it is better than every other row that measures something else
        beyond the standard error of the difference (:meth:`better`). Columns no row measured are left out.

        >>> from fxvae.measure.evaluation import Evaluation
        >>> from fxvae.study.records import Axes
        >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3))
        >>> nll = {"gaussian": Estimate(27.0, 0.3), "gmm": Estimate(25.8, 0.3)}
        >>> runs = [RunRecord("ae", 0, final=final, axes=Axes(nll=nll)),
        ...         RunRecord("warm", 0, final=final, axes=Axes(nll={"prior": Estimate(24.0, 0.3)}))]
        >>> table = AeVsVae(Records({}, runs)).table()
        >>> [(row["model"], row["NLL (k=?)"]["values"], row["NLL (k=?)"]["bold"]) for row in table]
        [('ae + gaussian', [27.0], False), ('ae + gmm', [25.8], False), ('warm', [24.0], True)]
        """
        models, axes = self.models(), columns(self.records)
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

    def verdict(self) -> list[str]:
        """Sentences computed from the AE-vs-VAE table's numbers: what the VAE gains and costs (first), then the
        evidence per axis, each difference with its standard error (:meth:`difference`).

        >>> from fxvae.measure.evaluation import Evaluation
        >>> from fxvae.study.records import Axes
        >>> final = Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(24.0, 0.3))
        >>> runs = [RunRecord("ae", 0, final=final, axes=Axes(nll={"gmm": Estimate(27.0, 0.3)})),
        ...         RunRecord("warm", 0, final=final, axes=Axes(nll={"prior": Estimate(25.0, 0.3)}))]
        >>> verdict = AeVsVae(Records({}, runs)).verdict()
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
        by_name = {a.name: a for a in columns(self.records)}
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
        return f" ({d.text(digits)}, {word} {times(BEYOND)} its standard error)"

    def _sampling_lines(self, axis: Axis, ae: Sequence[Model], vaes: Sequence[Model]) -> list[str]:
        best_vae, best_ae = self._best(vaes, axis), self._best(ae, axis)
        if best_vae is None:
            return []
        features = next(
            (d.features for r in self.records.runs if r.axes for d in r.axes.samples.values() if d.features), "the data"
        )
        listed = ", ".join(f"{m.name} {sig(self._mean(m, axis))}" for m in (*ae, *vaes) if self.measured(m, axis))
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
                        f"({sig(self._mean(ex_post, axis))} against {sig(self._mean(vae, axis))}): its codes do "
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
        latent = next(a for a in columns(self.records) if a.name == "latent to prior")
        listed = ", ".join(f"{m.name} {sig(self._mean(m, latent))}" for m in (*ae, *vaes) if self.measured(m, latent))
        if listed:
            lines.append(
                "Held-out codes against draws of the prior each model samples from (kernel MMD² in latent space, "
                f"lower: the prior fits its codes): {listed}."
            )
        best_vae, best_ae = self._best(vaes, axis), self._best(ae, axis)
        if best_vae is not None and best_ae is not None:
            gap = self._judged(best_vae, best_ae, axis, None)
            ae_value, vae_value = sig(self._mean(best_ae, axis)), sig(self._mean(best_vae, axis))
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
            per_vae.append(f"{vae.name} {sig(value)} ({ratio}{d.text(None) if d else ''})")
        psnr = next(a for a in columns(self.records) if a.name == "PSNR (dB)")
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
            f"{sig(ae_value)}; {', '.join(per_vae)}.{extra}"
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
        axes = {a.name: a for a in columns(self.records)}
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
