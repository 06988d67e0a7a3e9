"""Does the Triton KL loss run at memory bandwidth on a CUDA GPU? One short command, prints a table.

For N = 2^20 .. 2^26 float32 elements (batch 1024): forward + backward time of the Triton backend,
the torch backend and the eager formula (CUDA events, median of ``--repeats`` runs after warm-up),
the bytes the fused kernels must move (forward reads mu and log_sigma, backward reads them again and
writes both gradients: 6 N * 4 bytes), the achieved GB/s, and that as a fraction of the device's
bandwidth, which is measured here as a device-to-device copy of 2^28 floats (read + write) and also
derived from the reported memory clock and bus width where torch exposes them. Checks the values
against the torch backend before timing. Targets: >= 80% of the copy bandwidth and >= 3x the eager
formula at N = 2^26.

Run: python benchmarks/kl_gpu.py [--max-log2 26] [--out benchmarks/results/kl_gpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from fxvae.ops.kl import kl_divergence

ROOT = Path(__file__).resolve().parents[1]
BATCH = 1024


def eager(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.sum(1 + 2 * log_sigma - mu.pow(2) - torch.exp(2 * log_sigma)) / mu.shape[0]


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "triton": partial(kl_divergence, backend="triton"),
    "torch": partial(kl_divergence, backend="torch"),
    "eager": eager,
}


def step(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], mu: torch.Tensor, ls: torch.Tensor) -> None:
    mu.grad = None
    ls.grad = None
    loss(mu, ls).backward()


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def copy_bandwidth_gbs(repeats: int) -> float:
    src = torch.empty(1 << 28, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), repeats)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def spec_bandwidth_gbs() -> float | None:
    props = torch.cuda.get_device_properties(0)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    # Double data rate: two transfers per clock.
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-log2", type=int, default=20)
    parser.add_argument("--max-log2", type=int, default=26)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kl_gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("kl_gpu.py needs a CUDA device; benchmarks/kl_bench.py measures the CPU path")
    import triton

    copy_gbs = copy_bandwidth_gbs(args.repeats)
    spec_gbs = spec_bandwidth_gbs()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    meta = {
        "device": torch.cuda.get_device_name(0),
        "copy_bandwidth_gbs": copy_gbs,
        "spec_bandwidth_gbs": spec_gbs,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "commit": commit.stdout.strip(),
    }
    print(json.dumps(meta))
    rows = []
    print("| N | triton ms | torch backend ms | eager ms | triton GB/s | of copy bw | eager / triton |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for log2_n in range(args.min_log2, args.max_log2 + 1):
        n = 1 << log2_n
        mu = torch.randn(BATCH, n // BATCH, device="cuda", requires_grad=True)
        log_sigma = (0.3 * torch.randn(BATCH, n // BATCH, device="cuda")).requires_grad_()

        fused = {b: kl_divergence(mu, log_sigma, backend=b) for b in ("triton", "torch")}
        torch.testing.assert_close(fused["triton"], fused["torch"], rtol=1e-5, atol=1e-5)
        ms = {name: median_ms(partial(step, loss, mu, log_sigma), args.repeats) for name, loss in LOSSES.items()}
        triton_ms, torch_ms, eager_ms = ms["triton"], ms["torch"], ms["eager"]
        gbs = 6 * n * 4 / (triton_ms * 1e-3) / 1e9
        row = {
            "log2_n": log2_n,
            "triton_ms": triton_ms,
            "torch_backend_ms": torch_ms,
            "eager_ms": eager_ms,
            "triton_gbs": gbs,
            "fraction_of_copy_bandwidth": gbs / copy_gbs,
            "speedup_over_eager": eager_ms / triton_ms,
        }
        rows.append(row)
        print(
            f"| 2^{log2_n} | {triton_ms:.3f} | {torch_ms:.3f} | {eager_ms:.3f} | {gbs:.0f} "
            f"| {gbs / copy_gbs:.0%} | {eager_ms / triton_ms:.2f}x |",
            flush=True,
        )
    last = rows[-1]
    print(
        f"N=2^{last['log2_n']}: {last['fraction_of_copy_bandwidth']:.0%} of copy bandwidth (target >= 80%), "
        f"{last['speedup_over_eager']:.2f}x over eager (target >= 3x)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "batch": BATCH, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
