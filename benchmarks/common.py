"""What every benchmark script records and how it writes its docs section: one home for both."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

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
