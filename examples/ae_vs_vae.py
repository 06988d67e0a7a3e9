"""The AE against its VAEs on the same axes, on the project's three pairs (docs/ae-vs-vae.md, "Measured").

Each pair of examples/pairs.py (the digits MLP, a conv AE on 28x28 digits, a 1-d conv AE on signals) is compared
with ``fxvae.compare``'s defaults: the AE itself trained on beside the scratch, warm and calibrated VAEs, every
run measured at its end on reconstruction, likelihood (the AE through a Gaussian and a 10-component GMM fitted
to its training codes), samples, latent, interpolation and cost. The digits pairs also get the digit classes as
``labels`` (a linear probe on the codes) and one class as ``anomaly_labels`` (AUROC of the per-sample scores).
Each comparison writes ``<out>/<pair>/report.md``; ``<out>/ae-vs-vae.md`` gathers their "AE vs VAE" sections.

    python examples/ae_vs_vae.py --out results/ae-vs-vae --epochs 20 --seeds 2 --threads 1
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pairs import HOLDOUT, PAIRS, arguments, compared, torch_threads

import fxvae

PAIR_NAMES = ("digits", "conv", "signal")
ANOMALY_CLASS = 0
"""The digit class treated as the anomaly in the AUROC column (the AEs were trained on every class, so this
asks whether the scores single out one class, not whether they detect unseen data)."""


def digit_labels() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().target)


def section(report: str, heading: str = "## AE vs VAE") -> str:
    """The report's part under ``heading``, up to the next heading of the same level."""
    lines = report.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start + 1 : end]).strip()


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], "unused", ",".join(PAIR_NAMES), (20, 20), (2, 2))
    args = parser.parse_args()
    epochs, seeds = args.epochs or 20, args.seeds or 2
    names = args.pairs.split(",") if args.pairs else PAIR_NAMES
    parts = [
        "# The AE against its VAEs: measured",
        "",
        f"`python examples/ae_vs_vae.py --out {args.out} --epochs {epochs} --seeds {seeds} --threads {args.threads}`"
        f" ({HOLDOUT:.0%} held out; fxvae {fxvae.__version__}, torch {torch.__version__}).",
        "",
    ]
    with torch_threads(args.threads):
        for name in names:
            pair = PAIRS[name]
            options = {}
            if name in ("digits", "conv"):
                labels = digit_labels()
                options = {"labels": labels, "anomaly_labels": (labels == ANOMALY_CLASS).long()}
            began = time.perf_counter()
            out = args.out / name
            compared(pair, args, out, epochs=epochs, seeds=seeds, **options)
            seconds = time.perf_counter() - began
            report = (out / "report.md").read_text()
            parts += [f"## {name}: {pair.describe}", "", f"{seconds:.0f} s.", "", section(report), ""]
            (args.out / "ae-vs-vae.md").write_text("\n".join(parts))
    print(args.out / "ae-vs-vae.md")


if __name__ == "__main__":
    main()
