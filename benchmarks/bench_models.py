"""Does the VAE cost only what its new layer costs? AE vs VAE over the benchmark zoo, eval and train.

For every model of benchmarks/models.py, at batch 1 and a large batch: the AE and its VAE interleaved in
this process (fxvae.measure.bench.measure, the same code as ``fxvae bench``), as a no-grad forward (eval) and as a
training step (forward, MSE (+ KL for the VAE), backward, fused Adam). Targets: VAE/AE >= 0.99 eval,
>= 0.97 train, judged on the CPU-time ratio (the wall-clock one is reported too). Then, at batch 1, where
the VAE's extra time goes: the same step timed on a ladder of models, each one change away from the last
(the AE; its plain torch.fx trace; the VAE; in train mode the VAE without and with its KL term).

Writes benchmarks/results/models_<device>.json, docs/img/bench_models_<device>.png and the models section
of docs/benchmarks.md. About 2 minutes on 2 idle cores, 4 on busy ones.

Run: python benchmarks/bench_models.py [--threads 1] [--repeats 21] [--repeat-ms 60] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import sys
import time
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
from fxvae.measure.bench import Mode, Runner, calls_per_repeat, interleave, measure, steady_allocator  # noqa: E402

BATCH_SIZES = {"mlp_ae": (1, 256), "conv_ae": (1, 32), "conv_ae_2m5": (1, 8), "codec_ae": (1, 8)}
"""Per model: batch 1 (latency, where fixed costs show) and a throughput batch; the run stays under 5 minutes."""
TARGETS: dict[str, float] = {"eval": 0.99, "train": 0.97}
START, END = "<!-- models:start -->", "<!-- models:end -->"
RUNGS: dict[str, tuple[str, ...]] = {
    "eval": ("ae", "fx", "vae"),
    "train": ("ae", "fx", "vae_no_kl", "vae"),
}
"""The anatomy ladder: each rung is one change away from the one before it."""
PARTS = {
    "fx": "fx GraphModule",
    "vae_no_kl": "log-sigma head + noise",
    "vae": "reparameterize (eval) / KL term (train)",
}
"""What the step from the previous rung adds."""
LAST_PART = {"eval": "reparameterize", "train": "KL term"}
"""The last rung's label in one mode."""


def anatomy(
    ae: nn.Module,
    example: torch.Tensor,
    mode: Mode,
    batch: int,
    *,
    repeats: int,
    repeat_s: float,
) -> dict[str, Any]:
    """CPU seconds per step of each rung of the ladder, interleaved, and the median per-pair increments.

    Every rung runs on its own copy, so that no two optimizers share parameters.
    """
    vae, kl = fxvae.convert(ae, example)
    models: dict[str, tuple[nn.Module, nn.Module | None]] = {
        "ae": (copy.deepcopy(ae), None),
        "fx": (torch.fx.symbolic_trace(copy.deepcopy(ae)), None),
        "vae_no_kl": (copy.deepcopy(vae), None),
        "vae": (vae, kl),
    }
    x = torch.randn(batch, *example.shape[1:], generator=torch.Generator().manual_seed(1))
    steps = [functools.partial(Runner(*models[name], mode).step, x) for name in RUNGS[mode]]
    calls = calls_per_repeat(steps, repeat_s)
    cpu = [t.cpu for t in interleave(steps, repeats=repeats, calls=calls)]
    parts = {
        name: statistics.median(b - a for a, b in zip(cpu[i - 1], cpu[i], strict=True))
        for i, name in enumerate(RUNGS[mode])
        if i > 0
    }
    return {
        "mode": mode,
        "batch_size": batch,
        "ae_s": statistics.median(cpu[0]),
        "vae_s": statistics.median(cpu[-1]),
        "parts_s": parts,
        "calls_per_repeat": calls,
    }


def run(device: str, repeats: int, repeat_s: float) -> list[dict[str, Any]]:
    results = []
    for name, (factory, sample_shape) in ZOO.items():
        start = time.perf_counter()
        torch.manual_seed(0)
        model = factory()
        x = torch.randn(1, *sample_shape)
        vae, kl = fxvae.convert(model, x)
        recipe = fxvae.conversion(vae)
        # Before measure(), which trains the models it is given in place; the ladder converts its own copy.
        # CPU time is the ladder's clock, so it runs on the CPU only (on CUDA the host mostly waits).
        ladder = (
            [anatomy(model, x, mode, 1, repeats=repeats, repeat_s=repeat_s) for mode in RUNGS]
            if device == "cpu"
            else []
        )
        rows = measure(
            model,
            vae,
            kl,
            sample_shape,
            device=device,
            batch_sizes=BATCH_SIZES[name],
            repeats=repeats,
            repeat_s=repeat_s,
        )
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params:,} params, tracer {recipe.tracer}, {time.perf_counter() - start:.0f} s")
        for r in rows:
            cpu = "n/a" if r.cpu_ratio is None else f"{r.cpu_ratio:.3f} ({r.cpu_ratio_q1:.3f}-{r.cpu_ratio_q3:.3f})"
            extra = "" if r.extra_cpu_s is None else f"; extra {r.extra_cpu_s * 1e6:+.0f} us/step"
            print(f"  {r.mode:5} batch {r.batch_size:3}: VAE/AE cpu {cpu} wall {r.ratio:.3f}{extra}")
        for a in ladder:
            parts = ", ".join(f"{k} {v * 1e6:+.0f}" for k, v in a["parts_s"].items())
            print(f"  anatomy {a['mode']:5} batch 1: AE {a['ae_s'] * 1e6:.0f} us/step; {parts} us")
        results.append(
            {
                "model": name,
                "params": params,
                "vae_params": sum(p.numel() for p in vae.parameters()),
                "input_shape": list(sample_shape),
                "latent_shape": list(recipe.latent_shape),
                "tracer": recipe.tracer,
                "rows": [asdict(r) for r in rows],
                "anatomy": ladder,
            }
        )
    return results


# --- docs -----------------------------------------------------------------------------------------------


def verdict(row: dict[str, Any]) -> tuple[bool, float]:
    ratio = row["cpu_ratio"] if row["cpu_ratio"] is not None else row["ratio"]
    return ratio >= TARGETS[row["mode"]], ratio


def why(entry: dict[str, Any], row: dict[str, Any]) -> str:
    """The measured reason for a missed target: the VAE's extra CPU time per step; where the ladder ran at
    this batch size, which change adds it; else how it compares with the batch-1 overhead; and whether the
    IQR reaches the target (then the miss is within this machine's noise)."""
    if row["extra_cpu_s"] is None:
        return "no CPU-time breakdown on this device"
    ae_us = row["batch_size"] / row["ae"]["cpu_median"] * 1e6
    extra_us = row["extra_cpu_s"] * 1e6
    text = f"+{extra_us:.0f} us per step on the AE's {_us(ae_us)}"
    same = [a for a in entry["anatomy"] if a["mode"] == row["mode"] and a["batch_size"] == row["batch_size"]]
    first = [a for a in entry["anatomy"] if a["mode"] == row["mode"]]
    if same:
        parts = sorted(same[0]["parts_s"].items(), key=lambda kv: -kv[1])
        names = {**PARTS, "vae": LAST_PART[row["mode"]]}
        text += " (ladder: " + ", ".join(f"{names[k]} {v * 1e6:+.0f} us" for k, v in parts) + ")"
    elif first:
        fixed_us = sum(first[0]["parts_s"].values()) * 1e6
        grows = extra_us > 1.5 * fixed_us
        if not grows:
            text += f"; at batch 1 the VAE adds {fixed_us:.0f} us, so this is mostly that fixed cost"
        elif row["mode"] == "train":
            text += (
                f"; at batch 1 the VAE adds {fixed_us:.0f} us, so most of this grows with the batch: the "
                "per-sample work of the log-sigma head, the noise and the KL"
            )
        else:
            # An eval forward runs exactly the AE's operators: nothing in it grows with the batch.
            text += (
                f"; at batch 1 the VAE adds {fixed_us:.0f} us and an eval forward runs exactly the AE's "
                "operators, so the rest is this machine's noise"
            )
    if row["cpu_ratio_q3"] is not None and row["cpu_ratio_q3"] >= TARGETS[row["mode"]]:
        text += f"; the IQR ({row['cpu_ratio_q1']:.3f}-{row['cpu_ratio_q3']:.3f}) reaches the target"
    return text


def _us(value: float) -> str:
    return f"{value / 1000:.1f} ms" if value >= 1000 else f"{value:.0f} us"


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    dirty = " (with uncommitted changes)" if m["dirty"] else ""
    load = f"{data['loadavg_before']:.1f} before, {data['loadavg_after']:.1f} after the run"
    lines = [
        START,
        "## AE vs VAE over the model zoo",
        "",
        f"`{data['command']}`: {m['cpu']} ({m['cores']} cores, {m['cpu_capability']}), "
        f"**{data['threads']} torch thread(s)**, Python {m['python']}, torch {m['torch']}, "
        f"commit `{m['commit'][:10]}` on `{m['branch']}`{dirty}, load average {load}, {data['wall_s']:.0f} s. "
        f"Raw numbers: `benchmarks/results/models_{data['device']}.json`.",
        "",
        "Eval is a no-grad forward in eval mode; train is a whole step: forward in train mode, MSE "
        "(+ `kl()` for the VAE), backward, fused Adam, `zero_grad`. Each row runs the AE and its VAE "
        f"interleaved for {data['repeats']} repeats of about {data['repeat_ms']:.0f} ms (order alternating); "
        "VAE/AE is the **median of the per-pair throughput ratios** (IQR in brackets), on process CPU time "
        "and on the wall clock. The verdict uses CPU time: on this shared machine other processes "
        "deschedule ours at random, which the wall clock counts and CPU time does not (with one thread both "
        "measure the same on an idle machine). Samples/s are wall clock. Extra is the median over pairs of "
        "the VAE's CPU time per step minus the AE's: a fixed overhead is the same at both batch sizes. "
        "Peak MiB: the most memory a step's tensors hold at once, from torch's profiler (the allocator's "
        "choices, steady or not, do not enter it).",
        "",
        "| model | params | latent | mode | batch | AE samples/s | VAE samples/s | VAE/AE CPU | VAE/AE wall "
        "| extra/step | target | peak MiB AE / VAE |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    misses = []
    for entry in data["models"]:
        for r in entry["rows"]:
            met, _ = verdict(r)
            label = f"{entry['model']} {r['mode']} batch {r['batch_size']}"
            if not met:
                misses.append(f"- **{label}**: {why(entry, r)}.")
            peaks = " / ".join(
                "n/a" if s["peak_mem_mib"] is None else f"{s['peak_mem_mib']:.1f}" for s in (r["ae"], r["vae"])
            )
            peaks = f" {peaks} |"
            lines.append(
                f"| {entry['model']} | {entry['params']:,} | {'x'.join(map(str, entry['latent_shape']))} | "
                f"{r['mode']} | {r['batch_size']} | {_rate(r['ae'])} | {_rate(r['vae'])} | "
                f"{_ratio(r, 'cpu_ratio')} | {_ratio(r, 'ratio')} | {_extra(r)} | "
                f">= {TARGETS[r['mode']]} {'met' if met else '**missed**'} |{peaks}"
            )
    lines += [
        "",
        "Where the VAE's extra time goes at batch 1: median CPU time per step on a ladder of models, each one "
        "change from the one before (the AE; its plain `torch.fx.symbolic_trace`; the VAE, in train mode first "
        "without, then with its KL term), interleaved. Increments are medians of per-repeat differences, so "
        "they need not add up exactly.",
        "",
        "| model | mode | AE step | fx GraphModule | log-sigma head + noise | reparameterize / KL term | VAE step |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in data["models"]:
        for a in entry["anatomy"]:
            p = a["parts_s"]
            cells = [f"{p[k] * 1e6:+.0f} us" if k in p else "-" for k in ("fx", "vae_no_kl", "vae")]
            lines.append(
                f"| {entry['model']} | {a['mode']} | {_us(a['ae_s'] * 1e6)} | {' | '.join(cells)} | "
                f"{_us(a['vae_s'] * 1e6)} |"
            )
    lines += [
        "",
        "Missed targets, with the measured reason (what removing the fixed costs would buy is measured in "
        "[Core changes, measured before they were adopted](#core-changes-measured-before-they-were-adopted)):",
        "",
        *(misses or ["- none"]),
    ]
    lines += ["", f"![VAE/AE throughput ratio](img/bench_models_{data['device']}.png)", "", END]
    return "\n".join(lines)


def _extra(row: dict[str, Any]) -> str:
    return "n/a" if row["extra_cpu_s"] is None else f"{row['extra_cpu_s'] * 1e6:+.0f} us"


def _rate(stats: dict[str, Any]) -> str:
    return f"{stats['median']:,.0f} ({stats['q1']:,.0f}-{stats['q3']:,.0f})"


def _ratio(row: dict[str, Any], key: str) -> str:
    if row[key] is None:
        return "n/a"
    return f"{row[key]:.3f} ({row[key + '_q1']:.3f}-{row[key + '_q3']:.3f})"


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for ax, mode in zip(axes[:2], ("eval", "train"), strict=True):
        labels, ratios, low, high, colors = [], [], [], [], []
        for entry in data["models"]:
            for r in entry["rows"]:
                if r["mode"] != mode:
                    continue
                met, ratio = verdict(r)
                labels.append(f"{entry['model']}\nbatch {r['batch_size']}")
                ratios.append(ratio)
                low.append(ratio - (r["cpu_ratio_q1"] or ratio))
                high.append((r["cpu_ratio_q3"] or ratio) - ratio)
                colors.append("tab:green" if met else "tab:red")
        ax.bar(range(len(ratios)), ratios, yerr=[low, high], color=colors, capsize=3, alpha=0.8)
        ax.axhline(TARGETS[mode], color="0.2", ls="--", lw=1, label=f"target {TARGETS[mode]}")
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45, ha="right")
        ax.set_title(f"{mode}: VAE/AE samples per CPU-second (median, IQR)", fontsize=9)
        ax.set_ylim(min(0.6, min(ratios) - 0.05), 1.1)
        ax.legend(fontsize=7, loc="lower right")
    ax = axes[2]
    labels, bottoms = [], []
    names = list(PARTS)
    colors = {"fx": "tab:blue", "vae_no_kl": "tab:orange", "vae": "tab:purple"}
    for entry in data["models"]:
        for a in entry["anatomy"]:
            labels.append(f"{entry['model']}\n{a['mode']}")
            bottoms.append({k: 100 * a["parts_s"].get(k, 0.0) / a["ae_s"] for k in names})
    base = [0.0] * len(labels)
    for k in names:
        heights = [b[k] for b in bottoms]
        ax.bar(range(len(labels)), heights, bottom=base, color=colors[k], label=PARTS[k], alpha=0.85)
        base = [b + h for b, h in zip(base, heights, strict=True)]
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("% of the AE's step (CPU time)", fontsize=8)
    ax.set_title("batch 1: where the VAE's extra time goes", fontsize=9)
    ax.legend(fontsize=7)
    m = data["machine"]
    title = f"{m['cpu']}, {data['threads']} torch thread(s), torch {m['torch']}, commit {m['commit'][:10]}"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(data: dict[str, Any]) -> None:
    """The PNG in docs/img and the table in docs/benchmarks.md, from one run's JSON."""
    (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
    plot(data, ROOT / "docs" / "img" / f"bench_models_{data['device']}.png")
    write_section(ROOT / "docs" / "benchmarks.md", markdown(data), START, END)
    print(f"wrote docs/img/bench_models_{data['device']}.png and docs/benchmarks.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 1 is steady on a shared 2-core box")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--repeat-ms", type=float, default=60.0)
    parser.add_argument(
        "--malloc",
        choices=("steady", "default"),
        default="steady",
        help="steady: glibc keeps freed memory mapped (fxvae.measure.bench.steady_allocator); "
        "default: glibc as it comes",
    )
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/models_<device>.json)")
    parser.add_argument("--no-docs", action="store_true", help="write the JSON only")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the docs table and plot from the existing JSON"
    )
    args = parser.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / f"models_{args.device}.json"
    if args.render_only:
        render(json.loads(out.read_text()))
        return
    steady = steady_allocator() if args.malloc == "steady" else False
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, steady allocator: {steady}, load {os.getloadavg()[0]:.1f}")
    loadavg = os.getloadavg()[0]
    start = time.perf_counter()
    data: dict[str, Any] = {
        "command": " ".join(["python benchmarks/bench_models.py", *sys.argv[1:]]),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "repeat_ms": args.repeat_ms,
        "targets": TARGETS,
        "steady_allocator": steady,
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "loadavg_before": loadavg,
        "machine": machine(),
    }
    data["models"] = run(args.device, args.repeats, args.repeat_ms / 1000)
    data["loadavg_after"] = os.getloadavg()[0]
    data["wall_s"] = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out} in {data['wall_s']:.0f} s")
    if not args.no_docs:
        render(data)


if __name__ == "__main__":
    main()
