"""Memory of ``fxvae compare --data FOLDER`` as the folder grows: is a folder of images read lazily?

For each size, a folder of 64x64 RGB PNGs is written from real data that ships with scikit-learn (its 8x8
digits, upscaled bilinearly and tinted with a seeded colour per image; written in a subprocess), then
``fxvae compare MODEL --data FOLDER --quick --threads 1 --k 2 --final-k 4`` runs in a fresh process whose peak RSS
(``ru_maxrss``) is read by the process that waited for it. MODEL is :func:`small_conv_ae` below (examples'
ConvAE at 8 and 16 channels: the memory under test is the data's, and a smaller model keeps 2 epochs of 4
starts short). Two ways to read the folder, each in its own process:

- ``lazy``: ``--data FOLDER``, the :class:`fxvae.io.datafiles.ImageFolder` the command line now gives;
- ``eager``: ``--data benchmarks/folder_memory.py:eager_images``, the whole folder decoded by
  :func:`fxvae.io.datafiles.read_images` into one tensor, as ``--data FOLDER`` read it before.

Goal: lazy's peak at the largest size is at most 1.15x its peak at the smallest.

Run: python benchmarks/folder_memory.py [--sizes 2000,20000]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START, END = "<!-- folder-memory:start -->", "<!-- folder-memory:end -->"
FOLDER = "FXVAE_BENCH_FOLDER"
"""The environment variable that names the folder :func:`eager_images` reads."""
SIDE = 64
GOAL = 1.15
CHEAP = ("--k", "2", "--final-k", "4")
"""Few posterior draws per held-out sample: the measurement's cost grows with the folder (10% is held out), and
the memory under test is the data's."""


def small_conv_ae() -> torch.nn.Module:
    """A conv AE for 3x64x64 images: 3x64x64 -> 4x16x16 -> 3x64x64 (about 9k parameters)."""
    from fxvae.examples import ConvAE

    torch.manual_seed(0)
    return ConvAE(3, (8, 16), latent=4)


def eager_images() -> torch.Tensor:
    """The folder named by ``FXVAE_BENCH_FOLDER`` decoded whole (how ``--data FOLDER`` read it before)."""
    from fxvae.io.datafiles import read_images

    return read_images(os.environ[FOLDER])


def write_images(folder: str | Path, count: int) -> None:
    """``count`` 64x64 RGB PNGs in ``folder``: scikit-learn's digits in turn, upscaled, each tinted."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits().images / 16.0
    tints = np.random.default_rng(0).uniform(0.3, 1.0, (count, 3))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        grey = Image.fromarray((digits[i % len(digits)] * 255).astype(np.uint8)).resize((SIDE, SIDE), Image.BILINEAR)
        rgb = (np.asarray(grey, dtype=np.float64)[..., None] * tints[i]).round().astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(folder / f"{i:06d}.png")


def peak_rss_mib(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of ``command``, run by a fresh Python that waits for it and reads its
    ``ru_maxrss`` (the children's maximum, so one wrapper per command)."""
    wrapper = (
        "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *command], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return int(done.stdout.split()[-1]) / 1024, time.perf_counter() - start


def measure(sizes: list[int], scratch: Path, ways: list[str], extra: list[str]) -> list[dict[str, Any]]:
    from safetensors.torch import save_file

    checkpoint = scratch / "ae.safetensors"
    save_file(small_conv_ae().state_dict(), str(checkpoint))
    model = f"{Path(__file__).resolve()}:small_conv_ae"
    rows = []
    for count in sizes:
        folder = scratch / f"images{count}"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", f"import folder_memory; folder_memory.write_images({str(folder)!r}, {count})"],
            check=True,
            cwd=Path(__file__).parent,
        )
        print(f"{count} images written in {time.perf_counter() - start:.0f} s", flush=True)
        for way in ways:
            data = str(folder) if way == "lazy" else f"{Path(__file__).resolve()}:eager_images"
            command = [sys.executable, "-m", "fxvae.cli", "compare", model, "--checkpoint", str(checkpoint)]
            command += ["--data", data, "--quick", "--threads", "1", *CHEAP, *extra]
            command += ["--out", str(scratch / f"out-{way}{count}")]
            peak, seconds = peak_rss_mib(command, {FOLDER: str(folder), "PYTHONPATH": str(ROOT)})
            rows.append({"images": count, "way": way, "peak_rss_mib": round(peak, 1), "seconds": round(seconds, 1)})
            print(rows[-1], flush=True)
    return rows


def markdown(data: dict[str, Any]) -> str:
    from benchmarks.common import provenance

    rows = data["rows"]
    sizes = sorted({r["images"] for r in rows})
    peak = {(r["way"], r["images"]): r["peak_rss_mib"] for r in rows}
    ways = [w for w in ("lazy", "eager") if (w, sizes[0]) in peak]
    lines = [
        START,
        "## Memory of a folder of images",
        "",
        provenance(data)
        + " 64x64 RGB PNGs from scikit-learn's digits (upscaled, tinted); each run in a fresh process, its peak RSS "
        "read by the process that waited for it. `lazy`: `--data FOLDER` (an `ImageFolder`, decoded a batch at a "
        "time); `eager`: the folder decoded whole into one tensor, as `--data FOLDER` was read before.",
        "",
        "| images | "
        + " | ".join(f"{w} peak RSS (MiB)" for w in ways)
        + " | "
        + " | ".join(f"{w} s" for w in ways)
        + " |",
        "| ---: |" + " ---: |" * (2 * len(ways)),
    ]
    seconds = {(r["way"], r["images"]): r["seconds"] for r in rows}
    for n in sizes:
        cells = [f"{peak[w, n]:.0f}" for w in ways] + [f"{seconds[w, n]:.0f}" for w in ways]
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    ratios = {w: peak[w, sizes[-1]] / peak[w, sizes[0]] for w in ways}
    met = "met" if ratios["lazy"] <= GOAL else "missed"
    lines += [
        "",
        f"Peak at {sizes[-1]:,} over the peak at {sizes[0]:,}: "
        + ", ".join(f"{w} {r:.2f}x" for w, r in ratios.items())
        + f" (goal for lazy: at most {GOAL}x, {met}).",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    from benchmarks.common import arguments, recorded

    parser = arguments("folder_memory", __doc__ or "", repeats=1)
    parser.add_argument("--sizes", default="2000,20000", help="folder sizes, comma-separated")
    parser.add_argument("--ways", default="lazy,eager", help="lazy, eager or both")
    parser.add_argument("--compare", default="", help="more options of fxvae compare, e.g. '--starts warm'")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        recorded(
            "folder_memory",
            args,
            lambda: measure(sizes, Path(scratch), args.ways.split(","), args.compare.split()),
            markdown,
            (START, END),
        )


if __name__ == "__main__":
    main()
