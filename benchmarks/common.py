"""What every benchmark script records and how it writes its docs section: one home for both."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import fxvae

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, object]:
    """CPU, core count, versions, commit and branch: what a number needs to be compared with another."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "fxvae": fxvae.__version__,
        "commit": git("rev-parse", "HEAD"),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
    }


def write_section(doc: Path, section: str, start: str, end: str) -> None:
    """Replace only the text between ``start`` and ``end`` (``section`` includes both markers): the other
    sections of the file belong to other benchmarks. A missing section is appended."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)


def arguments(script: str, doc: str, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark script takes: threads, repeats, where the JSON goes, whether docs are written."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 1 is steady on a shared 2-core box")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / f"{script}.json")
    parser.add_argument("--no-docs", action="store_true", help="write the JSON only")
    return parser


def recorded(
    script: str,
    args: argparse.Namespace,
    rows: Callable[[], list[dict[str, Any]]],
    markdown: Callable[[dict[str, Any]], str],
    section: tuple[str, str],
) -> dict[str, Any]:
    """Run ``rows()`` under the arguments' thread count with the steady allocator, and write what it measured
    with the machine it ran on: the JSON at ``args.out`` and, unless ``--no-docs``, the docs section."""
    from fxvae.measure.bench import steady_allocator

    steady_allocator()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}", flush=True)
    start = time.perf_counter()
    data: dict[str, Any] = {
        "command": " ".join([f"python benchmarks/{script}.py", *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "loadavg_before": os.getloadavg()[0],
        "machine": machine(),
    }
    data["rows"] = rows()
    data["loadavg_after"] = os.getloadavg()[0]
    data["wall_s"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    if not args.no_docs:
        write_section(ROOT / "docs" / "benchmarks.md", markdown(data), *section)
        print(f"wrote {args.out} and docs/benchmarks.md")
    return data


def provenance(data: dict[str, Any]) -> str:
    """The sentence a docs section opens with: the command, the commit, the machine and its load."""
    m = data["machine"]
    dirty = " (with uncommitted changes)" if m["dirty"] else ""
    return (
        f"`{data['command']}` at commit `{m['commit'][:10]}`{dirty} ({m['cpu']}, {data['threads']} torch thread, "
        f"torch {m['torch']}, load {data['loadavg_before']:.1f} before, {data['loadavg_after']:.1f} after; "
        f"{data['wall_s']:.0f} s)."
    )
