"""Is fxvae.compare's training loop as fast as a loop a user writes by hand?

Both train the same warm-start VAE (its own copy each) with the same Adam, on the same batches of the same
data, in one process, interleaved epoch by epoch (the order alternates):

- **compare's loop**: ``fxvae.study.loop.Run.train_epoch``, as ``fxvae.compare`` runs it: the likelihood's
  ``nll`` plus ``kl()``, the learning-rate schedule's step, the run's own random stream, the loss kept for the
  epoch's mean;
- **a plain loop**: ``for idx in batches: loss = F.binary_cross_entropy_with_logits(vae(x), x, reduction="sum")
  / len(x) + kl(); zero_grad; backward; step`` (the Gaussian pair: ``F.mse_loss`` scaled as the Gaussian nll).

The ratio is compare's steps/s over the plain loop's, on CPU time (the median of per-pair ratios; the wall
clock's too). Target: at least 0.97.

Run: python benchmarks/compare_loop.py --threads 1 [--repeats 40]
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxvae  # noqa: E402
from benchmarks.common import arguments, provenance, recorded  # noqa: E402
from benchmarks.models import conv_ae, digits_mlp  # noqa: E402
from fxvae.measure.bench import interleave, quartiles  # noqa: E402
from fxvae.study import CompareOptions, Samples  # noqa: E402
from fxvae.study.loop import batch_order, start_run  # noqa: E402
from fxvae.study.starts import begin  # noqa: E402

TARGET = 0.97
START, END = "<!-- compare-loop:start -->", "<!-- compare-loop:end -->"
SIGMA = 0.1


def cases() -> list[tuple[str, torch.nn.Module, torch.Tensor, str]]:
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = torch.tensor(load_digits().data[:1024], dtype=torch.float32) / 16.0
    images = torch.rand(256, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return [
        ("digits MLP, batch 64 (Bernoulli)", digits_mlp().eval(), digits, "bernoulli"),
        ("conv_ae 3x32x32, batch 64 (Gaussian)", conv_ae().eval(), images, "gaussian"),
    ]


def epochs(ae: torch.nn.Module, data: torch.Tensor, likelihood: str) -> list[Callable[[], None]]:
    # A constant rate, as in the plain loop: a schedule's step would be work the plain loop does not do.
    options = CompareOptions(
        likelihood=likelihood,
        sigma=SIGMA if likelihood == "gaussian" else "optimal",
        schedule="constant",
        lr_warmup=0,
    )
    lik = fxvae.likelihoods.get(likelihood, sigma=SIGMA if likelihood == "gaussian" else None)
    samples = Samples(data)
    example = (data[:64],)
    steps = math.ceil(len(data) / options.batch_size)
    run = start_run(
        begin("warm", ae, example, samples, options, 0, None), 0, options, lik, steps, torch.device("cpu"), 0
    )
    vae, kl = fxvae.convert(ae, example)
    vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=options.lr)
    scale = 2 * SIGMA**2
    constant = 0.5 * math.log(2 * math.pi * SIGMA**2)
    counter = {"epoch": 0}

    def compare_epoch() -> None:
        run.train_epoch(samples, torch.device("cpu"), 0, 1)

    def plain_epoch() -> None:
        counter["epoch"] += 1
        for idx in batch_order(len(data), options.batch_size, 0, counter["epoch"]):
            x = data[idx]
            out = vae(x)
            if likelihood == "bernoulli":
                recon = F.binary_cross_entropy_with_logits(out, x, reduction="sum") / len(x)
            else:
                recon = F.mse_loss(out, x, reduction="sum") / (scale * len(x)) + constant * x[0].numel()
            loss = recon + kl()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return [compare_epoch, plain_epoch]


def run(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name, ae, data, likelihood in cases():
        compare_epoch, plain_epoch = epochs(ae, data, likelihood)
        compare_epoch(), plain_epoch()  # warm-up: first-call costs are not what a loop costs
        timed = interleave([compare_epoch, plain_epoch], repeats=repeats, calls=1)
        steps = math.ceil(len(data) / 64)
        compare_t, plain_t = timed
        row = {
            "model": name,
            "steps_per_epoch": steps,
            "compare_steps_per_s": steps / statistics.median(compare_t.cpu),
            "plain_steps_per_s": steps / statistics.median(plain_t.cpu),
            "ratio": statistics.median(p / c for c, p in zip(compare_t.cpu, plain_t.cpu, strict=True)),
            "ratio_q": quartiles([p / c for c, p in zip(compare_t.cpu, plain_t.cpu, strict=True)]),
            "wall_ratio": statistics.median(p / c for c, p in zip(compare_t.wall, plain_t.wall, strict=True)),
        }
        rows.append(row)
        spread = f"IQR {row['ratio_q'][0]:.3f}-{row['ratio_q'][2]:.3f}"
        print(
            f"{name}: compare {row['compare_steps_per_s']:.0f} steps/s, plain {row['plain_steps_per_s']:.0f} "
            f"steps/s, ratio {row['ratio']:.3f} ({spread}), wall {row['wall_ratio']:.3f}",
            flush=True,
        )
    return rows


def markdown(data: dict[str, Any]) -> str:
    lines = [
        START,
        "## Is compare's training loop as fast as a hand-written one?",
        "",
        f"{provenance(data)} One epoch of each loop per repeat, {data['repeats']} interleaved repeats; the ratio "
        f"is compare's steps/s over the plain loop's, the median of per-pair CPU-time ratios. Target: >= {TARGET}.",
        "",
        "| model | steps/epoch | compare's loop (steps/s) | plain loop (steps/s) | ratio (IQR) | wall-clock ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['model']} | {r['steps_per_epoch']} | {r['compare_steps_per_s']:.0f} | "
            f"{r['plain_steps_per_s']:.0f} | {r['ratio']:.3f} ({r['ratio_q'][0]:.3f}-{r['ratio_q'][2]:.3f}) | "
            f"{r['wall_ratio']:.3f} |"
        )
    worst = min(r["ratio"] for r in data["rows"])
    lines += [
        "",
        f"compare's loop runs at {worst:.3f}x or more of the plain loop's steps/s "
        f"({'meets' if worst >= TARGET else 'misses'} the {TARGET} target). Its extra work per step is small "
        "and fixed: the likelihood's one fused reduction, the kept loss (no `.item()` per step), the batch's "
        "indices. Under a schedule (the default is a cosine after one epoch of warm-up) it also steps a "
        "`LambdaLR`, which a hand-written loop with a schedule pays as well; both loops here run at a constant "
        "rate.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = arguments("compare_loop", __doc__, repeats=40)
    args = parser.parse_args()
    recorded("compare_loop", args, lambda: run(args.repeats), markdown, (START, END))


if __name__ == "__main__":
    main()
