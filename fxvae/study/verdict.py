"""Which VAE start to use: sentences computed from the table of starts (:meth:`Records.table`), what the warm
starts buy against scratch, whether the runs had converged, the price of the latent, the best run's model file,
and what to trust. Each sentence comes from one small function; :func:`verdict` puts them in order.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from fxvae.study.formats import epoch_text, mean_sd, sig
from fxvae.study.records import NEAR_NATS, Records

SAME_FINAL = 0.5
"""Nats: two starts whose mean finals are closer than this (or than twice the seeds' spread, if larger) end
alike, and the verdict's choice between them goes to the one that got close first."""
STILL_IMPROVING = 0.1
"""A run whose held-out -ELBO fell by more than this many nats in its last epoch had not converged (measured
every few epochs: by more than this many per epoch between its last two measurements)."""


def verdict(records: Records) -> list[str]:
    """Sentences computed from the table's numbers: what the warm starts buy against scratch, the price of
    the latent, the best run's model file, and what to trust.

    >>> from fxvae.measure.evaluation import Estimate, Evaluation
    >>> from fxvae.study.records import Point, RunRecord
    >>> def run(start, values):
    ...     evaluations = [Evaluation("vae", 60, 8, "bernoulli", 0, 64, recon=Estimate(v, 0.3),
    ...                               neg_elbo=Estimate(v, 0.3)) for v in values]
    ...     points = [Point(e, e, None, 0.0, ev) for e, ev in enumerate(evaluations)]
    ...     return RunRecord(start, 0, points, evaluations[-1])
    >>> records = Records({}, [run("scratch", [40.0, 30.0, 25.0]), run("warm", [30.0, 25.5, 25.45])])
    >>> for line in verdict(records)[1:3]:
    ...     print(line)
    warm gets within 1 nat of scratch's final -ELBO after 1.0 epochs, 2.0x fewer epochs than scratch's 2.0.
    At the end, warm is 0.45 nats above scratch (25.45 against 25.00): one seed: no spread to judge the gap by.
    """
    lines = _unmeasured(records)
    scratch = records.final_values("scratch")
    if scratch:
        reference = statistics.mean(scratch)
        lines.append(_before_any_step(records, reference))
        lines += _epochs_to_near(records)
        lines += _final_gaps(records, reference, scratch)
    lines += _which_start(records)
    lines += _still_improving(records)
    lines += _noise(records)
    # With the AE-against-VAE measurements, their own section states the price, with its standard errors.
    if not records.has_axes:
        lines += _price(records)
        lines += _step_rate(records)
    lines += _best_file(records)
    if records.stopped:
        lines.append(f"The comparison ended early: {records.stopped}.")
    return lines


def _unmeasured(records: Records) -> list[str]:
    if records.runs and all(r.final is None for r in records.runs):
        return [
            "No run has a final measurement (the comparison was interrupted before it): resume it to measure "
            "the final values that the verdict compares."
        ]
    return []


def _before_any_step(records: Records, reference: float) -> str:
    """Each VAE start's epoch-0 value against scratch's final one."""
    zero = {
        s: statistics.mean(r.points[0].objective for r in runs)
        for s in records.starts
        if s != "ae" and (runs := [r for r in records.of(s) if r.points])
    }
    at_zero = ", ".join(f"{s} {_against(value, reference)}" for s, value in zero.items())
    return f"Before any step, against scratch's final held-out {records.measure} ({reference:.2f} nats): {at_zero}."


def _epochs_to_near(records: Records) -> list[str]:
    """How many epochs each start takes to get within :data:`NEAR_NATS` of scratch's final value, against
    scratch's own."""
    reached = records.epochs_to_within()
    epochs = _epochs(records)
    base = _mean_epochs(reached.get("scratch", []), epochs)
    lines = []
    for start in records.starts:
        if start in ("scratch", "ae") or start not in reached:
            continue
        got = _mean_epochs(reached[start], epochs)
        per_seed = ", ".join(epoch_text(e, epochs) for e in reached[start])
        if got == 0:
            when = "before any step"
        else:
            when = f"after {got:.1f} epochs" if got is not None else f"not within {epochs} epochs"
        seeds = f" (per seed: {per_seed})" if len(reached[start]) > 1 else ""
        lines.append(
            f"{start} gets within {NEAR_NATS:g} nat of scratch's final {records.measure} {when}{seeds}"
            f"{_speed(got, base)}."
        )
    return lines


def _final_gaps(records: Records, reference: float, scratch: Sequence[float]) -> list[str]:
    """Each start's final value against scratch's, judged by the spread of scratch's over the seeds."""
    spread = statistics.stdev(scratch) if len(scratch) > 1 else None
    lines = []
    for start in records.starts:
        values = records.final_values(start)
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
            f"At the end, {start} is {abs(gap):.2f} nats {side} scratch ({final:.2f} against {reference:.2f}): "
            f"{judged}."
        )
    return lines


def _which_start(records: Records) -> list[str]:
    """The start to use for this model, by a rule on this comparison's own numbers: the lowest mean final;
    among the starts that end alike (within :data:`SAME_FINAL` nats of it, or twice the larger seed spread of
    the two), the one that got within :data:`NEAR_NATS` of scratch's final in the fewest epochs. A faster start
    that ends worse is named as the choice for a short fine-tune."""
    finals = {s: v for s in records.starts if s != "ae" and (v := records.final_values(s))}
    if len(finals) < 2:
        return []
    reached = records.epochs_to_within()
    epochs = _epochs(records)

    def speed(start: str) -> float:
        got = _mean_epochs(reached.get(start, []), epochs)
        return math.inf if got is None else got

    def close(start: str) -> str:
        if speed(start) == 0:
            return f"is within {NEAR_NATS:g} nat of scratch's final before any step"
        return f"gets within {NEAR_NATS:g} nat of scratch's final after {speed(start):.1f} epochs"

    means = {s: statistics.mean(v) for s, v in finals.items()}
    lowest = min(means, key=means.__getitem__)

    def tolerance(start: str) -> float:
        spreads = [statistics.stdev(finals[s]) for s in (start, lowest) if len(finals[s]) > 1]
        return max(SAME_FINAL, 2 * max(spreads, default=0.0))

    alike = [s for s in means if means[s] - means[lowest] <= tolerance(s)]
    pick = min(alike, key=lambda s: (speed(s), means[s]))
    if pick == lowest:
        how = f"it ends lowest ({means[pick]:.2f} nats)"
    else:
        how = (
            f"it ends within {tolerance(pick):.2f} nats of the lowest ({lowest}, {means[lowest]:.2f}) at "
            f"{means[pick]:.2f}"
        )
    if speed(pick) != math.inf:
        how += f" and {close(pick)}"
    rule = (
        f"the lowest final {records.measure}; a start within {SAME_FINAL:g} nats of it, or within twice the larger "
        f"seed spread of the two, ends alike, and of those the one that got within {NEAR_NATS:g} nat of scratch's "
        "final first is chosen"
    )
    lines = [f"For this model, start from {pick}: {how} (the rule: {rule})."]
    fast = min(means, key=lambda s: (speed(s), means[s]))
    if speed(fast) < speed(pick):
        lines.append(
            f"For a short fine-tune, {fast} {close(fast)}, sooner, but ends {means[fast] - means[pick]:.2f} nats "
            f"above {pick}."
        )
    return lines


def _still_improving(records: Records) -> list[str]:
    """The starts whose last epoch still lowered their value by more than :data:`STILL_IMPROVING`: the drop
    between their last two measurements, per epoch between them (the measurements may be epochs apart)."""
    lines = []
    for start in records.starts:
        last = [(r.points[-2], r.points[-1]) for r in records.of(start) if r.is_vae and len(r.points) >= 2]
        drops = [(a.objective - b.objective) / (b.epoch - a.epoch) for a, b in last]
        if drops and statistics.mean(drops) > STILL_IMPROVING:
            apart = {b.epoch - a.epoch for a, b in last}
            per = "in its last epoch" if apart == {1} else "per epoch between its last two measurements"
            lines.append(
                f"{start} was still improving at the end ({mean_sd(drops)} nats {per}): its final value is not "
                "converged, and more epochs would lower it."
            )
    return lines


def _noise(records: Records) -> list[str]:
    """How far a run's last per-epoch -ELBO (k draws) lies from its final one (final_k draws) after the same
    epoch: the per-epoch values' noise, which the epochs to within 1 nat are counted with."""
    gaps = [
        (abs(r.points[-1].objective - r.final_objective), r)
        for r in records.runs
        if r.is_vae and r.points and r.final_objective is not None
    ]
    gap, run = max(gaps, key=lambda g: g[0], default=(0.0, None))
    if records.discrete or run is None or gap <= NEAR_NATS / 2:
        return []
    o = records.config.get("options", {})
    held = records.config.get("data", {}).get("test", "?")
    subset = f", on {o['eval_samples']} of the {held} held-out samples" if o.get("eval_samples") else ""
    return [
        f"The per-epoch measurements (k = {o.get('k', '?')}{subset}) lie up to {gap:.2f} nats from the final ones "
        f"(k = {o.get('final_k', '?')}) after the same epoch ({run.start} seed {run.seed}): that is their noise, "
        f"and the epochs to within {NEAR_NATS:g} nat, counted with them, are uncertain by as much; a larger k or "
        "more held-out samples steady them."
    ]


def _price(records: Records) -> list[str]:
    """The price of a latent: the AE's reconstruction against each VAE start's, never averaged across starts.
    Eval-mode MSE in the data's units where the records hold it; else the reconstruction term in nats."""
    ae = [r for r in records.of("ae") if r.final is not None]
    vae_starts = [s for s in records.starts if s != "ae" and any(r.final is not None for r in records.of(s))]
    if not ae or not vae_starts:
        return []
    price = "discrete codes" if records.discrete else "a latent that can be sampled"
    ae_mse = [r.mse["eval"] for r in ae if r.mse]
    measured = {s: [r.mse for r in records.of(s) if r.final is not None and r.mse] for s in vae_starts}
    if ae_mse and any(measured.values()):
        reference = statistics.mean(ae_mse)
        per_start = []
        for start, mses in measured.items():
            if not mses:
                continue
            value = statistics.mean(m["eval"] for m in mses)
            text = f"{start} {sig(value)}" + (f" ({value / reference:.2f}x)" if reference > 0 else "")
            sampled = [m["sampled"] for m in mses if m.get("sampled") is not None]
            if sampled:
                text += f" (with z sampled as in training: {sig(statistics.mean(sampled))})"
            per_start.append(text)
        at = "each quantised model on its codes" if records.discrete else "each VAE on z = the posterior mean"
        return [
            f"Held-out MSE per element in the data's units, in eval mode (the AE on its code, {at}): the AE "
            f"{sig(reference)}; {', '.join(per_start)}: the price of {price}."
        ]
    ae_recon = statistics.mean(r.final.recon.value for r in ae if r.final is not None)
    per_start = [
        f"{s} {statistics.mean(r.final.recon.value for r in records.of(s) if r.final is not None):.2f}"
        for s in vae_starts
    ]
    term = (
        "the quantised models' (at their codes)"
        if records.discrete
        else "the VAEs' (an expectation over sampled z, so it holds the posterior's noise too)"
    )
    return [
        f"The AE's held-out reconstruction term is {ae_recon:.2f} nats; {term}: {', '.join(per_start)}: the "
        f"price of {price} (these records hold no MSE, so eval-mode reconstructions cannot be compared)."
    ]


def _step_rate(records: Records) -> list[str]:
    if not records.throughput:
        return []
    step = "quantised model's" if records.discrete else "VAE"
    t = records.throughput
    return [
        f"A {step} training step runs at {t['ratio']:.2f}x the AE step's rate ({t['vae_steps_per_s']:.1f} against "
        f"{t['ae_steps_per_s']:.1f} steps/s)."
    ]


def _best_file(records: Records) -> list[str]:
    best = records.best()
    if best is None or not best.model_file:
        return []
    model = records.config.get("model", "the autoencoder")
    return [
        f"The best run by final held-out {records.measure} is {best.start} seed {best.seed} "
        f"({best.final_objective:.2f} nats); its model is `{best.model_file}` (relative to the comparison's "
        f'folder): `vae, _ = fxvae.load(ae, "{best.model_file}", x)` loads it, where ae is an instance of '
        f"{model} (its weights do not matter) and x a batch of inputs."
    ]


def _epochs(records: Records) -> int:
    """The most epochs any run measured (what "not within" is said against)."""
    return max((r.points[-1].epoch for r in records.runs if r.points), default=0)


def _against(value: float, reference: float) -> str:
    """``value`` against ``reference`` in nats. A ratio only where both are positive: nats of a density can be
    negative or zero, and a ratio against them says nothing (or flips the sign's meaning)."""
    if value > 0 and reference > 0:
        return f"at {value / reference:.2f}x ({value:.2f} nats, {value - reference:+.2f})"
    return f"{value - reference:+.2f} nats (at {value:.2f})"


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
