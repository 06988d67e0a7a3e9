"""Warm-start fine-tuning: what makes the calibrated start keep its head start, measured on five pairs.

The calibrated conversion (``fxvae.convert(ae, x, calibration=data)``) is a good VAE before any step, yet under
some recipes it rises in its first epoch and is then passed by the plain conversion of the same AE. This study
trains the starts of ``fxvae.compare`` (scratch, warm, calibrated) under each ablation of ``ABLATIONS`` on the
pairs of examples/pairs.py, two of them real data that ships inside a package (ItalyPowerDemand from aeon,
photo patches from scikit-image), and checks the rule docs/compare.md states for the calibrated start:

- it gets within 1 nat of scratch's final held-out -ELBO in at most 3 epochs (``EPOCHS_RULE``);
- it ends no more than 0.5 nats above the plain warm start (``WARM_RULE``), and no worse than scratch.

An ablation trains only the starts it can move (how calibration is placed moves the calibrated start alone): the
other starts are the baseline's, the same seeds, batch order and noise. Two ablations change the AE instead of
the recipe: the same function with codes 10x larger (:func:`rescaled`), a scale an AE is free to pick.
``results/warm_start.md`` has the table per pair and ablation; ``results/warm_start.json`` the numbers per seed.

    python examples/warm_start_study.py --out results/              # the digits MLP, default and module
    pip install --no-deps aeon scikit-image   # the data of the power and patches pairs
    python examples/warm_start_study.py --out results/ --full --epochs 40   # every pair and ablation, 2 seeds

Measured on 2 shared cores at 1 thread: see docs/calibration.md for the times and the numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pairs import HOLDOUT, PAIRS, Pair, arguments, compared, mean_text, torch_threads

EPOCHS_RULE = 3
WARM_RULE = 0.5
NEAR = 1.0
"""Nats: "within reach" of scratch's final, as fxvae.study.records.NEAR_NATS."""
BATCH = 64
DEFAULT_PAIRS = "conv,signal,digits,power,patches"


@dataclass(frozen=True)
class Ablation:
    """One change to compare's default recipe, or to the AE (``code_scale``)."""

    name: str
    options: Callable[[int], dict[str, Any]]
    """The compare options, given the pair's optimiser steps per epoch."""
    describe: str
    starts: tuple[str, ...] = ("scratch", "warm", "calibrated")
    """The starts the change can move; the others are the baseline's (the same seeds, batches and noise)."""
    code_scale: float = 1.0
    """The AE's codes times this, by an AE that computes the same function (see :func:`rescaled`)."""


ABLATIONS = (
    Ablation("default", lambda steps: {}, "compare's default: one epoch of lr warm-up, then a cosine; folded map"),
    Ablation(
        "module",
        lambda steps: {"fold": False},
        "the calibration map kept as its own frozen module (the AE's layers keep their weights)",
        starts=("calibrated",),
    ),
    Ablation("no lr warm-up", lambda steps: {"lr_warmup": 0}, "the cosine from the first step, no warm-up"),
    Ablation("3-epoch lr warm-up", lambda steps: {"lr_warmup": 3 * steps}, "three epochs of lr warm-up"),
    Ablation("KL warm-up", lambda steps: {"kl_warmup": steps}, "the KL weight rises from 0 over the first epoch"),
    Ablation("log-sigma lr 0.1", lambda steps: {"log_sigma_lr": 0.1}, "the log-sigma head at a tenth of the lr"),
    Ablation(
        "module + no lr warm-up",
        lambda steps: {"fold": False, "lr_warmup": 0},
        "the map as its own module, and no lr warm-up",
    ),
    Ablation(
        "log-sigma 0",
        lambda steps: {"log_sigma_init": 0.0},
        "the calibrated start's log sigma at 0 (the prior's scale) instead of auto",
        starts=("calibrated",),
    ),
    Ablation(
        "log-sigma -3",
        lambda steps: {"log_sigma_init": -3.0},
        "the calibrated start's log sigma at -3 (sigma 0.05) instead of auto",
        starts=("calibrated",),
    ),
    Ablation(
        "codes x10",
        lambda steps: {},
        "the same AE function with codes 10x larger (its bottleneck layer x10, the decoder's first layer / 10)",
        starts=("warm", "calibrated"),
        code_scale=10.0,
    ),
    Ablation(
        "codes x10 + module",
        lambda steps: {"fold": False},
        "codes 10x larger, and the map as its own module",
        starts=("calibrated",),
        code_scale=10.0,
    ),
)


def rescaled(ae: nn.Module, scale: float) -> nn.Module:
    """The same function with codes ``scale`` times larger: the encoder's last layer (the bottleneck layer of
    every pair here) times ``scale``, the decoder's first layer's weight divided by it."""
    ae = copy.deepcopy(ae)
    with torch.no_grad():
        last = ae.encoder[-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale)
        ae.decoder[0].weight.div_(scale)
    return ae


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = arguments(__doc__.splitlines()[0], "every pair and ablation", DEFAULT_PAIRS, (20, 40), (1, 2))
    parser.add_argument("--ablations", default=None, help="comma-separated ablation names (default: all)")
    return parser.parse_args(argv)


def steps_per_epoch(pair: Pair) -> int:
    count = len(pair.data())
    return math.ceil((count - round(HOLDOUT * count)) / BATCH)


def run(pair: Pair, ablation: Ablation, args: argparse.Namespace, epochs: int, seeds: int) -> Any:
    out = args.out / "warm_start" / pair.name / ablation.name.replace(" + ", "+").replace(" ", "_")
    return compared(
        pair,
        args,
        out,
        epochs=epochs,
        seeds=seeds,
        starts=ablation.starts,
        ae_of=None if ablation.code_scale == 1.0 else lambda ae: rescaled(ae, ablation.code_scale),
        batch_size=BATCH,
        final_k=20,
        density=(),
        **ablation.options(steps_per_epoch(pair)),
    )


def curves(result: Any, start: str) -> list[list[float]]:
    return [r.objective() for r in result.of(start) if r.points]


def finals(result: Any, start: str) -> list[float]:
    return result.final_values(start)


def row(pair: Pair, ablation: Ablation, result: Any, baseline: Any) -> dict[str, Any]:
    """The calibrated start's numbers under ``ablation``, against scratch and warm under the same recipe."""

    def source(start: str) -> Any:
        return result if start in ablation.starts else baseline

    scratch, warm, calibrated = (finals(source(s), s) for s in ("scratch", "warm", "calibrated"))
    reached = [
        next((e for e, value in enumerate(curve) if value <= target + NEAR), None)
        for curve, target in zip(curves(result, "calibrated"), scratch, strict=True)
    ]
    over_warm = [c - w for c, w in zip(calibrated, warm, strict=True)]
    over_scratch = [c - s for c, s in zip(calibrated, scratch, strict=True)]
    holds = (
        all(r is not None and r <= EPOCHS_RULE for r in reached)
        and all(d <= WARM_RULE for d in over_warm)
        and all(d <= 0 for d in over_scratch)
    )
    return {
        "pair": pair.name,
        "ablation": ablation.name,
        "calibrated": curves(result, "calibrated"),
        "warm": curves(source("warm"), "warm"),
        "scratch": curves(source("scratch"), "scratch"),
        "finals": {"calibrated": calibrated, "warm": warm, "scratch": scratch},
        "reached": reached,
        "over_warm": over_warm,
        "over_scratch": over_scratch,
        "holds": holds,
    }


def _epochs(values: Sequence[int | None]) -> str:
    return ", ".join("never" if v is None else str(v) for v in values)


def summary(rows: Sequence[dict[str, Any]], pairs: Sequence[Pair], ablations: Sequence[Ablation]) -> str:
    lines = ["# Warm-start study: the calibrated start against scratch and the plain warm start", ""]
    lines += [f"- **{a.name}**: {a.describe}." for a in ablations]
    lines += [
        "",
        f"The rule: within {NEAR:g} nat of scratch's final in at most {EPOCHS_RULE} epochs, at most {WARM_RULE} nats "
        "above warm's final and not above scratch's (every seed).",
    ]
    for pair in pairs:
        lines += ["", f"## {pair.describe}", ""]
        lines += [
            "| ablation | calibrated: epoch 0 | epoch 1 | epochs to within 1 nat | final | - warm's final "
            "| - scratch's final | holds |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
        ]
        for r in (r for r in rows if r["pair"] == pair.name):
            epoch0 = [c[0] for c in r["calibrated"]]
            epoch1 = [c[1] for c in r["calibrated"] if len(c) > 1]
            lines.append(
                f"| {r['ablation']} | {mean_text(epoch0)} | {mean_text(epoch1)} | {_epochs(r['reached'])} | "
                f"{mean_text(r['finals']['calibrated'])} | {mean_text(r['over_warm'])} | "
                f"{mean_text(r['over_scratch'])} | {'yes' if r['holds'] else 'no'} |"
            )
        base = next((r for r in rows if r["pair"] == pair.name and r["ablation"] == "default"), None)
        if base is not None:
            lines.append("")
            lines.append(
                f"Under the default recipe: scratch ends at {mean_text(base['finals']['scratch'])}, warm at "
                f"{mean_text(base['finals']['warm'])}."
            )
    lines += ["", "## Every pair", "", "| ablation | holds on |", "| --- | --- |"]
    for ablation in ablations:
        held = [r["pair"] for r in rows if r["ablation"] == ablation.name and r["holds"]]
        tried = [r["pair"] for r in rows if r["ablation"] == ablation.name]
        lines.append(f"| {ablation.name} | {len(held)} of {len(tried)}: {', '.join(held) or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the study (``--full``: every pair and ablation; otherwise the digits MLP, default and module)."""
    args = parse(argv)
    names = (args.pairs or DEFAULT_PAIRS) if args.full else "digits"
    pairs = [PAIRS[name] for name in names.split(",")]
    wanted = args.ablations.split(",") if args.ablations else [a.name for a in ABLATIONS]
    if not args.full and not args.ablations:
        wanted = ["default", "module"]
    ablations = [a for a in ABLATIONS if a.name in wanted]
    epochs, seeds = args.epochs or (40 if args.full else 20), args.seeds or (2 if args.full else 1)
    rows = []
    with torch_threads(args.threads):
        began = time.perf_counter()
        for pair in pairs:
            started = time.perf_counter()
            baseline = run(pair, ABLATIONS[0], args, epochs, seeds)
            for ablation in ablations:
                if ablation is not ABLATIONS[0]:
                    started = time.perf_counter()
                result = baseline if ablation is ABLATIONS[0] else run(pair, ablation, args, epochs, seeds)
                rows.append(row(pair, ablation, result, baseline))
                print(f"{pair.name}, {ablation.name}: {time.perf_counter() - started:.0f} s", flush=True)
        path = args.out / "warm_start.md"
        path.write_text(summary(rows, pairs, ablations))
        (args.out / "warm_start.json").write_text(json.dumps(rows, indent=1))
        print(f"wrote {path} in {time.perf_counter() - began:.0f} s")
    for r in rows:
        print(
            r["pair"],
            r["ablation"],
            "holds" if r["holds"] else "fails",
            _epochs(r["reached"]),
            [round(d, 2) for d in r["over_warm"]],
            flush=True,
        )
    return path


if __name__ == "__main__":
    main()
