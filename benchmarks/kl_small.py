"""Up to what size should the torch KL run as whole-tensor ops, and is it then no slower than eager?

A VAE training step on a small latent pays for Python and per-op overhead, not for arithmetic. This
script times forward + backward (fresh gradients every step, as after ``zero_grad()``) of four ways to
compute the batchmean KL, in one process, on CPU:

- **eager**: ``0.5 * (mu**2 + exp(2 * log_sigma) - 2 * log_sigma - 1).sum() / B``;
- **fused**: ``fxvae.ops.kl.kl_divergence(..., backend="torch")`` as shipped (whole below ``_SMALL``);
- **whole**: the same with every size forced onto the whole-tensor path;
- **streamed**: the same with every size forced onto the tiled, streaming path.

Each of ``--rounds`` rounds times a block of steps of every method (lasting about ``--block-ms``), in a
rotating order; the table gives the fastest block of each method per step, and the median over rounds
of each round's ratio (paired: load on the machine hits both sides of a ratio alike). A loss in a
training step runs between other work, which evicts its code and data from the CPU's caches, while a
block runs it back to back; so each round also times as many single steps, one method after the other
in turn, and "interleaved" compares the fastest single steps. The last column shows where whole stops
beating streamed; docs/kl.md says how ``_SMALL`` was chosen from it.

Run: PYTHONPATH=. python benchmarks/kl_small.py [--threads 1] [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from kl_bench import machine

import fxvae.ops.kl as kl_module
from fxvae.ops.kl import kl_divergence

ROOT = Path(__file__).resolve().parents[1]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Typical VAE latents: batch x latent elements, then batch 256 with growing latents for the crossover.
GRID = [(b, d) for b in (1, 16, 64, 256) for d in (8, 64, 512, 4096)]
CROSSOVER = [(256, d) for d in (256, 768, 1024, 1536, 2048, 3072, 8192, 16384)]


def eager(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mu**2 + torch.exp(2 * log_sigma) - 2 * log_sigma - 1).sum() / mu.shape[0]


def fused(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    return kl_divergence(mu, log_sigma, backend="torch")


# Each method with the ``_SMALL`` it runs under (None: as shipped); forward and backward both read it.
METHODS: dict[str, tuple[Loss, int | None]] = {
    "eager": (eager, None),
    "fused": (fused, None),
    "whole": (fused, 1 << 62),
    "streamed": (fused, -1),
}


def step(loss: Loss, mu: torch.Tensor, log_sigma: torch.Tensor) -> None:
    mu.grad = None
    log_sigma.grad = None
    loss(mu, log_sigma).backward()


@contextmanager
def running(method: str) -> Iterator[Loss]:
    """The method's loss, with ``_SMALL`` set for it while its forward and backward run."""
    loss, small = METHODS[method]
    shipped = kl_module._SMALL
    kl_module._SMALL = shipped if small is None else small
    try:
        yield loss
    finally:
        kl_module._SMALL = shipped


def block_s(method: str, mu: torch.Tensor, log_sigma: torch.Tensor, steps: int) -> float:
    with running(method) as loss:
        start = time.perf_counter()
        for _ in range(steps):
            step(loss, mu, log_sigma)
        return (time.perf_counter() - start) / steps


def measure(batch: int, latent: int, rounds: int, block_ms: float) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(batch, latent, generator=generator).requires_grad_()
    log_sigma = (0.3 * torch.randn(batch, latent, generator=generator)).requires_grad_()
    slowest = max(block_s(method, mu, log_sigma, 3) for method in METHODS)
    steps = max(1, round(block_ms * 1e-3 / slowest))
    names = list(METHODS)
    times: dict[str, list[float]] = {name: [] for name in names}
    single = dict.fromkeys(names, math.inf)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(block_s(name, mu, log_sigma, steps))
        for _ in range(steps):
            for name in names:
                single[name] = min(single[name], block_s(name, mu, log_sigma, 1))
    row: dict[str, float] = {"batch": batch, "latent": latent, "n": batch * latent, "steps": steps}
    for name in names:
        row[f"{name}_us"] = min(times[name]) * 1e6
        row[f"{name}_interleaved_us"] = single[name] * 1e6
    for num, den in (("fused", "eager"), ("whole", "eager"), ("whole", "streamed")):
        ratios = [a / b for a, b in zip(times[num], times[den], strict=True)]
        row[f"{num}/{den}"] = statistics.median(ratios)
    row["fused/eager interleaved"] = single["fused"] / single["eager"]
    return row


def table(rows: list[dict[str, float]]) -> str:
    lines = [
        "| B x D | N | eager us | fused us | whole us | streamed us | fused / eager "
        "| fused / eager, interleaved | whole / streamed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} x {r['latent']} | {r['n']} | {r['eager_us']:.0f} | {r['fused_us']:.0f} "
            f"| {r['whole_us']:.0f} | {r['streamed_us']:.0f} | {r['fused/eager']:.2f} "
            f"| {r['fused/eager interleaved']:.2f} | {r['whole/streamed']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: steadier)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block-ms", type=float, default=5.0, help="length of one timed block of steps")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kl_small.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta = {**machine(), "small": kl_module._SMALL, "rounds": args.rounds, "block_ms": args.block_ms}
    print(json.dumps(meta), flush=True)
    rows = []
    for batch, latent in sorted(set(GRID + CROSSOVER), key=lambda s: (s[0] * s[1], s[0])):
        rows.append(measure(batch, latent, args.rounds, args.block_ms))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    # The first N from which whole is slower at every larger size: one noisy small size does not move it.
    sizes = sorted({r["n"] for r in rows})
    slower_from = next((n for n in sizes if all(r["whole/streamed"] > 1.0 for r in rows if r["n"] >= n)), None)
    print(f"whole is slower than streamed from N = {slower_from} on; shipped _SMALL = {kl_module._SMALL}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
