"""What a comparison measured, and the report it makes: a table per start, a verdict in words, pictures.

Everything here is rebuilt from the records of ``metrics.jsonl`` alone (:func:`fxvae.study.ledger.read`), so
a report can be made again, or from a comparison that was stopped, without training anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxvae.evaluation import Evaluation

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
    """Prior draws decoded: z ~ N(0, I) for a VAE, codes drawn uniformly from the codebook for a discrete latent
    (the AE: its plain conversion's decoder on z ~ N(0, I))."""
    mse: dict[str, float | None] | None = None
    """The final held-out mean squared error per element, in the data's units: ``{"eval": ..., "sampled": ...}``
    ("sampled": a Gaussian VAE's z drawn as in training, else None). None in records older than the field."""
    model_file: str | None = None
    """The run's final model, written with :func:`fxvae.save`, relative to the comparison's folder."""

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

    >>> result = fxvae.compare(ae, torch.randn(120, 64), epochs=1, k=1, final_k=2, progress=False)
    >>> sorted(result.starts), len(result.runs)
    (['calibrated', 'scratch', 'warm'], 3)
    >>> result.best().final_objective == min(v for s in result.starts for v in result.final_values(s))
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
        lines += self._price()
        if self.throughput:
            step = "quantised model's" if self.discrete else "VAE"
            lines.append(
                f"A {step} training step runs at {self.throughput['ratio']:.2f}x the AE step's rate "
                f"({self.throughput['vae_steps_per_s']:.1f} against {self.throughput['ae_steps_per_s']:.1f} steps/s)."
            )
        lines += self._best_file()
        if self.stopped:
            lines.append(f"The comparison ended early: {self.stopped}.")
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
        """The report: warnings, what was run, the table, the verdict, and the ``figures`` (file names) below."""
        c = self.config
        what = "discrete-latent model" if self.discrete else "VAE"
        lines = [f"# {c.get('model', 'autoencoder')}: the AE's {what} against one trained from scratch", ""]
        warnings = c.get("warnings") or []
        if warnings:
            lines += ["## Warnings", ""]
            lines += [f"- {warning}" for warning in warnings]
            lines.append("")
        lines += ["## What was run", ""]
        lines += [f"- {line}" for line in _describe(c, self.stopped)]
        lines += ["", "## Results", ""]
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
        lines += ["", "## Verdict", ""]
        lines += [f"- {line}" for line in self.verdict()]
        if figures:
            lines += ["", "## Pictures", ""]
            for name in figures:
                lines += [f"![{name}]({name})", ""]
        return "\n".join(lines).rstrip() + "\n"

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
