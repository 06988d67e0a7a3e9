"""Is the fused KL loss faster and leaner than the formulas people write? Forward + backward on CPU.

Three ways to compute the batchmean KL of N(mu, exp(log_sigma)^2) from N(0, I), all in this process:
fused (fxvae.ops.kl.kl_divergence, torch backend), the eager formula in log-sigma form and
torch.distributions. Time: the minimum over interleaved, warmed-up repeats of forward + backward with
fresh gradients (``.grad = None``, as after ``zero_grad()``). Peak extra memory: the largest number of
bytes the process's torch allocator held beyond the inputs during one forward + backward, replayed
from the allocation events of ``torch.profiler`` (``profile_memory=True``); ``--rss`` cross-checks it
with the growth of the resident set's high-water mark (VmHWM) in a fresh subprocess per case.

Run: python benchmarks/kl_bench.py [--max-log2 24] [--docs]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.distributions import Normal
from torch.distributions import kl_divergence as distributions_kl
from torch.profiler import ProfilerActivity, profile

import fxvae.ops.kl as kl_module
from fxvae.ops.kl import kl_divergence

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fused(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    return kl_divergence(mu, log_sigma, backend="torch")


def eager(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.sum(1 + 2 * log_sigma - mu.pow(2) - torch.exp(2 * log_sigma)) / mu.shape[0]


def distributions(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    return distributions_kl(Normal(mu, log_sigma.exp()), Normal(0.0, 1.0)).sum() / mu.shape[0]


METHODS: dict[str, Loss] = {"fused": fused, "eager": eager, "distributions": distributions}


def inputs(log2_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = 1 << log2_n
    batch = min(BATCH, n)
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(batch, n // batch, generator=generator).requires_grad_()
    log_sigma = (0.3 * torch.randn(batch, n // batch, generator=generator)).requires_grad_()
    return mu, log_sigma


def step(loss: Loss, mu: torch.Tensor, log_sigma: torch.Tensor) -> None:
    mu.grad = None
    log_sigma.grad = None
    loss(mu, log_sigma).backward()


def times(log2_n: int, repeats: int) -> dict[str, float]:
    mu, log_sigma = inputs(log2_n)
    best = dict.fromkeys(METHODS, float("inf"))
    for _ in range(2):
        for loss in METHODS.values():
            step(loss, mu, log_sigma)
    for _ in range(repeats):
        for name, loss in METHODS.items():
            start = time.perf_counter()
            step(loss, mu, log_sigma)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def peak_extra_bytes(loss: Loss, mu: torch.Tensor, log_sigma: torch.Tensor) -> int:
    """Peak bytes held by torch's CPU allocator beyond what existed before forward + backward."""
    step(loss, mu, log_sigma)
    mu.grad = None
    log_sigma.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss(mu, log_sigma).backward()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak


def rss_growth_bytes(method: str, log2_n: int) -> int:
    """Growth of the resident set's high-water mark over one forward + backward, in a fresh process.

    A small step first pages in the kernels' code, which RSS counts too. Writing 5 to
    /proc/self/clear_refs resets VmHWM to the current RSS (Linux); ru_maxrss would not do, it carries
    the parent's peak across fork + exec.
    """
    code = (
        "import re, sys; sys.path.insert(0, 'benchmarks'); import kl_bench as b; "
        "kib = lambda key: int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
        f"b.step(b.METHODS[{method!r}], *b.inputs(12)); mu, ls = b.inputs({log2_n}); "
        "open('/proc/self/clear_refs', 'w').write('5'); base = kib('VmRSS'); "
        f"b.step(b.METHODS[{method!r}], mu, ls); print(kib('VmHWM') - base)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) * 1024


def machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": commit.strip(),
        "chunk": kl_module._chunk(torch.device("cpu")),
    }


def table(rows: list[dict[str, float]]) -> str:
    mib = 1 << 20
    lines = [
        "| N | eager ms | distributions ms | fused ms | fused / eager | fused / distributions "
        "| eager MiB | distributions MiB | fused MiB | fused / eager memory |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| 2^{r['log2_n']} | {r['eager_ms']:.3f} | {r['distributions_ms']:.3f} | {r['fused_ms']:.3f} "
            f"| {r['fused_ms'] / r['eager_ms']:.2f} | {r['fused_ms'] / r['distributions_ms']:.2f} "
            f"| {r['eager_bytes'] / mib:.2f} | {r['distributions_bytes'] / mib:.2f} "
            f"| {r['fused_bytes'] / mib:.2f} | {r['fused_bytes'] / r['eager_bytes']:.2f} |"
        )
    return "\n".join(lines)


def write_docs(text: str, path: Path) -> None:
    start, end = "<!-- kl_bench:start -->", "<!-- kl_bench:end -->"
    doc = path.read_text()
    head, rest = doc.split(start, 1)
    path.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-log2", type=int, default=10)
    parser.add_argument("--max-log2", type=int, default=24, help="largest N = 2^max_log2 elements (26 fits)")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats per size (0: by size)")
    parser.add_argument("--chunk-log2", type=int, default=0, help="override the CPU tile size (tuning)")
    parser.add_argument("--rss", action="store_true", help="also measure ru_maxrss growth per case")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kl_cpu.json")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    if args.chunk_log2:
        kl_module._CPU_CHUNK = 1 << args.chunk_log2
    meta = machine()
    print(json.dumps(meta))
    rows = []
    for log2_n in range(args.min_log2, args.max_log2 + 1):
        repeats = args.repeats or max(10, min(200, (1 << 27) >> log2_n))
        best = times(log2_n, repeats)
        mu, log_sigma = inputs(log2_n)
        row: dict[str, float] = {"log2_n": log2_n, "repeats": repeats}
        for name, loss in METHODS.items():
            row[f"{name}_ms"] = best[name] * 1e3
            row[f"{name}_bytes"] = peak_extra_bytes(loss, mu, log_sigma)
            if args.rss:
                row[f"{name}_rss_bytes"] = rss_growth_bytes(name, log2_n)
        rows.append(row)
        print(
            f"N=2^{log2_n:<2} eager {row['eager_ms']:9.3f} ms  "
            f"distributions {row['distributions_ms']:9.3f} ms  fused {row['fused_ms']:9.3f} ms  "
            f"time fused/eager {row['fused_ms'] / row['eager_ms']:.2f}  "
            f"memory fused/eager {row['fused_bytes'] / row['eager_bytes']:.2f}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "batch": BATCH, "rows": rows}, indent=2) + "\n")
    text = table(rows)
    print(text)
    if args.docs:
        write_docs(text, ROOT / "docs" / "benchmarks.md")


if __name__ == "__main__":
    main()
