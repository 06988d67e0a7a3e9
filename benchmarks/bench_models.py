"""What does a VAE cost over its AE? Throughput, peak memory and conversion time over the model zoo.

For each model of benchmarks/models.py: fxvae.convert against torch.fx.symbolic_trace plus one forward
(target <= 3x), then the AE and its VAE interleaved in this process (fxvae.bench.measure, the same code as
``fxvae bench``) for inference and a whole training step (targets for the conv models: VAE/AE >= 0.98
eval, >= 0.95 train). Writes benchmarks/results/models_<device>.json, docs/img/bench_models_<device>.png
and the models section of docs/benchmarks.md.

Run: python benchmarks/bench_models.py [--device cpu] [--threads 1] [--repeats 25]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxvae  # noqa: E402
from benchmarks.models import ZOO  # noqa: E402
from fxvae.bench import measure, time_conversion  # noqa: E402

BATCH_SIZES = {"mlp_ae": (1, 64), "conv_ae": (1, 16), "conv_ae_2m5": (1, 8)}
"""Per model: a latency-bound and a throughput-bound batch; the whole run stays under 5 minutes on 2 cores."""
TARGETS = {"eval": 0.98, "train": 0.95}
CONV_MODELS = ("conv_ae", "conv_ae_2m5")
CONVERT_TARGET = 3.0
START, END = "<!-- models:start -->", "<!-- models:end -->"


def machine() -> dict[str, object]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fxvae": fxvae.__version__,
        "commit": commit,
        "dirty": bool(dirty.strip()),
    }


def run(device: str, repeats: int, repeat_s: float) -> dict[str, object]:
    results = []
    for name, (factory, sample_shape) in ZOO.items():
        torch.manual_seed(0)
        model = factory()
        x = torch.randn(1, *sample_shape)
        timing = time_conversion(model, x, repeats=7)
        vae, kl = fxvae.convert(model, x)
        start = time.perf_counter()
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
        print(f"{name}: {params:,} params, convert {timing.ratio:.2f}x, {time.perf_counter() - start:.0f} s")
        for r in rows:
            print(f"  {r.mode:5} batch {r.batch_size:3}: VAE/AE {r.ratio:.3f} ({r.ratio_q1:.3f}-{r.ratio_q3:.3f})")
        results.append(
            {
                "model": name,
                "params": params,
                "vae_params": sum(p.numel() for p in vae.parameters()),
                "input_shape": list(sample_shape),
                "latent_shape": list(fxvae.conversion(vae).latent_shape),
                "conversion": asdict(timing),
                "rows": [asdict(r) for r in rows],
            }
        )
    return {"models": results}


def markdown(data: dict) -> str:
    m = data["machine"]
    dirty = " (with uncommitted changes)" if m["dirty"] else ""
    lines = [
        START,
        "## AE vs VAE over the model zoo",
        "",
        f"Measured with `{data['command']}` on {m['cpu']} ({m['cores']} cores, "
        f"{data['threads']} torch thread(s)), "
        f"torch {m['torch']}, commit `{m['commit'][:10]}`{dirty}, "
        f"load average {data['loadavg_before']:.1f} before the run. Raw numbers: "
        f"`benchmarks/results/models_{data['device']}.json`. Throughput is samples/s, median of "
        f"{data['repeats']} interleaved repeats (IQR in brackets); VAE/AE is the median of the per-repeat "
        "ratios (each AE/VAE pair runs back to back, so machine drift cancels). Eval is a no-grad forward; "
        "train is forward, MSE (+ KL for the VAE), backward and an Adam step. Peak memory is the rise of the "
        "process's RSS high-water mark over two steps (`/proc/self/clear_refs`), allocator effects included.",
        "",
        "| model | params | latent | mode | batch | AE samples/s | VAE samples/s | VAE/AE | target "
        "| peak MiB AE / VAE |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for entry in data["models"]:
        for r in entry["rows"]:
            target = TARGETS[r["mode"]] if entry["model"] in CONV_MODELS else None
            verdict = "-" if target is None else f">= {target} {'met' if r['ratio'] >= target else '**missed**'}"
            peaks = " / ".join(
                "n/a" if s["peak_mem_mib"] is None else f"{s['peak_mem_mib']:.1f}" for s in (r["ae"], r["vae"])
            )
            lines.append(
                f"| {entry['model']} | {entry['params']:,} | {'x'.join(map(str, entry['latent_shape']))} | "
                f"{r['mode']} | {r['batch_size']} | {_rate(r['ae'])} | {_rate(r['vae'])} | "
                f"{r['ratio']:.3f} ({r['ratio_q1']:.3f}-{r['ratio_q3']:.3f}) | {verdict} | {peaks} |"
            )
    lines += [
        "",
        "Conversion time (median of 7, interleaved) against `torch.fx.symbolic_trace` plus one no-grad "
        f"forward of the same model (target <= {CONVERT_TARGET:g}x):",
        "",
        "| model | fxvae.convert | symbolic_trace + forward | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for entry in data["models"]:
        c = entry["conversion"]
        lines.append(
            f"| {entry['model']} | {c['convert_s'] * 1000:.1f} ms | {c['baseline_s'] * 1000:.1f} ms "
            f"| {c['ratio']:.2f}x |"
        )
    lines += ["", f"![VAE/AE throughput ratio](img/bench_models_{data['device']}.png)", "", END]
    return "\n".join(lines)


def _rate(stats: dict) -> str:
    return f"{stats['median']:,.0f} ({stats['q1']:,.0f}-{stats['q3']:,.0f})"


def write_section(doc: Path, section: str) -> None:
    """Replace only the text between our markers; other sections of the file belong to other benchmarks."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, mode in zip(axes, ("eval", "train"), strict=True):
        labels, models, ratios, low, high = [], [], [], [], []
        for entry in data["models"]:
            for r in entry["rows"]:
                if r["mode"] == mode:
                    labels.append(f"{entry['model']}\nbatch {r['batch_size']}")
                    models.append(entry["model"])
                    ratios.append(r["ratio"])
                    low.append(r["ratio"] - r["ratio_q1"])
                    high.append(r["ratio_q3"] - r["ratio"])
        colors = [
            "0.6" if model not in CONV_MODELS else "tab:green" if v >= TARGETS[mode] else "tab:red"
            for model, v in zip(models, ratios, strict=True)
        ]
        ax.bar(range(len(ratios)), ratios, yerr=[low, high], color=colors, capsize=3, alpha=0.8)
        ax.axhline(TARGETS[mode], color="0.2", ls="--", lw=1, label=f"target {TARGETS[mode]} (conv models)")
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30, ha="right")
        ax.set_title(f"{mode}: VAE/AE samples/s (median, IQR; grey: no target)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylim(0.5, 1.15)
    fig.suptitle(f"{data['machine']['cpu']}, {data['threads']} thread(s), torch {data['machine']['torch']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 1 is steady on a shared 2-core box")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--repeat-ms", type=float, default=100.0)
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the docs table and plot from the existing JSON"
    )
    args = parser.parse_args()
    out = ROOT / "benchmarks" / "results" / f"models_{args.device}.json"
    if args.render_only:
        render(json.loads(out.read_text()))
        return
    torch.set_num_threads(args.threads)
    loadavg = os.getloadavg()[0]
    start = time.perf_counter()
    data = {
        "command": " ".join(["python benchmarks/bench_models.py", *sys.argv[1:]]),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "repeat_ms": args.repeat_ms,
        "loadavg_before": loadavg,
        "machine": machine(),
        **run(args.device, args.repeats, args.repeat_ms / 1000),
    }
    data["loadavg_after"] = os.getloadavg()[0]
    data["wall_s"] = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    render(data)
    print(f"wrote {out.relative_to(ROOT)} in {data['wall_s']:.0f} s")


def render(data: dict) -> None:
    """The PNG in docs/img and the table in docs/benchmarks.md, from one run's JSON."""
    (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
    plot(data, ROOT / "docs" / "img" / f"bench_models_{data['device']}.png")
    write_section(ROOT / "docs" / "benchmarks.md", markdown(data))
    print(f"wrote docs/img/bench_models_{data['device']}.png and docs/benchmarks.md")


if __name__ == "__main__":
    main()
