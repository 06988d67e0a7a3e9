"""AE vs VAE: fine-tune the VAE fxvae makes from a trained AE, or train the same VAE from scratch?

By default (about a minute on 2 cores at 1 thread) this trains an MLP autoencoder on scikit-learn's 8x8 digits
and asks fxvae.compare, which writes ``results/digits/report.md`` and its pictures:

    fxvae.compare(ae, digits, starts=("scratch", "warm", "calibrated", "ae"), likelihood="bernoulli", ...)

``--full`` runs the study of docs/compare.md: three model and data pairs (examples/pairs.py: the digits MLP,
a conv AE on 28x28 digits, a 1-d conv AE on synthetic signals), each under every fine-tuning recipe of
``RECIPES``, with 3 seeds. Each comparison writes ``results/<pair>/<recipe>/``; ``results/study.md`` gathers
their headline numbers. ``--resume`` continues a stopped study (every finished epoch is on disk); a
comparison that is complete is read back, not run again.

    python examples/compare_ae_vae.py --out results/            # the default, about a minute
    python examples/compare_ae_vae.py --out results/ --full     # the study

``--threads`` sets torch's threads, 1 by default: on 2 shared cores two threads that wait on each other
stall whenever another job holds a core (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pairs import PAIRS, Pair, arguments, compared, mean_text, torch_threads

STARTS = ("scratch", "warm", "calibrated", "ae")


@dataclass(frozen=True)
class Recipe:
    """How every start of a comparison is fine-tuned (the same for every start: one loop for all)."""

    name: str
    options: dict[str, Any]
    describe: str


RECIPES = (
    Recipe("warm-up, cosine", {}, "fxvae.compare's default: one epoch of linear warm-up to 1e-3, then a cosine to 0"),
    Recipe("constant", {"lr_warmup": 0, "schedule": "constant"}, "Adam at lr 1e-3 throughout"),
    Recipe("warm-up", {"schedule": "constant"}, "one epoch of linear warm-up to 1e-3, then constant"),
    Recipe(
        "one-cycle",
        {"lr_warmup": 0, "schedule": "one-cycle"},
        "one cycle: from 4e-5 up to 1e-3 over 30% of the run, then down to 1e-7",
    ),
    Recipe("warm-up, lr 3e-3", {"schedule": "constant", "lr": 3e-3}, "one epoch of warm-up to 3e-3, then constant"),
)
DEFAULT_EPOCHS = 20
FULL_EPOCHS = 40
FULL_SEEDS = 3


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = arguments(
        __doc__.splitlines()[0],
        "the study of docs/compare.md: 3 pairs, every recipe",
        "digits,conv,signal",
        (DEFAULT_EPOCHS, FULL_EPOCHS),
        (1, FULL_SEEDS),
    )
    parser.add_argument("--recipes", default=None, help="comma-separated recipe names for --full (default: all)")
    return parser.parse_args(argv)


def compare(pair: Pair, recipe: Recipe, args: argparse.Namespace, out: Path, epochs: int, seeds: int) -> Any:
    """One comparison: the pair's trained AE, the recipe's fine-tuning, the report in ``out``."""
    return compared(pair, args, out, epochs=epochs, seeds=seeds, starts=STARTS, k=8, final_k=100, **recipe.options)


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the default comparison (or the study, ``--full``); returns the report's path."""
    args = parse(argv)
    with torch_threads(args.threads):
        began = time.perf_counter()
        if not args.full:
            out = args.out / "digits"
            result = compare(PAIRS["digits"], RECIPES[0], args, out, args.epochs or DEFAULT_EPOCHS, args.seeds or 1)
            for line in result.verdict():
                print(f"- {line}")
            print(f"wrote {out / 'report.md'} in {time.perf_counter() - began:.0f} s")
            return out / "report.md"
        return study(args, began)


def study(args: argparse.Namespace, began: float) -> Path:
    pairs = [PAIRS[name] for name in (args.pairs or "digits,conv,signal").split(",")]
    wanted = args.recipes.split(",") if args.recipes else [r.name for r in RECIPES]
    recipes = [r for r in RECIPES if r.name in wanted]
    results: dict[tuple[str, str], Any] = {}
    for pair in pairs:
        for recipe in recipes:
            out = args.out / pair.name / recipe.name.replace(", ", "_").replace(" ", "_")
            epochs, seeds = args.epochs or FULL_EPOCHS, args.seeds or FULL_SEEDS
            results[pair.name, recipe.name] = compare(pair, recipe, args, out, epochs, seeds)
            print(f"{pair.name}, {recipe.name}: {out / 'report.md'}", flush=True)
    path = args.out / "study.md"
    path.write_text(summary(pairs, recipes, results))
    rows = numbers(results)
    (args.out / "study.json").write_text(json.dumps(rows, indent=1))
    plot_study(pairs, recipes, rows, args.out / "study.png")
    print(f"wrote {path} in {time.perf_counter() - began:.0f} s")
    return path


def numbers(results: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    """Per pair, recipe and start: the numbers the summary shows, per seed."""
    rows = []
    for (pair, recipe), comparison in results.items():
        reached = comparison.epochs_to_within()
        for start in comparison.starts:
            runs = [r for r in comparison.of(start) if r.points]
            rows.append(
                {
                    "pair": pair,
                    "recipe": recipe,
                    "start": start,
                    "epoch0": [r.points[0].objective for r in runs],
                    "epoch1": [r.points[1].objective for r in runs if len(r.points) > 1],
                    "final": [r.points[-1].objective for r in runs],
                    "reached": reached.get(start, []),
                    "epochs": [r.points[-1].epoch for r in runs],
                    "curves": [r.objective() for r in runs],
                }
            )
    return rows


def _reached(values: Sequence[int | None], epochs: int) -> str:
    per_seed = ", ".join(f">{epochs}" if v is None else str(v) for v in values)
    if values and all(v is not None for v in values):
        return f"{statistics.mean(values):.1f} ({per_seed})"
    return per_seed or "-"


def _best_scratch(rows: Sequence[dict[str, Any]], pair: str) -> list[float]:
    """Per seed, scratch's lowest final -ELBO over every recipe of the pair: scratch at its best."""
    finals = [r["final"] for r in rows if r["pair"] == pair and r["start"] == "scratch"]
    return [min(values) for values in zip(*finals, strict=True)] if finals else []


def summary(pairs: Sequence[Pair], recipes: Sequence[Recipe], results: dict[tuple[str, str], Any]) -> str:
    """The study's headline tables: per pair, each recipe's starts against scratch under the same recipe, and
    against scratch's best final over all the recipes."""
    lines = ["# AE vs VAE: the study", ""]
    lines += [f"- {r.name}: {r.describe}." for r in recipes]
    rows = numbers(results)
    for pair in pairs:
        best = _best_scratch(rows, pair.name)
        lines += ["", f"## {pair.describe}", ""]
        lines.append(f"Scratch's best final -ELBO over the recipes, per seed: {', '.join(f'{b:.2f}' for b in best)}.")
        lines += [
            "",
            "| recipe | start | -ELBO epoch 0 | epoch 1 | final | epochs to within 1 nat of scratch's final "
            "| ... of scratch's best final |",
            "| --- | --- | ---: | ---: | ---: | --- | --- |",
        ]
        for recipe in recipes:
            for row in (r for r in rows if r["pair"] == pair.name and r["recipe"] == recipe.name):
                if row["start"] == "ae":
                    continue
                epochs = max(row["epochs"], default=0)
                to_best = [
                    next((e for e, value in enumerate(curve) if value <= target + 1.0), None)
                    for curve, target in zip(row["curves"], best, strict=True)
                ]
                lines.append(
                    f"| {recipe.name} | {row['start']} | {mean_text(row['epoch0'])} | {mean_text(row['epoch1'])} | "
                    f"{mean_text(row['final'])} | {_reached(row['reached'], epochs)} | {_reached(to_best, epochs)} |"
                )
    return "\n".join(lines) + "\n"


def plot_study(pairs: Sequence[Pair], recipes: Sequence[Recipe], rows: list[dict[str, Any]], path: Path) -> None:
    """Per pair, the held-out -ELBO of every start under the first recipe (fxvae.compare's default), the seeds'
    mean, and scratch and the calibrated start under the recipe whose scratch final is best (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"scratch": "tab:blue", "warm": "tab:orange", "calibrated": "tab:green"}
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.2), squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        mine = [r for r in rows if r["pair"] == pair.name and r["start"] in colours]
        default = [r for r in mine if r["recipe"] == recipes[0].name]
        scratch = [r for r in mine if r["start"] == "scratch"]
        best = min(scratch, key=lambda r: statistics.mean(r["final"]))
        shown = list(default)
        if best["recipe"] != recipes[0].name:
            same = next(r for r in mine if r["recipe"] == best["recipe"] and r["start"] == "calibrated")
            shown += [{**best, "best": True}, {**same, "best": True}]
        low, high = [], []
        for row in shown:
            curve = [statistics.mean(values) for values in zip(*row["curves"], strict=True)]
            label = f"{row['start']}, {row['recipe']}" + (" (scratch's best)" if row.get("best") else "")
            ax.plot(curve, color=colours[row["start"]], ls="--" if row.get("best") else "-", label=label)
            low.append(min(curve))
            high.append(curve[len(curve) // 4])
        span = max(high) - min(low)
        ax.set_ylim(min(low) - 0.1 * span, max(high) + 0.2 * span)
        ax.set_title(pair.describe, fontsize=9)
        ax.set_xlabel("epoch (0: before any step)")
        ax.set_ylabel("held-out -ELBO (nats per sample)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
