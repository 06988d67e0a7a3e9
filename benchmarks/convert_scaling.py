"""Does conversion cost grow linearly with graph size? Time fxvae.convert on deep MLP autoencoders.

Baseline in the same process: torch.fx.symbolic_trace plus one forward pass of the same model.
Run: python benchmarks/convert_scaling.py [--depths 125,250,500,1000,2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

import fxvae


def deep_autoencoder(depth: int, width: int = 16, latent: int = 4) -> nn.Sequential:
    half = depth // 2
    layers: list[nn.Module] = []
    for _ in range(half):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers += [nn.Linear(width, latent), nn.Sigmoid(), nn.Linear(latent, width)]
    for _ in range(depth - half - 2):
        layers += [nn.ReLU(), nn.Linear(width, width)]
    return nn.Sequential(*layers).eval()


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depths", default="125,250,500,1000,2000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "convert_scaling.json")
    args = parser.parse_args()
    rows = []
    for depth in (int(d) for d in args.depths.split(",")):
        model, x = deep_autoencoder(depth), torch.randn(8, 16)

        def baseline(model=model, x=x) -> None:
            torch.fx.symbolic_trace(model)
            with torch.no_grad():
                model(x)

        base = best_of(args.repeats, baseline)
        conv = best_of(args.repeats, lambda model=model, x=x: fxvae.convert(model, x))
        nodes = len(fxvae.convert(model, x)[0].graph.nodes)
        rows.append({"layers": depth, "nodes": nodes, "convert_s": conv, "baseline_s": base, "ratio": conv / base})
        print(
            f"{depth:>6} layers {nodes:>6} nodes  convert {conv:7.3f} s  trace+forward {base:7.3f} s  "
            f"ratio {conv / base:5.2f}  per node {conv / nodes * 1e6:7.1f} us"
        )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpus": torch.get_num_threads(),
        "torch": torch.__version__,
        "commit": commit,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
