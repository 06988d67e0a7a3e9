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
   benchmarks/models.py, the VAE/AE throughput ratio of each mode and batch size;
4. **compare's loop**: ``fxvae.compare`` (start "warm", seed 0, 2 epochs, batch 64) of a ConvAE(1, (32, 64),
   latent=8, untrained: the loop's cost and agreement do not need a good AE) on a folder of 1797 PNGs
   (scikit-learn's digits upscaled to 1x32x32, written to a temporary folder and read lazily by
   ``fxvae.io.datafiles.ImageFolder``) at
   fp32, bf16, fp16, ``compile=True`` and ``workers=4`` (the others ``workers=0``). Checks: every final -ELBO
   finite; bf16's within 2% of fp32's (an autocast forward rounds activations to 8 significant bits, which
   moves two epochs of training by well under 1%, while the likelihood and KL stay float32; a wrong cast moves
   it by far more); compile's epoch-1 -ELBO within 0.1% of eager's (inductor fuses the same float32
   arithmetic in another order); workers=4's curve and final -ELBO equal to workers=0's, bit for bit (the
   batch order and each item's draws do not depend on the workers). fp16 within 2% of fp32 is a target, not a
   check: its gradient scaler starts at 2^16 and skips every step that overflows while it halves down (7 of
   the first 15 steps of a 1x8x8 run on 256 digits, which ended 16% above fp32), so a short run differs by
   its skipped steps.
   Each run's steps/s (compare's record: its second epoch, after compiling and the workers' start) as a
   ratio to fp32's and to workers=0's. Estimated, not measured: about 2 minutes on an H100 (five runs of 2 x 25
   steps, each measured with k=8 and final_k=8 on 180 held-out images plus compare's final densities, ~10 s
   a run; compile's first epoch up to a minute), about 4 for the whole script.

Targets: >= 80% of peak bandwidth in each direction, >= 3x eager, VAE/AE >= 0.99 in eval and >= 0.97
in train; compare's steps/s carry no target (their rows say "-"). Each row says met or missed. Exit status:
0 when every correctness check passed (also when a target is missed), 1 when one failed, 2 when the check
cannot run (no CUDA, no triton).

``--smoke`` runs the same code on CPU through Triton's interpreter (``TRITON_INTERPRET=1``) at tiny
sizes (compare's loop: 64 digits at 1x8x8 through ConvAE(1, (16,), latent=2), 1 epoch, workers=2, and no
compile: inductor's C++ build takes longer on CPU than the whole smoke run), so that
tests/ops/test_gpu_check.py can run this script; its timings mean nothing.

Run: python benchmarks/gpu_check.py [--peak-gbps 4800] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
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
HALF_RTOL, COMPILE_RTOL = 0.02, 1e-3


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
    loop: Loop


@dataclass(frozen=True)
class Loop:
    """Compare's loop: how many digits, at what side, through which AE widths, for how long."""

    images: int
    side: int
    channels: tuple[int, ...]
    latent: int
    epochs: int
    batch: int
    workers: int
    compile: bool


CUDA = Plan(
    "cuda",
    26,
    1024,
    20,
    10,
    MODELS,
    ("--device", "cuda", "--batch-sizes", "1,64"),
    Loop(1797, 32, (32, 64), 8, 2, 64, 4, True),
)
SMOKE = Plan(
    "cpu",
    12,
    64,
    2,
    1,
    MODELS[:1],
    ("--device", "cpu", "--batch-sizes", "1", "--repeats", "1", "--warmup", "1", "--repeat-ms", "1"),
    Loop(64, 8, (16,), 2, 1, 16, 2, False),
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


def write_digits(folder: Path, loop: Loop) -> None:
    """scikit-learn's 8x8 digits (0-16), upscaled bilinearly to ``loop.side`` and written as 8-bit PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = torch.from_numpy(load_digits().images[: loop.images]).float().unsqueeze(1) / 16
    if loop.side != 8:
        digits = torch.nn.functional.interpolate(digits, size=loop.side, mode="bilinear", align_corners=False)
    pixels = (digits.clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1).numpy()
    for i, image in enumerate(pixels):
        Image.fromarray(image, mode="L").save(folder / f"{i:04d}.png")


def loop_rows(plan: Plan) -> list[Row]:
    """fxvae.compare at each precision, compiled, and with workers, on a PNG folder: the checks and the steps/s."""
    import fxvae
    from fxvae.examples import ConvAE
    from fxvae.io.datafiles import ImageFolder

    loop = plan.loop
    variants: dict[str, dict[str, object]] = {
        "fp32": {},
        "bf16": {"precision": "bf16"},
        "fp16": {"precision": "fp16"},
    }
    if loop.compile:
        variants["compile"] = {"compile": True}
    else:
        print("compare's loop: compile=True skipped in --smoke (inductor's CPU build outlasts the run)", flush=True)
    variants[f"workers={loop.workers}"] = {"workers": loop.workers}
    torch.manual_seed(0)
    ae = ConvAE(1, loop.channels, latent=loop.latent).to(plan.device)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        write_digits(Path(folder), loop)
        data = ImageFolder(Path(folder))
        for name, extra in variants.items():
            options = {"workers": 0, "epochs": loop.epochs, "batch_size": loop.batch, **extra}
            with warnings.catch_warnings():
                # An untrained AE on a seeded holdout: compare warns of both, as it should, and nothing here needs it.
                warnings.simplefilter("ignore", UserWarning)
                result = fxvae.compare(
                    ae, data, starts=("warm",), seeds=1, k=8, final_k=8, device=plan.device, progress=False, **options
                )
            results[name] = result.run("warm", 0)
    return loop_checks(results, loop)


def loop_checks(results: dict[str, object], loop: Loop) -> list[Row]:
    """The correctness rows of compare's loop, then one steps/s row per run."""
    fp32, workers = results["fp32"], results[f"workers={loop.workers}"]
    rows = []
    for name, run in results.items():
        final = run.final_objective
        finite = final is not None and math.isfinite(final)
        rows.append(Row(f"compare {name}: final -ELBO finite", f"{final:.4f}", "finite", "correctness", finite))
    for name, kind in (("bf16", "correctness"), ("fp16", "target")):
        diff = abs(results[name].final_objective - fp32.final_objective) / abs(fp32.final_objective)
        rows.append(
            Row(
                f"compare {name} vs fp32: final -ELBO",
                f"{diff:.2%} apart",
                f"<= {HALF_RTOL:.0%}",
                kind,
                diff <= HALF_RTOL,
            )
        )
    if "compile" in results:
        eager, compiled = fp32.points[1].objective, results["compile"].points[1].objective
        diff = abs(compiled - eager) / abs(eager)
        rows.append(
            Row(
                "compare compile vs eager: epoch-1 -ELBO",
                f"{diff:.2e} apart",
                f"<= {COMPILE_RTOL:g}",
                "correctness",
                diff <= COMPILE_RTOL,
            )
        )
    same = workers.objective() == fp32.objective() and workers.final_objective == fp32.final_objective
    rows.append(
        Row(
            f"compare workers={loop.workers} vs 0: curve and final -ELBO",
            "identical" if same else f"{workers.objective()} vs {fp32.objective()}",
            "identical",
            "correctness",
            same,
        )
    )
    for name, run in results.items():
        reference = "workers=0 (fp32)" if name.startswith("workers") else "fp32"
        ratio = run.steps_per_s / fp32.steps_per_s
        rows.append(
            Row(
                f"compare {name}: steps/s vs {reference}",
                f"{ratio:.2f}x ({run.steps_per_s:.1f} steps/s)",
                "-",
                "target",
                True,
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
    rows = [correctness_row(plan), *bandwidth_rows(plan, peak_gbps), *model_rows(plan), *loop_rows(plan)]
    print(table(rows))
    return 0 if all(r.ok for r in rows if r.kind == "correctness") else 1


if __name__ == "__main__":
    sys.exit(main())
