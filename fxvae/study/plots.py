"""The report's pictures: held-out curves per start with the seeds' spread, reconstructions of fixed held-out
samples, prior samples, and the KL per latent dimension. In the study, matplotlib is imported here and only here,
inside the functions that draw, so that importing this module (or ``fxvae``) does not import it; the one other
place in fxvae that draws is the command line's ``fxvae inspect --plot``.

A sample is drawn by its shape: (C, H, W) with 1 or 3 channels and (H, W) as images, (L,) and (C, L) with
a few long channels as signals (a line per channel), anything else as a heat map; ``image_shape`` views
flattened data as images.

Each picture is a function that returns its figure (:func:`curves_figure`, :func:`grid_figure`,
:func:`kl_figure`, and for the AE against its VAEs :func:`sources_figure` and :func:`interpolation_figure`), so
that a caller can keep, restyle or inspect it; :func:`plot_all` writes them as PNGs.

>>> from fxvae.study import plots
>>> result = fxvae.compare(ae, torch.randn(120, 64), epochs=2, k=1, final_k=2, progress=False)
>>> fig = plots.curves_figure(result)
>>> [ax.get_title().splitlines()[0] for ax in fig.axes]
['held-out -ELBO (nats per sample)', 'held-out reconstruction term (nats per sample)']
>>> plots.kl_order(result)[0]
'warm'
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fxvae.errors import InputError
from fxvae.study.records import NEAR_NATS, Point, Records

AE_VS_VAE_FIGURES = ("ae_vs_vae_samples.png", "ae_vs_vae_interpolation.png")
"""The pictures of the report's AE-vs-VAE section (:func:`plot_all` writes them; :mod:`fxvae.study.report` shows
them in that section)."""
_KL_BARS = 64
"""Latent dimensions shown in the KL picture (the largest first)."""
_KL_TICKS = 32
"""At most this many dimensions are named on the KL picture's x-axis."""
STRETCH = 3.0
"""A curve panel's y-axis shows the points within this many times the span of the curves' later halves beyond
that span, above and below (so at most 1 + 2 x STRETCH times it); the others are cut (see :func:`robust_range`)."""
LOG_RATIO = 10.0
"""A curve panel whose positive values span this ratio or more is drawn on a log scale."""
SQUEEZED = 0.02
"""Curves whose last values lie closer together than this share of a linear axis's height cannot be told apart:
the panel is then drawn on a log scale of the height above a floor just below the lowest point."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise InputError("the report's pictures need matplotlib: pip install 'fxvae[plot]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_all(comparison: Records, directory: Path) -> list[Path]:
    """Every picture that the comparison's records allow, written to ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [_save(curves_figure(comparison), directory / "curves.png")]
    if comparison.shown is not None and any(r.reconstructions for r in comparison.runs):
        written.append(_save(grid_figure(comparison, "reconstructions"), directory / "reconstructions.png"))
    if any(r.samples for r in comparison.runs):
        written.append(_save(grid_figure(comparison, "samples"), directory / "samples.png"))
    if any(r.final is not None and r.final.kl_per_dim for r in comparison.runs):
        written.append(_save(kl_figure(comparison), directory / "kl_per_dim.png"))
    samples, interpolation = AE_VS_VAE_FIGURES
    if _sources(comparison):
        written.append(_save(sources_figure(comparison), directory / samples))
    if _strips(comparison):
        written.append(_save(interpolation_figure(comparison), directory / interpolation))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _colours(comparison: Records) -> dict[str, Any]:
    palette = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    return {start: palette[i % len(palette)] for i, start in enumerate(comparison.starts)}


@dataclass(frozen=True)
class YRange:
    """The y-limits of a panel of curves, whether its scale is logarithmic, and how many points lie beyond the
    limits (drawn on the edge)."""

    low: float
    high: float
    above: int = 0
    below: int = 0
    log: bool = False
    floor: float | None = None
    """Set: the axis is logarithmic in the height above ``floor`` (below every value drawn)."""

    def clip(self, value: float) -> float:
        return min(max(value, self.low), self.high)

    def ticks(self, most: int = 9) -> list[float]:
        """Round values for the y-axis: evenly spread on a log scale above :attr:`floor` (at most ``most``),
        else none (matplotlib's own).

        >>> YRange(-15.0, 1000.0, floor=-15.2).ticks()
        [-15.0, -14.0, -10.0, 0.0, 30.0, 200.0, 1000.0]
        """
        if self.floor is None:
            return []
        floor = self.floor
        lowest, highest = math.log10(self.low - floor), math.log10(self.high - floor)
        found = set()
        for decade in range(math.floor(lowest), math.ceil(highest) + 1):
            for step in (1, 2, 5):
                unit = 10.0**decade
                found.add(round(round((floor + step * unit) / unit) * unit, 12))
        inside = sorted(v for v in found if self.low <= v <= self.high)
        kept: list[float] = []
        # No two ticks closer than a share of the axis, measured where they are drawn: on the log scale.
        gap = (highest - lowest) / most
        for value in inside:
            if not kept or math.log10(value - floor) - math.log10(kept[-1] - floor) >= gap:
                kept.append(value)
        return kept

    def note(self) -> str:
        """What the axis does to the values, for the panel's title ("" for a plain linear axis)."""
        cut = [
            f"{n} point{'s' if n > 1 else ''} {side} {edge:.4g} drawn {mark} on the edge"
            for n, side, edge, mark in ((self.above, "above", self.high, "▲"), (self.below, "below", self.low, "▼"))
            if n
        ]
        parts = ["log scale"] if self.log else []
        if self.floor is not None:
            parts.append(f"log scale of the height above {self.floor:.4g}")
        if cut:
            parts.append("y-axis cut: " + "; ".join(cut))
        return "; ".join(parts)


def robust_range(curves: Sequence[Sequence[float]], keep: Sequence[float] = ()) -> YRange:
    """y-limits that no single outlier can flatten: they hold the later half of every curve (and ``keep``, such
    as a target line), plus every other point within :data:`STRETCH` times that span of it; the points beyond are
    counted as cut. An epoch-0 -ELBO of 990 nats next to curves near 24 is cut; a gentle descent is shown whole.
    Where the positive values shown span :data:`LOG_RATIO` or more from the lowest to the highest, the scale is
    logarithmic, so that a curve far below the others keeps its shape. Where the curves' last values would still
    lie within :data:`SQUEEZED` of the axis's height of each other (a start that descends slowly from far above the
    others), every finite point is shown, on a log scale of the height above a floor just below the lowest point
    (``floor``).

    >>> robust_range([[990.0, 27.0, 25.0, 24.0], [26.0, 25.0, 24.5, 24.2]])
    YRange(low=23.85, high=27.15, above=1, below=0, log=False, floor=None)
    >>> robust_range([[990.0, 500.0, 200.0, 80.0], [-15.0, -15.0, -15.0, -15.03], [-14.8] * 4]).floor
    -15.145
    >>> robust_range([[130.0, 120.0, 116.0], [3.9, 3.8, 3.7]]).log
    True

    A diverged point (inf) is cut like an outlier; NaN is not drawn and not counted.
    """
    values = [v for c in curves for v in c]
    finite = [v for v in values if math.isfinite(v)] + list(keep)
    if not finite:
        return YRange(0.0, 1.0, sum(v == math.inf for v in values), sum(v == -math.inf for v in values))
    core = [v for c in curves for v in c[len(c) // 2 :] if math.isfinite(v)] + list(keep) or finite
    low, high = min(core), max(core)
    span = max(high - low, 1e-3 * max(1.0, abs(low), abs(high)))
    floor, ceiling = low - STRETCH * span, high + STRETCH * span
    shown = [v for v in finite if floor <= v <= ceiling]
    low, high = min(shown), max(shown)
    above, below = sum(v > ceiling for v in values), sum(v < floor for v in values)
    if low > 0 and high / low >= LOG_RATIO:
        # A margin of 5% of the axis's height, in decades.
        pad = (high / low) ** 0.05
        return YRange(round(low / pad, 12), round(high * pad, 12), above, below, log=True)
    pad = 0.05 * max(high - low, span)
    linear = YRange(round(low - pad, 12), round(high + pad, 12), above, below)
    ends = sorted({c[-1] for c in curves if c and math.isfinite(c[-1])})
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    if not gaps or min(gaps) >= SQUEEZED * (linear.high - linear.low):
        return linear
    # The closest two ends half a gap above the floor (and the others at least that), each further decade of
    # height compressed alike: the outliers are drawn, not cut.
    lift = max(min(gaps), 1e-3 * (ends[-1] - ends[0])) / 2
    floor = min(finite) - lift
    top = max(finite)
    infinite = (sum(v == math.inf for v in values), sum(v == -math.inf for v in values))
    return YRange(
        round(floor + lift / 2, 12), round(floor + (top - floor) * 1.3, 12), *infinite, floor=round(floor, 12)
    )


def curves_figure(comparison: Records) -> Any:
    """Held-out curves per start: the ranked measure (left) and the reconstruction term, or a discrete latent's
    codebook perplexity (right); a line per start (the mean over seeds), the seeds' range shaded, and the
    y-axis cut by :func:`robust_range` (said in the panel's title)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    colours = _colours(comparison)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    scratch = comparison.final_values("scratch")
    target = statistics.mean(scratch) + NEAR_NATS if scratch else None
    if comparison.discrete:
        right_panel = ("codebook perplexity on held-out data (exp of the codes' entropy)", _perplexity)
    else:
        right_panel = ("held-out reconstruction term (nats per sample)", _recon)
    panels = ((left, f"held-out {comparison.measure} (nats per sample)", _objective), (right, *right_panel))
    for ax, title, value in panels:
        drawn = []
        for start in comparison.starts:
            runs = [r for r in comparison.of(start) if r.points]
            # The AE has no ELBO and no codebook: it is drawn only in the reconstruction panel.
            if not runs or ((ax is left or comparison.discrete) and start == "ae"):
                continue
            # The epochs every seed measured (a budget's stop or a resume can add one to some): the band is
            # drawn over the same epochs, whatever eval_every left out.
            at = [{p.epoch: p for p in r.points} for r in runs]
            epochs = sorted(set.intersection(*(set(a) for a in at)))
            drawn.append((start, len(runs), epochs, [[value(a[e]) for a in at] for e in epochs]))
        keep = [target] if ax is left and target is not None else []
        limits = robust_range([[statistics.mean(v) for v in series] for *_, series in drawn], keep)
        for start, seeds, epochs, series in drawn:
            mean = [statistics.mean(v) for v in series]
            label = start if seeds == 1 else f"{start} ({seeds} seeds)"
            ax.plot(epochs, [limits.clip(v) for v in mean], marker="o", ms=3, color=colours[start], label=label)
            for mark, edge in (("^", limits.high), ("v", limits.low)):
                cut = [e for e, v in zip(epochs, mean, strict=True) if v != limits.clip(v) == edge]
                if cut:
                    ax.plot(cut, [edge] * len(cut), ls="none", marker=mark, ms=8, color=colours[start], clip_on=False)
            if seeds > 1:
                ax.fill_between(
                    epochs,
                    [limits.clip(min(v)) for v in series],
                    [limits.clip(max(v)) for v in series],
                    color=colours[start],
                    alpha=0.2,
                )
        if keep:
            ax.axhline(target, color="0.4", ls="--", lw=0.8, label=f"scratch final + {NEAR_NATS:g} nat")
        if limits.log:
            ax.set_yscale("log")
        if limits.floor is not None:
            _log_above(ax, limits.floor, limits.ticks())
        ax.set_ylim(limits.low, limits.high)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (0: before any step)")
        note = limits.note()
        ax.set_title(f"{title}\n{note}" if note else title, fontsize=9 if note else 10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{comparison.config.get('model')}: {comparison.config.get('likelihood')}", fontsize=9)
    return fig


def _log_above(ax: Any, floor: float, ticks: Sequence[float]) -> None:
    """The y-axis on a log scale of the height above ``floor``, ticked at ``ticks`` (round values)."""
    import numpy as np
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    # Heights at or below the floor (none is drawn there) are mapped just above it, never to log(0).
    tiny = 1e-12 * max(1.0, abs(floor))
    ax.set_yscale(
        "function",
        functions=(
            lambda y: np.log10(np.maximum(np.asarray(y) - floor, tiny)),
            lambda t: floor + 10.0 ** np.asarray(t),
        ),
    )
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _objective(point: Point) -> float:
    return point.objective


def _recon(point: Point) -> float:
    return point.evaluation.recon.value


def _perplexity(point: Point) -> float:
    return point.evaluation.perplexity


def _kind(shape: tuple[int, ...], viewed: bool) -> str:
    """How one sample is drawn: "image", "signal" (a line per channel) or "heatmap"."""
    if viewed or (len(shape) == 3 and shape[0] in (1, 3)):
        return "image"
    if len(shape) == 1 or (len(shape) == 2 and shape[0] <= 8 and shape[1] >= 4 * shape[0]):
        return "signal"
    if len(shape) == 2 and min(shape) >= 4:
        return "image"
    return "heatmap"


def _viewed(array: torch.Tensor, image_shape: tuple[int, ...] | None) -> torch.Tensor:
    if image_shape is not None and array.numel() == math.prod(image_shape):
        return array.reshape(image_shape)
    return array


def _draw(ax: Any, sample: torch.Tensor, kind: str, limits: tuple[float, float]) -> None:
    if kind == "image":
        image = sample if sample.dim() == 2 else sample.permute(1, 2, 0)
        image = ((image - limits[0]) / max(limits[1] - limits[0], 1e-12)).clamp(0, 1)
        image = image.squeeze(-1) if image.dim() == 3 and image.shape[-1] == 1 else image
        ax.imshow(image.numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
    elif kind == "signal":
        for channel in sample.reshape(-1, sample.shape[-1]):
            ax.plot(channel.tolist(), lw=0.8)
        ax.set_ylim(*limits)
        ax.set_xticks([])
        ax.tick_params(labelsize=6)
    else:
        flat = sample.reshape(sample.shape[0], -1) if sample.dim() > 1 else sample.reshape(1, -1)
        ax.imshow(flat.numpy(), aspect="auto", cmap="viridis", vmin=limits[0], vmax=limits[1])
        ax.set_xticks([])
        ax.set_yticks([])


def grid_figure(comparison: Records, what: str) -> Any:
    """``what``: "reconstructions" or "samples". Rows: the held-out samples (for reconstructions), then each
    start's first seed; columns: samples. The title says what was drawn (a prior samples' grid: from which prior)."""
    plt = _pyplot()
    image_shape = comparison.config.get("options", {}).get("image_shape")
    image_shape = tuple(image_shape) if image_shape else None
    rows: list[tuple[str, torch.Tensor]] = []
    if what == "reconstructions" and comparison.shown is not None:
        rows.append(("held-out data", torch.tensor(comparison.shown, dtype=torch.float32)))
    for start in comparison.starts:
        run = next((r for r in comparison.of(start) if getattr(r, what)), None)
        if run is not None:
            rows.append((start, torch.tensor(getattr(run, what), dtype=torch.float32)))
    columns = max(len(values) for _, values in rows)
    reference = rows[0][1]
    viewed = _viewed(reference[0], image_shape)
    kind = _kind(tuple(viewed.shape), viewed.shape != reference[0].shape)
    low = min(float(v.min()) for _, v in rows)
    high = max(float(v.max()) for _, v in rows)
    if comparison.shown is not None:
        shown = torch.tensor(comparison.shown, dtype=torch.float32)
        low, high = float(shown.min()), float(shown.max())
    size = 1.1 if kind == "image" else 1.8
    fig, axes = plt.subplots(len(rows), columns, figsize=(size * columns + 1.2, size * 0.8 * len(rows) + 0.8))
    axes = [[axes]] if len(rows) == 1 and columns == 1 else axes
    axes = [axes] if len(rows) == 1 else axes
    for r, (label, values) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            if c < len(values):
                _draw(ax, _viewed(values[c], image_shape), kind, (low, high))
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if what == "reconstructions":
        title = "reconstructions of held-out samples (eval mode)"
    else:
        title = f"prior samples, decoded: {_prior(comparison)}"
    fig.suptitle(title, fontsize=9)
    return fig


def _prior(comparison: Records) -> str:
    """The prior the samples' grid draws from, as its title says it."""
    has_ae = any(r.samples for r in comparison.of("ae"))
    if comparison.discrete:
        ae = " (the AE row: its decoder on z ~ N(0, I))" if has_ae else ""
        return f"codes drawn uniformly from the codebook at every position{ae}"
    kinds = sorted({r.samples_from for r in comparison.of("ae") if r.samples and r.samples_from})
    if kinds:
        return f"z ~ N(0, I) (the AE row: its decoder on draws of the {' and '.join(kinds)} fitted to its codes)"
    return "z ~ N(0, I)" + (" (the AE row: its decoder on the same prior)" if has_ae else "")


def kl_order(comparison: Records) -> tuple[str, list[int]] | None:
    """The start whose KL per dimension orders the KL picture, and its dimensions, largest KL first (at most
    :data:`_KL_BARS`). Every start draws dimension d at the same place. The first start converted from the AE
    orders them (warm and calibrated share the AE's latent units; scratch's units have no relation to them);
    scratch does only where it is the one start with a KL."""
    kls = _kl_per_dim(comparison)
    if not kls:
        return None
    start = next((s for s in kls if s != "scratch"), next(iter(kls)))
    per_dim = kls[start]
    return start, sorted(range(len(per_dim)), key=lambda d: (-per_dim[d], d))[:_KL_BARS]


def _kl_per_dim(comparison: Records) -> dict[str, list[float]]:
    """Per start with a final KL per dimension: its mean over the seeds."""
    kls = {}
    for start in comparison.starts:
        finals = [r.final.kl_per_dim for r in comparison.of(start) if r.final is not None and r.final.kl_per_dim]
        if finals:
            kls[start] = [statistics.mean(values) for values in zip(*finals, strict=True)]
    return kls


def kl_figure(comparison: Records) -> Any:
    """Bars of the final KL per latent dimension, a group per dimension with a bar per start (see :func:`kl_order`)."""
    plt = _pyplot()
    from matplotlib.ticker import FixedLocator

    colours = _colours(comparison)
    kls = _kl_per_dim(comparison)
    ordered = kl_order(comparison)
    if ordered is None:
        raise InputError("the comparison's final records hold no KL per latent dimension: nothing to draw")
    reference, order = ordered
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / len(kls)
    for i, (start, per_dim) in enumerate(kls.items()):
        finals = [r.final for r in comparison.of(start) if r.final is not None and r.final.kl_per_dim]
        active = statistics.mean(f.active_units or 0 for f in finals)
        xs = [j + (i - (len(kls) - 1) / 2) * width for j in range(len(order))]
        ax.bar(
            xs,
            [per_dim[d] for d in order],
            width=width,
            color=colours[start],
            label=f"{start}: {active:g} active units",
        )
    every = math.ceil(len(order) / _KL_TICKS)
    ax.xaxis.set_major_locator(FixedLocator(range(0, len(order), every)))
    ax.set_xticklabels([str(order[j]) for j in range(0, len(order), every)], fontsize=7)
    ax.set_xlim(-0.5, len(order) - 0.5)
    total = len(kls[reference])
    more = f"; the {len(order)} largest of {total}" if total > len(order) else ""
    ax.set_xlabel(f"latent dimension (its index), ordered by {reference}'s KL, largest first{more}")
    ax.set_ylabel("held-out KL (nats)")
    ax.set_title("KL per latent dimension at the end (mean over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


_PER_SOURCE = 6
"""Samples shown per model and source in the AE-vs-VAE samples picture."""
_STRIPS = 2
"""Interpolation strips shown per model."""


def _first_pictures(comparison: Records, start: str) -> dict[str, Any]:
    """The AE-vs-VAE pictures of ``start``'s first seed that recorded them ({} where none did)."""
    return next((r.pictures for r in comparison.of(start) if r.pictures), {})


def _sources(comparison: Records) -> list[str]:
    """What the models sample from, in the picture's column order: the prior, then each density kind."""
    kinds = {k for s in comparison.starts for k in (_first_pictures(comparison, s).get("samples") or {})}
    return sorted(kinds, key=lambda k: (k != "prior", k != "gaussian", k))


def _strips(comparison: Records) -> dict[str, list[Any]]:
    """Per start with interpolation strips: its first :data:`_STRIPS` strips."""
    found = {s: (_first_pictures(comparison, s).get("interpolation") or [])[:_STRIPS] for s in comparison.starts}
    return {s: strips for s, strips in found.items() if strips}


def _layout(comparison: Records, values: Sequence[torch.Tensor]) -> tuple[str, tuple[float, float], Any]:
    """How the pictures' samples are drawn (see :func:`_kind`), their shared value range (the shown held-out
    samples' where recorded) and the image shape to view them with."""
    image_shape = comparison.config.get("options", {}).get("image_shape")
    image_shape = tuple(image_shape) if image_shape else None
    first = values[0][0]
    viewed = _viewed(first, image_shape)
    kind = _kind(tuple(viewed.shape), viewed.shape != first.shape)
    if comparison.shown is not None:
        shown = torch.tensor(comparison.shown, dtype=torch.float32)
        return kind, (float(shown.min()), float(shown.max())), image_shape
    return kind, (min(float(v.min()) for v in values), max(float(v.max()) for v in values)), image_shape


def _blank(ax: Any) -> None:
    """An empty cell that still shows its row's label (``axis("off")`` would hide it)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _source_title(source: str) -> str:
    return "from its prior N(0, I)" if source == "prior" else f"from an ex-post {source} fitted to its codes"


def _strip(ax: Any, samples: torch.Tensor, kind: str, limits: tuple[float, float], image_shape: Any) -> list[float]:
    """``samples`` side by side in one axes (one axes per sample makes a picture of many samples several times
    slower to lay out and save): images and heat maps as one mosaic with a blank column between samples,
    signals one after another along x with a faint line between them. The x of each sample's middle."""
    viewed = [_viewed(sample, image_shape) for sample in samples]
    if kind == "signal":
        length = viewed[0].shape[-1]
        for i, sample in enumerate(viewed):
            start = i * (length + 1)
            for c, channel in enumerate(sample.reshape(-1, length)):
                ax.plot(range(start, start + length), channel.tolist(), lw=0.8, color=f"C{c}")
            if i:
                ax.axvline(start - 1, color="0.85", lw=0.8)
        ax.set_ylim(*limits)
        ax.set_xlim(-0.5, len(viewed) * (length + 1) - 1.5)
        ax.set_xticks([])
        ax.tick_params(labelsize=6)
        return [i * (length + 1) + (length - 1) / 2 for i in range(len(viewed))]
    if kind == "image":
        tiles = [sample if sample.dim() == 2 else sample.permute(1, 2, 0) for sample in viewed]
        tiles = [((t - limits[0]) / max(limits[1] - limits[0], 1e-12)).clamp(0, 1) for t in tiles]
        tiles = [t.squeeze(-1) if t.dim() == 3 and t.shape[-1] == 1 else t for t in tiles]
        colour = dict(cmap="gray", vmin=0.0, vmax=1.0)
    else:
        tiles = [s.reshape(s.shape[0], -1) if s.dim() > 1 else s.reshape(1, -1) for s in viewed]
        colour = dict(cmap="viridis", vmin=limits[0], vmax=limits[1])
    gap = torch.ones_like(tiles[0][:, :1]) if tiles[0].dim() == 3 else torch.full_like(tiles[0][:, :1], math.nan)
    mosaic = torch.cat([part for tile in tiles for part in (tile, gap)][:-1], dim=1)
    ax.imshow(mosaic.numpy(), aspect="equal" if kind == "image" else "auto", interpolation="nearest", **colour)
    ax.set_xticks([])
    ax.set_yticks([])
    width = tiles[0].shape[1]
    return [i * (width + 1) + (width - 1) / 2 for i in range(len(tiles))]


def sources_figure(comparison: Records) -> Any:
    """Each model's samples side by side: a row per start, a column per source (its prior N(0, I), then each
    density fitted to its training codes), up to :data:`_PER_SOURCE` samples in each cell. Each cell's axes is
    labelled ``"start|source"`` (``Axes.get_label()``) for a reader of the figure.

    >>> from fxvae.study.records import RunRecord
    >>> drawn = {"prior": [[0.0, 1.0, 2.0, 3.0]] * 2, "gmm": [[3.0, 2.0, 1.0, 0.0]] * 2}
    >>> runs = [RunRecord("ae", 0, pictures={"samples": {"gmm": drawn["gmm"]}}),
    ...         RunRecord("warm", 0, pictures={"samples": drawn})]
    >>> fig = sources_figure(Records({}, runs))
    >>> [ax.get_label() for ax in fig.axes if ax.get_label()]
    ['ae|gmm', 'warm|prior', 'warm|gmm']
    """
    plt = _pyplot()
    sources = _sources(comparison)
    if not sources:
        raise InputError("the comparison's final records hold no samples per source: nothing to draw")
    grid: dict[tuple[str, str], torch.Tensor] = {}
    for start in comparison.starts:
        samples = _first_pictures(comparison, start).get("samples") or {}
        for source in sources:
            if samples.get(source):
                grid[start, source] = torch.tensor(samples[source], dtype=torch.float32)[:_PER_SOURCE]
    starts = [s for s in comparison.starts if any((s, source) in grid for source in sources)]
    per = max(len(v) for v in grid.values())
    kind, limits, image_shape = _layout(comparison, list(grid.values()))
    size = 0.9 if kind == "image" else 1.4
    fig, axes = plt.subplots(
        len(starts),
        len(sources),
        figsize=(size * per * len(sources) + 1.4, size * len(starts) + 1.0),
        squeeze=False,
    )
    for r, start in enumerate(starts):
        for c, source in enumerate(sources):
            ax = axes[r][c]
            values = grid.get((start, source))
            if values is not None:
                _strip(ax, values, kind, limits, image_shape)
                ax.set_label(f"{start}|{source}")
            else:
                _blank(ax)
                why = "an AE has no prior" if start == "ae" and source == "prior" else "not recorded"
                ax.text(0.5, 0.5, why, fontsize=7, color="0.4", ha="center", va="center", transform=ax.transAxes)
            if r == 0:
                ax.set_title(_source_title(source), fontsize=8)
            if c == 0:
                ax.set_ylabel(start, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(
        "samples decoded from each model's prior and from densities fitted to its training codes "
        "(the AE's own samples are its density's)",
        fontsize=9,
    )
    return fig


def interpolation_figure(comparison: Records) -> Any:
    """Interpolation strips: per start, up to :data:`_STRIPS` straight lines between two held-out codes, decoded
    at evenly spaced points, each line a row (t = 0 at the first code, 1 at the second, under each point). Each
    row's axes is labelled ``"start|line"``.

    >>> from fxvae.study.records import RunRecord
    >>> strip = [[t / 4] * 4 for t in range(5)]
    >>> fig = interpolation_figure(Records({}, [RunRecord("warm", 0, pictures={"interpolation": [strip]})]))
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['t = 0', '0.25', '0.5', '0.75', '1']
    """
    plt = _pyplot()
    strips = _strips(comparison)
    if not strips:
        raise InputError("the comparison's final records hold no interpolation strips: nothing to draw")
    rows = [
        (s, j, torch.tensor(strip, dtype=torch.float32)) for s, lines in strips.items() for j, strip in enumerate(lines)
    ]
    points = max(len(values) for *_, values in rows)
    kind, limits, image_shape = _layout(comparison, [values for *_, values in rows])
    size = 0.9 if kind == "image" else 1.4
    fig, axes = plt.subplots(len(rows), 1, figsize=(size * points + 1.4, size * len(rows) + 1.0), squeeze=False)
    for r, (start, j, values) in enumerate(rows):
        ax = axes[r][0]
        middles = _strip(ax, values, kind, limits, image_shape)
        ax.set_label(f"{start}|{j}")
        ax.set_ylabel(start if j == 0 else f"{start} ({j + 1})", fontsize=8, rotation=0, ha="right", va="center")
        ax.set_xticks(middles)
        t = [f"{i / max(len(values) - 1, 1):.2g}" for i in range(len(values))]
        ax.set_xticklabels([f"t = {t[0]}", *t[1:]], fontsize=7)
    fig.suptitle("decoded along straight lines between two held-out codes (in each model's own latent)", fontsize=9)
    return fig
