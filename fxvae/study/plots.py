"""The report's pictures: held-out curves per start with the seeds' spread, reconstructions of fixed held-out
samples, prior samples, and the KL per latent dimension. matplotlib is imported here and only here.

A sample is drawn by its shape: (C, H, W) with 1 or 3 channels and (H, W) as images, (L,) and (C, L) with
a few long channels as signals (a line per channel), anything else as a heat map; ``image_shape`` views
flattened data as images.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch

from fxvae.errors import InputError
from fxvae.study.comparison import NEAR_NATS, Comparison

_KL_BARS = 64
"""Latent dimensions shown in the KL picture (the largest first)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise InputError("the report's pictures need matplotlib: pip install 'fxvae[plot]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_all(comparison: Comparison, directory: Path) -> list[Path]:
    """Every picture that the comparison's records allow, written to ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    written = [_curves(comparison, directory / "curves.png", plt)]
    if comparison.shown is not None and any(r.reconstructions for r in comparison.runs):
        written.append(_grid(comparison, "reconstructions", directory / "reconstructions.png", plt))
    if any(r.samples for r in comparison.runs):
        written.append(_grid(comparison, "samples", directory / "samples.png", plt))
    if any(r.final is not None and r.final.kl_per_dim for r in comparison.runs):
        written.append(_kl_bars(comparison, directory / "kl_per_dim.png", plt))
    return written


def _colours(comparison: Comparison) -> dict[str, Any]:
    palette = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    return {start: palette[i % len(palette)] for i, start in enumerate(comparison.starts)}


def _curves(comparison: Comparison, path: Path, plt: Any) -> Path:
    colours = _colours(comparison)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for start in comparison.starts:
        runs = [r for r in comparison.of(start) if r.points]
        if not runs:
            continue
        epochs = [p.epoch for p in runs[0].points]
        length = min(len(r.points) for r in runs)
        if comparison.discrete:
            panels = ((left, lambda p: p.objective), (right, lambda p: p.evaluation.perplexity))
        else:
            panels = ((left, lambda p: p.objective), (right, lambda p: p.evaluation.recon.value))
        for ax, value in panels:
            if (ax is left or comparison.discrete) and start == "ae":
                continue
            series = [[value(r.points[i]) for r in runs] for i in range(length)]
            mean = [statistics.mean(v) for v in series]
            label = start if len(runs) == 1 else f"{start} ({len(runs)} seeds)"
            ax.plot(epochs[:length], mean, marker="o", ms=3, color=colours[start], label=label)
            if len(runs) > 1:
                ax.fill_between(
                    epochs[:length], [min(v) for v in series], [max(v) for v in series], color=colours[start], alpha=0.2
                )
    scratch = [r.objective()[-1] for r in comparison.of("scratch") if r.points]
    if scratch:
        target = statistics.mean(scratch) + NEAR_NATS
        left.axhline(target, color="0.4", ls="--", lw=0.8, label=f"scratch final + {NEAR_NATS:g} nat")
    values = [p.objective for r in comparison.runs if r.is_vae for p in r.points]
    if values:
        low, high = min(values), sorted(values)[int(0.9 * (len(values) - 1))]
        left.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.25 * (high - low + 1e-9))
    left.set_title(f"held-out {comparison.measure} (nats per sample)", fontsize=10)
    if comparison.discrete:
        right.set_title("codebook perplexity on held-out data (codes in use)", fontsize=10)
    else:
        right.set_title("held-out reconstruction term (nats per sample)", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("epoch (0: before any step)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{comparison.config.get('model')}: {comparison.config.get('likelihood')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
        ax.imshow(image.numpy(), cmap="gray")
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


def _grid(comparison: Comparison, what: str, path: Path, plt: Any) -> Path:
    """Rows: the held-out samples (for reconstructions), then each start's first seed; columns: samples."""
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
    fig, axes = plt.subplots(len(rows), columns, figsize=(size * columns + 1.2, size * 0.8 * len(rows) + 0.6))
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
    titles = {"reconstructions": "reconstructions of held-out samples (eval mode)", "samples": "prior samples"}
    fig.suptitle(titles[what], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _kl_bars(comparison: Comparison, path: Path, plt: Any) -> Path:
    colours = _colours(comparison)
    starts = [s for s in comparison.starts if any(r.final is not None and r.final.kl_per_dim for r in comparison.of(s))]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / max(len(starts), 1)
    shown = 0
    for i, start in enumerate(starts):
        finals = [r.final for r in comparison.of(start) if r.final is not None and r.final.kl_per_dim]
        per_dim = [statistics.mean(values) for values in zip(*(f.kl_per_dim for f in finals), strict=True)]
        ranked = sorted(per_dim, reverse=True)[:_KL_BARS]
        shown = max(shown, len(ranked))
        active = statistics.mean(f.active_units or 0 for f in finals)
        xs = [j + (i - (len(starts) - 1) / 2) * width for j in range(len(ranked))]
        ax.bar(xs, ranked, width=width, color=colours[start], label=f"{start}: {active:g} active units")
    total = len(comparison.runs[0].final.kl_per_dim) if comparison.runs and comparison.runs[0].final else shown
    more = f" (the {shown} largest of {total})" if total > shown else ""
    ax.set_xlabel(f"latent dimension, largest KL first{more}")
    ax.set_ylabel("held-out KL (nats)")
    ax.set_title("KL per latent dimension at the end (mean over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
