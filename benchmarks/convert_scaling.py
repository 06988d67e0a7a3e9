"""What does conversion cost, and how does it grow with the graph? fxvae.convert against its baseline.

1. The benchmark zoo (benchmarks/models.py): fxvae.convert against ``torch.fx.symbolic_trace`` plus one
   no-grad forward of the same model (fxvae.measure.bench.time_conversion, interleaved). Target: <= 2x.
2. Deep autoencoders of 100 to 5,000 graph nodes, two shapes: a chain (Linear, ReLU, ...) and residual
   blocks (x + Linear(ReLU(Linear(x)))), whose skips make every node's separator test see long edges.
   Target: 5,000 nodes convert in under 10 s, near-linearly; the exponent k of time ~ nodes^k is fitted
   by least squares on log-log, over the points from 500 nodes up (below, fixed costs flatten the curve).
3. cProfile of fxvae.convert on the 5,000-node chain: where the time goes, by function.

Writes benchmarks/results/convert_scaling.json, docs/img/bench_convert_scaling.png and the conversion
section of docs/benchmarks.md. About 2-3 minutes on 2 busy cores.

Run: python benchmarks/convert_scaling.py [--threads 1] [--nodes 100,200,500,1000,2000,5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import math
import os
import pstats
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxvae  # noqa: E402
from benchmarks.common import machine, write_section  # noqa: E402
from benchmarks.models import ZOO  # noqa: E402
from fxvae.measure.bench import time_conversion  # noqa: E402

ZOO_TARGET = 2.0
SECONDS_TARGET = 10.0
PROFILED_NODES = 5000
FIT_FROM = 500
START, END = "<!-- convert:start -->", "<!-- convert:end -->"
WIDTH, LATENT = 16, 4


def chain_autoencoder(nodes: int) -> nn.Sequential:
    """Linear/ReLU pairs down to a sigmoid latent of 4 and back: about ``nodes`` graph nodes."""
    half = max((nodes - 6) // 4, 1)
    layers: list[nn.Module] = []
    for _ in range(half):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    layers += [nn.Linear(WIDTH, LATENT), nn.Sigmoid(), nn.Linear(LATENT, WIDTH)]
    for _ in range(half):
        layers += [nn.ReLU(), nn.Linear(WIDTH, WIDTH)]
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


def residual_autoencoder(nodes: int) -> nn.Sequential:
    """Residual blocks (4 graph nodes each) around a sigmoid latent of 4: about ``nodes`` graph nodes."""
    half = max((nodes - 6) // 8, 1)
    return nn.Sequential(
        *[_Residual() for _ in range(half)],
        nn.Linear(WIDTH, LATENT),
        nn.Sigmoid(),
        nn.Linear(LATENT, WIDTH),
        *[_Residual() for _ in range(half)],
    )


FAMILIES = {"chain": chain_autoencoder, "residual": residual_autoencoder}


def zoo(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name, (factory, shape) in ZOO.items():
        torch.manual_seed(0)
        model = factory().eval()
        timing = time_conversion(model, torch.randn(1, *shape), repeats=repeats)
        rows.append({"model": name, "nodes": len(torch.fx.symbolic_trace(model).graph.nodes), **asdict(timing)})
        print(
            f"zoo {name:12} convert {timing.convert_cpu_s * 1e3:7.1f} ms cpu, baseline "
            f"{timing.baseline_cpu_s * 1e3:6.1f} ms cpu: {timing.cpu_ratio:.2f}x (wall {timing.ratio:.2f}x)"
        )
    return rows


def scaling(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for family, build in FAMILIES.items():
        for size in sizes:
            model, x = build(size).eval(), torch.randn(8, WIDTH)
            nodes = len(torch.fx.symbolic_trace(model).graph.nodes)
            # Few repeats of slow conversions: the large sizes take seconds each, and their noise is small.
            count = repeats if nodes <= 1000 else max(1, repeats // 2)
            timing = time_conversion(model, x, repeats=count)
            rows.append({"family": family, "requested": size, "nodes": nodes, "repeats": count, **asdict(timing)})
            print(
                f"{family:8} {nodes:5} nodes: convert {timing.convert_cpu_s:6.3f} s cpu ({timing.convert_s:6.3f} "
                f"wall), baseline {timing.baseline_cpu_s:6.3f} s: {timing.cpu_ratio:5.2f}x, "
                f"{timing.convert_cpu_s / nodes * 1e6:6.1f} us/node"
            )
    return rows


def fit_exponent(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """Least-squares slope and intercept of log(time) against log(nodes)."""
    xs = [math.log(r["nodes"]) for r in rows]
    ys = [math.log(r[key]) for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


STAGES: tuple[tuple[str | type, str, str], ...] = (
    ("fxvae.convert", "owned_copy", "copy of the model (copy.deepcopy)"),
    ("fxvae.capture.tracing", "run_eagerly", "eager reference forward"),
    ("fxvae.capture.tracing", "_symbolic_trace", "torch.fx trace + GraphModule"),
    ("fxvae.capture.tracing", "propagate_shapes", "shape propagation (fx Interpreter forward)"),
    ("fxvae.convert", "locate", "bottleneck search"),
    ("fxvae.convert", "rewrite", "rewrite"),
    ("fxvae.surgery.rewrite", "remove_orphans", "in rewrite: orphan removal"),
    (torch.fx.GraphModule, "recompile", "in trace and rewrite: GraphModule.recompile"),
)
"""(owner: module name or class, attribute, label) of what fxvae.convert spends its time on."""


@contextlib.contextmanager
def _stage_clock(spent: dict[str, float]) -> Iterator[None]:
    """Wrap the stages of fxvae.convert so that each adds its CPU time to ``spent``; restored on exit."""
    originals = []
    for owner_name, attr, label in STAGES:
        owner = sys.modules[owner_name] if isinstance(owner_name, str) else owner_name
        original = getattr(owner, attr)
        originals.append((owner, attr, original))

        def timed(*args: Any, _f: Any = original, _label: str = label, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0.0) + time.process_time() - start

        setattr(owner, attr, timed)
    try:
        yield
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)


def stages(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, Any]:
    """CPU time of each stage of fxvae.convert (medians), and of the whole with the cyclic garbage
    collector off: no profiler, so the shares are not distorted by per-call profiling cost."""
    fxvae.convert(model, x)
    runs: list[dict[str, float]] = []
    totals, without_gc = [], []
    for _ in range(repeats):
        spent: dict[str, float] = {}
        with _stage_clock(spent):
            start = time.process_time()
            fxvae.convert(model, x)
            totals.append(time.process_time() - start)
        runs.append(spent)
        gc.disable()
        try:
            start = time.process_time()
            fxvae.convert(model, x)
            without_gc.append(time.process_time() - start)
        finally:
            gc.enable()
    return {
        "nodes": len(torch.fx.symbolic_trace(model).graph.nodes),
        "total_cpu_s": statistics.median(totals),
        "gc_disabled_cpu_s": statistics.median(without_gc),
        "stages_cpu_s": {label: statistics.median(r.get(label, 0.0) for r in runs) for _, _, label in STAGES},
    }


def profile(nodes: int, top: int = 25) -> dict[str, Any]:
    """cProfile of one fxvae.convert of the chain AE: the functions with the most cumulative time."""
    model, x = chain_autoencoder(nodes).eval(), torch.randn(8, WIDTH)
    fxvae.convert(model, x)  # warm: first-call imports and caches are not what scales
    profiler = cProfile.Profile()
    start = time.process_time()
    profiler.enable()
    fxvae.convert(model, x)
    profiler.disable()
    total = time.process_time() - start
    stats = pstats.Stats(profiler)
    entries = []
    for (path, line, func), (_, calls, own, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append({"function": _where(path, line, func), "calls": calls, "tottime_s": own, "cumtime_s": cum})
    entries.sort(key=lambda e: -e["cumtime_s"])
    by_own = sorted(entries, key=lambda e: -e["tottime_s"])[:top]
    return {"nodes": nodes, "total_cpu_s": total, "by_cumulative": entries[:top], "by_own": by_own}


def _where(path: str, line: int, func: str) -> str:
    for prefix in (str(ROOT) + os.sep, os.path.dirname(torch.__file__).rpartition(os.sep)[0] + os.sep):
        path = path.removeprefix(prefix)
    return f"{path}:{line}({func})" if line else func


# --- docs -----------------------------------------------------------------------------------------------


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    dirty = " (with uncommitted changes)" if m["dirty"] else ""
    lines = [
        START,
        "## Conversion cost",
        "",
        f"`{data['command']}`: {m['cpu']} ({m['cores']} cores), **{data['threads']} torch thread(s)**, "
        f"Python {m['python']}, torch {m['torch']}, commit `{m['commit'][:10]}` on `{m['branch']}`{dirty}, "
        f"load average {data['loadavg_before']:.1f} before, {data['loadavg_after']:.1f} after, "
        f"{data['wall_s']:.0f} s. Raw numbers: `benchmarks/results/convert_scaling.json`. Times are process "
        "CPU time, median of interleaved repeats (the wall clock is in the JSON; on this busy machine it is "
        "the CPU time plus however long other processes held the cores).",
        "",
        f"fxvae.convert against `torch.fx.symbolic_trace` plus one no-grad forward (target <= {ZOO_TARGET:g}x):",
        "",
        "| model | graph nodes | fxvae.convert | trace + forward | ratio (CPU) | ratio (wall) | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in data["zoo"]:
        met = "met" if r["cpu_ratio"] <= ZOO_TARGET else "**missed**"
        lines.append(
            f"| {r['model']} | {r['nodes']} | {r['convert_cpu_s'] * 1e3:.1f} ms | {r['baseline_cpu_s'] * 1e3:.1f} ms "
            f"| {r['cpu_ratio']:.2f}x | {r['ratio']:.2f}x | <= {ZOO_TARGET:g}x {met} |"
        )
    labels = list(data["zoo"][0]["stages"]["stages_cpu_s"])
    lines += [
        "",
        "Where the zoo's conversion time goes (share of `fxvae.convert`'s CPU time per stage, medians; the "
        "`in ...` columns are parts of the columns before them):",
        "",
        "| model | " + " | ".join(labels) + " |",
        "| --- | " + " | ".join("---:" for _ in labels) + " |",
    ]
    for r in data["zoo"]:
        st = r["stages"]
        cells = " | ".join(f"{100 * st['stages_cpu_s'][k] / st['total_cpu_s']:.0f}%" for k in labels)
        lines.append(f"| {r['model']} | {cells} |")
    lines += [
        "",
        "Deep autoencoders (width 16, latent 4, batch 8): a chain of Linear/ReLU, and residual blocks.",
        "",
        "| family | graph nodes | fxvae.convert | per node | trace + forward | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["scaling"]:
        per_node = r["convert_cpu_s"] / r["nodes"] * 1e6
        lines.append(
            f"| {r['family']} | {r['nodes']:,} | {r['convert_cpu_s']:.3f} s | {per_node:.0f} us "
            f"| {r['baseline_cpu_s']:.3f} s | {r['cpu_ratio']:.2f}x |"
        )
    lines.append("")
    largest_chain = max((r for r in data["scaling"] if r["family"] == "chain"), key=lambda r: r["nodes"])
    for family, fit in data["fits"].items():
        largest = max((r for r in data["scaling"] if r["family"] == family), key=lambda r: r["nodes"])
        met = "met" if largest["convert_cpu_s"] < SECONDS_TARGET else "**missed**"
        lines.append(
            f"- **{family}**: time ~ nodes^{fit['exponent']:.2f} (least squares on log-log, {FIT_FROM:,} nodes and up; "
            f"the baseline's exponent is {fit['baseline_exponent']:.2f}); {largest['nodes']:,} nodes convert in "
            f"{largest['convert_cpu_s']:.2f} s (target < {SECONDS_TARGET:g} s: {met})."
        )
    st = data["stages"]
    lines += [
        "",
        f"Where the time goes, by stage: one `fxvae.convert` of the {st['nodes']:,}-node chain takes "
        f"{st['total_cpu_s']:.2f} s CPU ({st['gc_disabled_cpu_s']:.2f} s with Python's cyclic garbage collector "
        "off); median CPU time of each stage, without a profiler (`in ...` rows are parts of the rows above "
        "them; the baseline's `symbolic_trace` + forward: "
        f"{largest_chain['baseline_cpu_s']:.2f} s):",
        "",
        "| stage | CPU time | share |",
        "| --- | ---: | ---: |",
    ]
    for label, spent in st["stages_cpu_s"].items():
        lines.append(f"| {label} | {spent:.3f} s | {100 * spent / st['total_cpu_s']:.0f}% |")
    prof = data["profile"]
    lines += [
        "",
        f"Where the time goes: cProfile of one `fxvae.convert` of the {prof['nodes']:,}-node chain "
        f"({prof['total_cpu_s']:.2f} s CPU under the profiler), the functions with the most cumulative time "
        "(`fxvae/` is this package, the rest is torch):",
        "",
        "| function | calls | cumulative | own |",
        "| --- | ---: | ---: | ---: |",
    ]
    for e in prof["by_cumulative"]:
        lines.append(f"| `{e['function']}` | {e['calls']:,} | {e['cumtime_s']:.3f} s | {e['tottime_s']:.3f} s |")
    lines += ["", "![conversion scaling](img/bench_convert_scaling.png)", "", END]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.4, 1]})
    for (family, fit), color in zip(data["fits"].items(), ("tab:blue", "tab:orange"), strict=False):
        rows = [r for r in data["scaling"] if r["family"] == family]
        xs = [r["nodes"] for r in rows]
        left.loglog(xs, [r["convert_cpu_s"] for r in rows], "o-", color=color, label=f"convert, {family}")
        left.loglog(xs, [r["baseline_cpu_s"] for r in rows], "x:", color=color, label=f"trace + forward, {family}")
        fitted = [math.exp(fit["intercept"]) * n ** fit["exponent"] for n in xs]
        left.loglog(xs, fitted, "-", color=color, alpha=0.35, lw=4, label=f"fit nodes^{fit['exponent']:.2f}")
    left.axhline(SECONDS_TARGET, color="tab:red", ls="--", lw=1, label=f"target {SECONDS_TARGET:g} s")
    left.set_xlabel("graph nodes")
    left.set_ylabel("CPU seconds")
    left.set_title("conversion time against graph size", fontsize=9)
    left.legend(fontsize=7)
    names = [r["model"] for r in data["zoo"]]
    ratios = [r["cpu_ratio"] for r in data["zoo"]]
    right.bar(names, ratios, color=["tab:green" if v <= ZOO_TARGET else "tab:red" for v in ratios], alpha=0.8)
    right.axhline(ZOO_TARGET, color="0.2", ls="--", lw=1, label=f"target {ZOO_TARGET:g}x")
    right.set_title("zoo: convert / (symbolic_trace + forward)", fontsize=9)
    right.tick_params(axis="x", labelsize=7)
    right.legend(fontsize=7)
    m = data["machine"]
    fig.suptitle(
        f"{m['cpu']}, {data['threads']} torch thread(s), torch {m['torch']}, commit {m['commit'][:10]}", fontsize=8
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(data: dict[str, Any]) -> None:
    plot(data, ROOT / "docs" / "img" / "bench_convert_scaling.png")
    write_section(ROOT / "docs" / "benchmarks.md", markdown(data), START, END)
    print("wrote docs/img/bench_convert_scaling.png and docs/benchmarks.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 1 is steady on a shared 2-core box")
    parser.add_argument("--nodes", default="100,200,500,1000,2000,5000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "convert_scaling.json")
    parser.add_argument("--no-docs", action="store_true", help="write the JSON only")
    parser.add_argument("--render-only", action="store_true", help="rewrite docs and plot from the existing JSON")
    args = parser.parse_args()
    if args.render_only:
        render(json.loads(args.out.read_text()))
        return
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    data: dict[str, Any] = {
        "command": " ".join(["python benchmarks/convert_scaling.py", *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
        "loadavg_before": os.getloadavg()[0],
        "machine": machine(),
    }
    start = time.perf_counter()
    data["zoo"] = zoo(args.repeats)
    data["scaling"] = scaling([int(n) for n in args.nodes.split(",")], args.repeats)
    data["fits"] = {}
    for family in FAMILIES:
        rows = [r for r in data["scaling"] if r["family"] == family and r["nodes"] >= FIT_FROM] or [
            r for r in data["scaling"] if r["family"] == family
        ]
        exponent, intercept = fit_exponent(rows, "convert_cpu_s")
        data["fits"][family] = {
            "exponent": exponent,
            "intercept": intercept,
            "baseline_exponent": fit_exponent(rows, "baseline_cpu_s")[0],
        }
        print(f"{family}: convert time ~ nodes^{exponent:.2f}")
    data["stages"] = stages(chain_autoencoder(PROFILED_NODES).eval(), torch.randn(8, WIDTH), repeats=3)
    for row in data["zoo"]:
        factory, shape = ZOO[row["model"]]
        torch.manual_seed(0)
        row["stages"] = stages(factory().eval(), torch.randn(1, *shape), repeats=args.repeats)
    data["profile"] = profile(PROFILED_NODES)
    data["loadavg_after"] = os.getloadavg()[0]
    data["wall_s"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.out} in {data['wall_s']:.0f} s")
    if not args.no_docs:
        render(data)


if __name__ == "__main__":
    main()
