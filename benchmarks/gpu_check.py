"""Does the Triton KL meet its GPU targets, and what does converting cost? One command, one table.

On a CUDA machine, in a few minutes:

1. **correctness**: the Triton backend against the torch backend, loss and both gradients with an
   upstream gradient other than ones, for odd shapes x float32/float16/bfloat16/float64 x every
   reduction x free bits off/on, and the loss at N = 2^26;
2. **bandwidth**: forward and backward of the Triton KL on N = 2^26 float32 elements (batch 1024),
   CUDA events around blocks of calls, after a warm-up, median of the blocks. Forward must read
   ``mu`` and ``log_sigma`` (8 N bytes), backward read them again and write both gradients (16 N);
   their GB/s against the device's peak (``--peak-gbps``; by default 4800 GB/s for an H200 and
   3350 for an H100 SXM, from ``torch.cuda.get_device_name``), and the speed-up of forward +
   backward over the eager formula ``0.5 * (mu**2 + exp(2 ls) - 2 ls - 1).sum() / B``;
3. **AE vs VAE**: ``python -m fxvae.cli bench --device cuda --json`` on the conv models of
   benchmarks/models.py, the VAE/AE throughput ratio of each mode and batch size.

Targets: >= 80% of peak bandwidth in each direction, >= 3x eager, VAE/AE >= 0.99 in eval and >= 0.97
in train. Each row says met or missed. Exit status: 0 when every correctness check passed (also when
a target is missed), 1 when one failed, 2 when the check cannot run (no CUDA, no triton).

``--smoke`` runs the same code on CPU through Triton's interpreter (``TRITON_INTERPRET=1``) at tiny
sizes, so that tests/ops/test_gpu_check.py can run this script; its timings mean nothing.

Run: python benchmarks/gpu_check.py [--peak-gbps 4800] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

ROOT = Path(__file__).resolve().parents[1]
# Peak HBM bandwidth in GB/s by a substring of the device name, the most specific first.
PEAK_GBPS = (("H100 PCIe", 2000.0), ("H100 NVL", 3900.0), ("H200", 4800.0), ("H100", 3350.0))
MODELS = (("conv_ae", "1,3,32,32"), ("conv_ae_2m5", "1,3,64,64"))
SHAPES = ((33, 257), (4, 3, 5), (3, 2500))
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
REDUCTIONS = ("none", "sum", "mean", "batchmean")
BANDWIDTH_TARGET, SPEEDUP_TARGET = 0.80, 3.0
RATIO_TARGETS = {"eval": 0.99, "train": 0.97}


@dataclass(frozen=True)
class Plan:
    """Where and how big: the real check on CUDA, or the smoke run on CPU."""

    device: str
    log2_n: int
    batch: int
    blocks: int
    calls_per_block: int
    models: tuple[tuple[str, str], ...]
    bench_args: tuple[str, ...]


CUDA = Plan("cuda", 26, 1024, 20, 10, MODELS, ("--device", "cuda", "--batch-sizes", "1,64"))
SMOKE = Plan(
    "cpu",
    12,
    64,
    2,
    1,
    MODELS[:1],
    ("--device", "cpu", "--batch-sizes", "1", "--repeats", "1", "--warmup", "1", "--repeat-ms", "1"),
)


@dataclass(frozen=True)
class Row:
    check: str
    value: str
    target: str
    kind: Literal["correctness", "target"]
    ok: bool

    @property
    def result(self) -> str:
        if self.kind == "correctness":
            return "ok" if self.ok else "FAILED"
        return "met" if self.ok else "missed"


def median_ms(fn: Callable[[], object], plan: Plan) -> float:
    """Milliseconds per call: the median over blocks of calls, after one untimed block."""
    for _ in range(plan.calls_per_block):
        fn()
    times = []
    for _ in range(plan.blocks):
        if plan.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(plan.calls_per_block):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / plan.calls_per_block)
        else:
            begin = time.perf_counter()
            for _ in range(plan.calls_per_block):
                fn()
            times.append((time.perf_counter() - begin) * 1e3 / plan.calls_per_block)
    return statistics.median(times)


def eager(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    return 0.5 * (mu**2 + torch.exp(2 * log_sigma) - 2 * log_sigma - 1).sum() / mu.shape[0]


def inputs(shape: tuple[int, ...], dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device).manual_seed(0)
    mu = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    log_sigma = 0.5 * torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return mu, log_sigma


def floor_between(mu: torch.Tensor, log_sigma: torch.Tensor) -> float:
    """A free-bits floor halfway between two dimensions' batch-mean KL: no dimension at a tie."""
    mu, log_sigma = mu.double().reshape(mu.shape[0], -1), log_sigma.double().reshape(mu.shape[0], -1)
    per_dim = (0.5 * (mu**2 + torch.exp(2 * log_sigma) - 2 * log_sigma - 1)).mean(0).sort().values
    middle = per_dim.numel() // 2
    return float(per_dim[middle - 1] + per_dim[middle]) / 2


def backends_agree(
    shape: tuple[int, ...], dtype: torch.dtype, reduction: str, free_bits_on: bool, device: str
) -> str | None:
    """None when Triton and torch give the same loss and gradients, else what differs."""
    from fxvae.ops.kl import kl_divergence

    mu, log_sigma = inputs(shape, dtype, device)
    free_bits = floor_between(mu, log_sigma) if free_bits_on else 0.0
    results = []
    for backend in ("triton", "torch"):
        m, s = mu.clone().requires_grad_(), log_sigma.clone().requires_grad_()
        out = kl_divergence(m, s, reduction=reduction, free_bits=free_bits, backend=backend)
        out.backward(torch.linspace(0.5, 1.5, out.numel(), device=device, dtype=out.dtype).view(out.shape))
        results.append((out.detach(), m.grad, s.grad))
    (loss, grad_mu, grad_ls), (ref, ref_mu, ref_ls) = results
    try:
        # The two sum in different orders; the gradients get the input dtype's default tolerance.
        torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad_mu, ref_mu)
        torch.testing.assert_close(grad_ls, ref_ls)
    except AssertionError as err:
        return f"{shape} {dtype} {reduction} free_bits={free_bits:g}: {str(err).splitlines()[0]}"
    return None


def correctness_row(plan: Plan) -> Row:
    cases = list(itertools.product(SHAPES, DTYPES, REDUCTIONS, (False, True)))
    failures = [f for case in cases if (f := backends_agree(*case, plan.device)) is not None]
    for failure in failures:
        print(f"correctness: {failure}", file=sys.stderr)
    return Row(
        "Triton vs torch backend: loss and gradients",
        f"{len(cases) - len(failures)}/{len(cases)} cases agree",
        "all",
        "correctness",
        not failures,
    )


def bandwidth_rows(plan: Plan, peak_gbps: float | None) -> list[Row]:
    from fxvae.ops.kl import kl_divergence

    n = 1 << plan.log2_n
    mu, log_sigma = inputs((plan.batch, n // plan.batch), torch.float32, plan.device)
    mu.requires_grad_()
    log_sigma.requires_grad_()

    def triton(m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return kl_divergence(m, s, backend="triton")

    def step(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        mu.grad = None
        log_sigma.grad = None
        loss(mu, log_sigma).backward()

    out = triton(mu, log_sigma)
    ref = kl_divergence(mu, log_sigma, backend="torch")
    agree = torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    forward_ms = median_ms(lambda: triton(mu, log_sigma), plan)
    backward_ms = median_ms(lambda: torch.autograd.grad(out, (mu, log_sigma), retain_graph=True), plan)
    fused_ms = median_ms(lambda: step(triton), plan)
    eager_ms = median_ms(lambda: step(eager), plan)
    size = f"N=2^{plan.log2_n} float32"
    value = f"{out.item():.7g} vs {ref.item():.7g}"
    rows = [Row(f"Triton vs torch backend: loss at {size}", value, "equal", "correctness", agree)]
    for direction, nbytes, ms in (("forward", 8 * n, forward_ms), ("backward", 16 * n, backward_ms)):
        gbps = nbytes / (ms * 1e-3) / 1e9
        if peak_gbps is None:
            value, ok = f"{gbps:.0f} GB/s ({ms:.3f} ms); peak unknown, pass --peak-gbps", False
        else:
            value = f"{gbps:.0f} GB/s = {gbps / peak_gbps:.0%} of {peak_gbps:.0f} ({ms:.3f} ms)"
            ok = gbps >= BANDWIDTH_TARGET * peak_gbps
        rows.append(Row(f"{direction} bandwidth, {size}", value, f">= {BANDWIDTH_TARGET:.0%}", "target", ok))
    speedup = eager_ms / fused_ms
    rows.append(
        Row(
            f"forward + backward vs eager formula, {size}",
            f"{speedup:.2f}x ({fused_ms:.3f} ms vs {eager_ms:.3f} ms)",
            f">= {SPEEDUP_TARGET:g}x",
            "target",
            speedup >= SPEEDUP_TARGET,
        )
    )
    return rows


def model_rows(plan: Plan) -> list[Row]:
    rows = []
    for name, shape in plan.models:
        command = [sys.executable, "-m", "fxvae.cli", "bench", f"benchmarks/models.py:{name}"]
        command += ["--input-shape", shape, *plan.bench_args, "--json"]
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            rows.append(Row(f"fxvae bench {name}", f"did not run: {reason}", "runs", "target", False))
            continue
        for r in json.loads(proc.stdout)["rows"]:
            target = RATIO_TARGETS[r["mode"]]
            rows.append(
                Row(
                    f"{name} {r['mode']} batch {r['batch_size']}: VAE/AE samples/s",
                    f"{r['ratio']:.3f} ({r['ratio_q1']:.3f}-{r['ratio_q3']:.3f})",
                    f">= {target}",
                    "target",
                    r["ratio"] >= target,
                )
            )
    return rows


def peak(flag: float | None, device_name: str) -> float | None:
    if flag is not None:
        return flag
    return next((gbps for key, gbps in PEAK_GBPS if key in device_name), None)


def table(rows: list[Row]) -> str:
    lines = ["| check | value | target | result |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {r.value} | {r.target} | {r.result} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peak-gbps", type=float, help="the device's peak memory bandwidth in GB/s")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU under TRITON_INTERPRET=1")
    args = parser.parse_args()
    if args.smoke:
        # Triton reads the variable when it is imported, which fxvae does on the first Triton call.
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        print("gpu_check.py needs a CUDA device and torch sees none; --smoke runs it on CPU", file=sys.stderr)
        return 2
    if importlib.util.find_spec("triton") is None:
        print(
            "gpu_check.py needs triton, which cannot be imported; pip install 'fxvae[triton]'",
            file=sys.stderr,
        )
        return 2
    # This checkout's fxvae, installed or not: the fxvae bench subprocesses run from it as well.
    sys.path.insert(0, str(ROOT))
    plan = SMOKE if args.smoke else CUDA
    name = "CPU, Triton interpreter (smoke)" if args.smoke else torch.cuda.get_device_name(0)
    peak_gbps = peak(args.peak_gbps, name)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    print(f"{name}, torch {torch.__version__}, commit {commit.stdout.strip() or 'unknown'}", flush=True)
    rows = [correctness_row(plan), *bandwidth_rows(plan, peak_gbps), *model_rows(plan)]
    print(table(rows))
    return 0 if all(r.ok for r in rows if r.kind == "correctness") else 1


if __name__ == "__main__":
    sys.exit(main())
