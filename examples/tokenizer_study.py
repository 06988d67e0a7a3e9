"""A trained AE as a tokenizer: does fitting the quantiser to the AE's own codes beat a random quantiser, and a
VQ-VAE of the same architecture trained from scratch?

Each comparison is one ``fxvae.compare(ae, data, latent=...)`` call with the starts

- ``warm``: the trained AE with its quantiser fitted to the training data's codes (VQ: k-means; FSQ:
  principal components and ranges);
- ``random``: the trained AE with the same quantiser at its random start;
- ``scratch``: the whole model (AE and quantiser) from scratch;
- ``ae``: the AE itself, the reference.

By default (about a minute on 2 cores at 1 thread) it runs VQ with K = 256 on the 28x28 digits' conv AE
(examples/pairs.py, ``tokens``), 1 seed; ``--full`` runs docs/discrete.md's study: VQ (K = 256) and FSQ
(levels 8, 5, 5, 5) on that pair and on the 1-d signal AE, under fxvae.compare's default recipe and at a third
of its learning rate, 2 seeds, and writes ``results/tokens.md`` and ``results/tokens.json``. ``--resume``
continues; finished comparisons are read back.

    python examples/tokenizer_study.py --out results/
    python examples/tokenizer_study.py --out results/ --full
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import fxvae

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pairs import HOLDOUT, PAIRS, Pair, arguments, compared, mean_text, torch_threads, trained

STARTS = ("scratch", "warm", "random", "ae")
LATENTS: dict[str, dict[str, Any]] = {
    "vq": {"latent": "vq", "codebook_size": 256},
    "fsq": {"latent": "fsq", "levels": (8, 5, 5, 5)},
}
RECIPES: dict[str, dict[str, Any]] = {"default": {}, "lr 3e-4": {"lr": 3e-4}}
"""fxvae.compare's default (one epoch of warm-up to 1e-3, then a cosine), and the same at a third of the rate."""
DEFAULT_EPOCHS = 8
FULL_EPOCHS = 30
FULL_SEEDS = 2


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = arguments(
        __doc__.splitlines()[0],
        "docs/discrete.md's study: 2 pairs, VQ and FSQ, 2 recipes",
        "tokens,signal",
        (DEFAULT_EPOCHS, FULL_EPOCHS),
        (1, FULL_SEEDS),
    )
    parser.add_argument("--latents", default=None, help="comma-separated latents for --full (default: vq,fsq)")
    return parser.parse_args(argv)


def compare(pair: Pair, latent: str, recipe: str, args: argparse.Namespace, out: Path, epochs: int, seeds: int) -> Any:
    options = {**LATENTS[latent], **RECIPES[recipe]}
    return compared(pair, args, out, epochs=epochs, seeds=seeds, starts=STARTS, k=1, final_k=1, **options)


def step0_mse(pair: Pair, latent: str, args: argparse.Namespace) -> dict[str, float]:
    """The conversion's own cost at step 0, in mean squared error of the data-space reconstruction (pixel
    probabilities, or the signal): on the training split (what ``Conversion.quantizer`` records) and held out."""
    ae, data = trained(pair, args.out / "autoencoders", epochs=args.ae_epochs)
    train, test = fxvae.study.Samples(data).split(HOLDOUT, seed=0)
    example = train.batch(torch.arange(64))
    config = fxvae.study.CompareOptions(**LATENTS[latent]).latent_config()
    model, _ = fxvae.convert(ae, example, calibration=train, likelihood=pair.likelihood, latent=config)
    info = fxvae.conversion(model).quantizer
    likelihood = fxvae.likelihoods.get(pair.likelihood)
    held_out = test.tensors[0]
    with torch.no_grad():
        errors = [(likelihood.mean(m.eval()(held_out)) - held_out).pow(2).mean().item() for m in (ae, model)]
    return {"train_ae": info.ae_mse, "train_quantised": info.quantized_mse, "ae": errors[0], "quantised": errors[1]}


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the default comparison (or the study, ``--full``); returns the report's path."""
    args = parse(argv)
    with torch_threads(args.threads):
        began = time.perf_counter()
        full = args.full
        pairs = [PAIRS[n] for n in (args.pairs or "tokens,signal").split(",")] if full else [PAIRS["tokens"]]
        latents = (args.latents or "vq,fsq").split(",") if full else ["vq"]
        epochs = args.epochs or (FULL_EPOCHS if full else DEFAULT_EPOCHS)
        seeds = args.seeds or (FULL_SEEDS if full else 1)
        recipes = list(RECIPES) if full else ["default"]
        results, mse = {}, {}
        for pair in pairs:
            for latent in latents:
                mse[pair.name, latent] = step0_mse(pair, latent, args)
                for recipe in recipes:
                    out = args.out / f"{pair.name}-{latent}-{recipe.replace(' ', '')}"
                    results[pair.name, latent, recipe] = compare(pair, latent, recipe, args, out, epochs, seeds)
                    print(f"{pair.name}, {latent}, {recipe}: {out / 'report.md'}", flush=True)
        rows = numbers(results)
        (args.out / "tokens.json").write_text(json.dumps({"runs": rows, "step0_mse": _keyed(mse)}, indent=1))
        path = args.out / "tokens.md"
        path.write_text(summary(pairs, latents, recipes, rows, mse))
        print(f"wrote {path} in {time.perf_counter() - began:.0f} s")
        return path


def numbers(results: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    """Per pair, latent and start: distortion at epoch 0 and at the end, epochs to reach scratch's final
    distortion, the codebook's use, and the conversion's own step-0 report (MSE on the training data)."""
    rows = []
    for (pair, latent, recipe), comparison in results.items():
        reached = comparison.epochs_to_within(nats=0.0)
        for start in comparison.starts:
            runs = [r for r in comparison.of(start) if r.points]
            finals = [r.final for r in runs if r.final is not None]
            rows.append(
                {
                    "pair": pair,
                    "latent": latent,
                    "recipe": recipe,
                    "start": start,
                    "epoch0": [r.points[0].objective for r in runs],
                    "final": [r.points[-1].objective for r in runs],
                    "reached": reached.get(start, []),
                    "epochs": [r.points[-1].epoch for r in runs],
                    "perplexity": [f.perplexity for f in finals if f.perplexity is not None],
                    "codes_used": [f.codes_used for f in finals if f.codes_used is not None],
                    "rate_bits": [f.rate_bits for f in finals if f.rate_bits is not None],
                }
            )
    return rows


def _keyed(mse: dict[tuple[str, str], dict[str, float]]) -> list[dict[str, Any]]:
    return [{"pair": pair, "latent": latent, **values} for (pair, latent), values in mse.items()]


def summary(
    pairs: Sequence[Pair],
    latents: Sequence[str],
    recipes: Sequence[str],
    rows: list[dict[str, Any]],
    mse: dict[tuple[str, str], dict[str, float]],
) -> str:
    lines = ["# A trained AE as a tokenizer: the study", ""]
    lines.append(
        "Held-out reconstruction term (the distortion) in nats per sample, mean ± sd over the seeds; epochs to "
        "scratch's final: the first epoch at or below the scratch start's final distortion under the same seed. "
        "Step 0 in mean squared error: the AE's reconstruction against the converted model's (warm start), on the "
        "training split and held out."
    )
    for pair in pairs:
        for latent in latents:
            cost = mse[pair.name, latent]
            lines += ["", f"## {pair.describe}: {latent} {LATENTS[latent]}", ""]
            lines.append(
                f"Step 0, MSE: AE {cost['ae']:.5f}, converted {cost['quantised']:.5f} held out "
                f"({cost['quantised'] / cost['ae']:.2f}x); training split "
                f"{cost['train_quantised'] / cost['train_ae']:.2f}x."
            )
            lines += [
                "",
                "| recipe | start | epoch 0 | final | epochs to scratch's final | perplexity | codes used |",
                "| --- | --- | ---: | ---: | --- | ---: | ---: |",
            ]
            for recipe in recipes:
                chosen = (r for r in rows if (r["pair"], r["latent"], r["recipe"]) == (pair.name, latent, recipe))
                for row in chosen:
                    epochs = max(row["epochs"], default=0)
                    reached = ", ".join(f">{epochs}" if e is None else str(e) for e in row["reached"]) or "-"
                    used = [100 * u for u in row["codes_used"]]
                    lines.append(
                        f"| {recipe} | {row['start']} | {mean_text(row['epoch0'])} | {mean_text(row['final'])} | "
                        f"{reached} | {mean_text(row['perplexity'], 1)} | {mean_text(used, 1) + '%' if used else '-'} |"
                    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
