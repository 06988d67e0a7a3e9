"""Does the IWAE-k estimator cost more than the decoder work it needs?

``fxvae.evaluate(vae, data, k=K)`` encodes each batch once and decodes its K posterior draws in chunks folded
into the batch, one decoder call per chunk. This script times it, in one process and interleaved, against two
baselines on the same data:

- **K forwards**: the VAE in training mode (it samples z = mu + sigma * eps) called K times on the data, no
  gradients: what a user's loop over K draws costs;
- **K decoder calls**: the VAE's decoder (from ``fxvae.split``) called K times on the data's posterior means:
  the decoder work alone, the least any estimator with K draws per sample can cost.

The target is at most 1.3x the K forwards at K = 1000; the table also gives the ratio to the decoder work.
Models: the digits MLP of docs/compare.md on scikit-learn's digits (Bernoulli), and benchmarks/models.py's
conv_ae on random 3x32x32 images (Gaussian, sigma 0.1). Untrained weights: the cost does not depend on them.

Run: python benchmarks/evaluate_iwae.py --threads 1 [--repeats 5] [--k 1000]
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxvae  # noqa: E402
from benchmarks.common import arguments, provenance, recorded  # noqa: E402
from benchmarks.models import conv_ae, digits_mlp  # noqa: E402
from fxvae.measure.bench import interleave  # noqa: E402
from fxvae.modules import eval_mode  # noqa: E402

TARGET = 1.3
START, END = "<!-- evaluate:start -->", "<!-- evaluate:end -->"


def cases() -> list[tuple[str, torch.nn.Module, torch.Tensor, dict[str, Any]]]:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = torch.tensor(load_digits().data[:360], dtype=torch.float32) / 16.0
    images = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return [
        ("digits MLP (360 x 64, Bernoulli)", digits_mlp().eval(), digits, {"likelihood": "bernoulli"}),
        ("conv_ae (32 x 3x32x32, Gaussian)", conv_ae().eval(), images, {"likelihood": "gaussian", "sigma": 0.1}),
    ]


def steps(vae: torch.nn.Module, data: torch.Tensor, k: int, options: dict[str, Any]) -> list[Callable[[], None]]:
    encoder, decoder = fxvae.split(vae)
    with torch.no_grad(), eval_mode(encoder):
        mu, _ = encoder(data)

    def iwae() -> None:
        fxvae.evaluate(vae, data, k=k, batch_size=len(data), **options)

    def forwards() -> None:
        with torch.no_grad():
            vae.train()
            for _ in range(k):
                vae(data)
            vae.eval()

    def decoder_calls() -> None:
        with torch.no_grad(), eval_mode(decoder):
            for _ in range(k):
                decoder(mu)

    return [iwae, forwards, decoder_calls]


def run(k: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name, ae, data, options in cases():
        vae, _ = fxvae.convert(ae, data[:2])
        timed = interleave(steps(vae, data, k, options), repeats=repeats, calls=1)
        iwae, forwards, decoder = (t.cpu for t in timed)
        row = {
            "model": name,
            "k": k,
            "iwae_s": statistics.median(iwae),
            "forwards_s": statistics.median(forwards),
            "decoder_s": statistics.median(decoder),
            "vs_forwards": statistics.median(i / f for i, f in zip(iwae, forwards, strict=True)),
            "vs_decoder": statistics.median(i / d for i, d in zip(iwae, decoder, strict=True)),
            "wall_vs_forwards": statistics.median(i / f for i, f in zip(timed[0].wall, timed[1].wall, strict=True)),
        }
        rows.append(row)
        print(
            f"{name}: IWAE-{k} {row['iwae_s']:.2f} s, {k} forwards {row['forwards_s']:.2f} s, {k} decoder calls "
            f"{row['decoder_s']:.2f} s; IWAE / forwards {row['vs_forwards']:.3f}, / decoder {row['vs_decoder']:.3f}",
            flush=True,
        )
    return rows


def markdown(data: dict[str, Any]) -> str:
    lines = [
        START,
        "## What does the IWAE estimator cost?",
        "",
        f"{provenance(data)} CPU seconds, median of {data['repeats']} interleaved repeats; each ratio is the "
        "median of the per-repeat ratios. Target: IWAE-k at most "
        f"{TARGET}x the k forwards.",
        "",
        "| model | k | IWAE-k (s) | k forwards (s) | k decoder calls (s) | IWAE / forwards | IWAE / decoder |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['model']} | {r['k']} | {r['iwae_s']:.2f} | {r['forwards_s']:.2f} | {r['decoder_s']:.2f} | "
            f"{r['vs_forwards']:.3f} | {r['vs_decoder']:.3f} |"
        )
    worst = max(r["vs_forwards"] for r in data["rows"])
    lines += [
        "",
        f"The estimator costs at most {worst:.2f}x the k forwards ({'meets' if worst <= TARGET else 'misses'} "
        f"the {TARGET}x target): it runs the encoder once per batch where the forwards run it k times. Against "
        "the decoder work alone it adds what the likelihood, the log densities and the logsumexp cost per "
        "element, which shows on a small decoder (the MLP's) and vanishes behind a conv decoder. Decoding the "
        "draws in chunks matters on CPU: a conv decoder called on 1,344 images at once (4M elements) took twice "
        "as long per image as on 32, its activations out of the caches; the chunk is now sized by the decoder's "
        "largest activation ([the chunk sweep](#how-many-draws-per-decoder-call-the-iwae-chunk-rule), "
        "`fxvae.measure.evaluation.CACHE_BYTES`).",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = arguments("evaluate_iwae", __doc__, repeats=5)
    parser.add_argument("--k", type=int, default=1000)
    args = parser.parse_args()
    recorded("evaluate_iwae", args, lambda: run(args.k, args.repeats), markdown, (START, END))


if __name__ == "__main__":
    main()
