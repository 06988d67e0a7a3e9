"""Which CPU implementation of the fused KL should fxvae ship? exp flavours, tile sizes, torch.compile.

First the cost per element of ATen's exp, exp2 and expm1 (which one computes sigma^2). Then forward +
backward of the batchmean KL, closed-form backward in every variant, minimum of interleaved
warmed-up repeats: the chunked eager path of fxvae.ops.kl at several tile sizes, and the same math
as two torch.compile'd (inductor, C++) functions, one loop each direction. The compile variant also
reports its first-call time in a cold inductor cache (a fresh TORCHINDUCTOR_CACHE_DIR), which every
new process pays unless the cache directory is kept.

Run: python benchmarks/kl_cpu_variants.py [--sizes 20,22,24] [--chunks 15,16,17,18,19]
"""

from __future__ import annotations

import os
import tempfile

# A cold cache, so that the measured first call includes the real compile (set before torch loads).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="kl_inductor_"))

import argparse
import json
import math
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import fxvae.ops.kl as kl_module

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _forward(mu: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mu * mu + torch.expm1(2 * ls) - 2 * ls).sum(dtype=torch.float64)


def _backward(mu: torch.Tensor, ls: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return mu * scale, torch.expm1(2 * ls) * scale


compiled_forward = torch.compile(_forward, dynamic=True)
compiled_backward = torch.compile(_backward, dynamic=True)


class CompiledKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, mu: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mu, ls)
        return (compiled_forward(mu, ls) / mu.shape[0]).float()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, ls = ctx.saved_tensors
        return compiled_backward(mu, ls, grad / mu.shape[0])


def chunked(log2_chunk: int) -> Loss:
    def loss(mu: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
        kl_module._CPU_CHUNK = 1 << log2_chunk
        return kl_module.kl_divergence(mu, ls, backend="torch")

    return loss


def step(loss: Loss, mu: torch.Tensor, ls: torch.Tensor) -> None:
    mu.grad = None
    ls.grad = None
    loss(mu, ls).backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20,22,24", help="log2 of the element counts")
    parser.add_argument("--chunks", default="15,16,17,18,19", help="log2 of the CPU tile sizes")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kl_cpu_variants.json")
    args = parser.parse_args()
    default_chunk = kl_module._CPU_CHUNK
    x, out = torch.randn(1 << 17), torch.empty(1 << 17)
    op_ns = {}
    for name, op in (("exp", torch.exp), ("exp2", torch.exp2), ("expm1", torch.expm1)):
        op(x, out=out)
        op_ns[name] = min(timeit.repeat(lambda op=op: op(x, out=out), number=50, repeat=5)) / 50 / x.numel() * 1e9
    print("ns per float32 element at 2^17: " + "  ".join(f"{k} {v:.3f}" for k, v in op_ns.items()), flush=True)
    mu = torch.randn(BATCH, 64, requires_grad=True)
    ls = torch.randn(BATCH, 64, requires_grad=True)
    start = time.perf_counter()
    step(CompiledKL.apply, mu, ls)
    first_call_s = time.perf_counter() - start
    print(f"torch.compile first call (cold cache, forward + backward): {first_call_s:.1f} s", flush=True)
    variants = {f"chunk 2^{c}": chunked(int(c)) for c in args.chunks.split(",")}
    variants["torch.compile"] = CompiledKL.apply
    rows = []
    for log2_n in (int(s) for s in args.sizes.split(",")):
        n = 1 << log2_n
        mu = torch.randn(BATCH, n // BATCH, requires_grad=True)
        ls = (0.3 * torch.randn(BATCH, n // BATCH)).requires_grad_()
        reference = kl_module.kl_divergence(mu, ls).item()
        best = dict.fromkeys(variants, math.inf)
        for repeat in range(args.repeats + 2):
            for name, loss in variants.items():
                begin = time.perf_counter()
                step(loss, mu, ls)
                if repeat >= 2:
                    best[name] = min(best[name], time.perf_counter() - begin)
        assert math.isclose(CompiledKL.apply(mu, ls).item(), reference, rel_tol=1e-5)
        row = {"log2_n": log2_n, **{f"{k} ms": v * 1e3 for k, v in best.items()}}
        rows.append(row)
        print(f"N=2^{log2_n}: " + "  ".join(f"{k} {v * 1e3:.2f} ms" for k, v in best.items()), flush=True)
    kl_module._CPU_CHUNK = default_chunk
    meta = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "first_call_s": first_call_s,
        "op_ns_per_element": op_ns,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "batch": BATCH, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
