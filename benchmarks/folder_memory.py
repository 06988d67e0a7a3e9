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

``--what calibrate`` measures calibration alone, with no folder: ``fxvae.convert(ae, x, calibration=loader,
log_sigma_init="auto")`` in a fresh process, ``loader`` a DataLoader (batches of 256) over :class:`LazyDigits`
(1x28x28 images made from their index on each read), ``ae`` :func:`mlp_ae_28`. Calibration used to hold every
batch of its data (and their codes); it now reads the data in passes, a batch at a time. Peak RSS, measured
2026-12-08 on a shared 2-core AMD EPYC, torch 2.13 CPU, one thread
(``python benchmarks/folder_memory.py --what calibrate --no-docs``):

| code | 2,000 images | 20,000 images | ratio |
| --- | ---: | ---: | ---: |
| before (commit 9f0d115, every batch held) | 289.6 MiB | 343.4 MiB | 1.19x |
| after (passes, one batch at a time) | 284.8 MiB | 286.3 MiB | 1.01x |

Run: python benchmarks/folder_memory.py [--sizes 2000,20000] [--what epoch|compare|calibrate]
[--compare '--starts warm']; ``--render A.json B.json`` writes the docs section from runs already made.
"""

from __future__ import annotations

import json
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


class LazyDigits(torch.utils.data.Dataset):
    """``count`` 1x28x28 images made from their index on each read (a seeded uniform draw): data that is never
    held whole, as a folder of files is not."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(index))


def mlp_ae_28() -> torch.nn.Module:
    """An MLP AE for 1x28x28 images through an 8-wide code (about 100k parameters)."""
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 64),
        nn.ReLU(),
        nn.Linear(64, 8),
        nn.ReLU(),
        nn.Linear(8, 64),
        nn.ReLU(),
        nn.Linear(64, 784),
        nn.Unflatten(1, (1, 28, 28)),
    ).eval()


def one_calibration(count: int) -> None:
    """``fxvae.convert(ae, x, calibration=loader, log_sigma_init="auto")`` over a DataLoader (batches of 256) of
    :class:`LazyDigits`: the calibration path alone."""
    import fxvae

    torch.set_num_threads(1)
    loader = torch.utils.data.DataLoader(LazyDigits(count), batch_size=256)
    fxvae.convert(mlp_ae_28(), torch.rand(4, 1, 28, 28), calibration=loader, log_sigma_init="auto")


def one_epoch(way: str, folder: str) -> None:
    """Read the folder as compare's loop does (``fxvae.study.Samples``, batches of 64), once: the data path alone."""
    from fxvae.io.datafiles import ImageFolder, read_images
    from fxvae.study import Samples

    samples = Samples(ImageFolder(folder) if way == "lazy" else read_images(folder))
    for batch in samples.batches(64):
        batch[0].sum()


def measure(
    sizes: list[int], scratch: Path, ways: list[str], extra: list[str], what: str = "compare"
) -> list[dict[str, Any]]:
    from safetensors.torch import save_file

    checkpoint = scratch / "ae.safetensors"
    save_file(small_conv_ae().state_dict(), str(checkpoint))
    model = f"{Path(__file__).resolve()}:small_conv_ae"
    rows = []
    for count in sizes:
        if what == "calibrate":
            command = [sys.executable, str(Path(__file__).resolve()), "--calibrate", str(count)]
            peak, seconds = peak_rss_mib(command, {"PYTHONPATH": str(ROOT)})
            rows.append({"what": what, "images": count, "way": "lazy", "peak_rss_mib": round(peak, 1)})
            rows[-1]["seconds"] = round(seconds, 1)
            print(rows[-1], flush=True)
            continue
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
            if what == "epoch":
                command = [sys.executable, str(Path(__file__).resolve()), "--epoch", way, str(folder)]
            peak, seconds = peak_rss_mib(command, {FOLDER: str(folder), "PYTHONPATH": str(ROOT)})
            rows.append({"what": what, "images": count, "way": way, "peak_rss_mib": round(peak, 1)})
            rows[-1]["seconds"] = round(seconds, 1)
            print(rows[-1], flush=True)
    return rows


TITLES = {
    "epoch": "The data path alone: one pass over the folder through `fxvae.study.Samples`, 64 images a batch",
    "compare": "`fxvae compare MODEL --data FOLDER --quick --threads 1 --k 2 --final-k 4 --starts warm`",
    "calibrate": 'Calibration alone: `fxvae.convert(ae, x, calibration=loader, log_sigma_init="auto")`, a DataLoader '
    "(batches of 256) over 1x28x28 images made on each read",
}


def table(rows: list[dict[str, Any]], what: str) -> list[str]:
    """One table (peak RSS and seconds per size, lazy and eager) and the ratio of the largest size's peak."""
    rows = [r for r in rows if r.get("what", "compare") == what]
    sizes = sorted({r["images"] for r in rows})
    peak = {(r["way"], r["images"]): r["peak_rss_mib"] for r in rows}
    seconds = {(r["way"], r["images"]): r["seconds"] for r in rows}
    ways = [w for w in ("lazy", "eager") if (w, sizes[0]) in peak]
    header = [*(f"{w} peak RSS (MiB)" for w in ways), *(f"{w} s" for w in ways)]
    lines = [f"{TITLES[what]}:", "", "| images | " + " | ".join(header) + " |", "| ---: |" + " ---: |" * len(header)]
    for n in sizes:
        cells = [f"{peak[w, n]:.0f}" for w in ways] + [f"{seconds[w, n]:.0f}" for w in ways]
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    ratios = ", ".join(f"{w} {peak[w, sizes[-1]] / peak[w, sizes[0]]:.2f}x" for w in ways)
    return [*lines, "", f"Peak at {sizes[-1]:,} images over the peak at {sizes[0]:,}: {ratios}.", ""]


def markdown(data: dict[str, Any]) -> str:
    from benchmarks.common import provenance

    lines = [
        START,
        "## Memory of a folder of images",
        "",
        provenance(data)
        + " 64x64 RGB PNGs from scikit-learn's digits (upscaled, tinted); each run in a fresh process, its peak RSS "
        "read by the process that waited for it. `lazy`: `--data FOLDER` (an `ImageFolder`, decoded a batch at a "
        "time); `eager`: the folder decoded whole into one tensor, as `--data FOLDER` was read before. The goal "
        f"(issue 27) is a peak at 20,000 images at most {GOAL}x the peak at 2,000.",
        "",
    ]
    for what in TITLES:
        if any(r.get("what", "compare") == what for r in data["rows"]):
            lines += table(data["rows"], what)
    return "\n".join([*lines, *data.get("notes", []), END])


def main() -> None:
    from benchmarks.common import arguments, recorded

    parser = arguments("folder_memory", __doc__ or "", repeats=1)
    parser.add_argument("--sizes", default="2000,20000", help="folder sizes, comma-separated")
    parser.add_argument("--ways", default="lazy,eager", help="lazy, eager or both")
    parser.add_argument(
        "--what",
        default="compare",
        choices=["compare", "epoch", "calibrate"],
        help="epoch: the data path alone; calibrate: convert's calibration over a lazy DataLoader",
    )
    parser.add_argument("--compare", default="", help="more options of fxvae compare, e.g. '--starts warm'")
    parser.add_argument("--render", nargs="+", type=Path, help="write the docs section from these JSON files alone")
    parser.add_argument("--note", help="with --render: a paragraph after the tables")
    args = parser.parse_args()
    if args.render:
        from benchmarks.common import write_section

        runs = [json.loads(path.read_text()) for path in args.render]
        merged = {**runs[0], "rows": [row for run in runs for row in run["rows"]]}
        merged["notes"] = [f"Also run: `{run['command']}`." for run in runs[1:]] + ([args.note] if args.note else [])
        write_section(ROOT / "docs" / "benchmarks.md", markdown(merged), START, END)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        recorded(
            "folder_memory",
            args,
            lambda: measure(sizes, Path(scratch), args.ways.split(","), args.compare.split(), args.what),
            markdown,
            (START, END),
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--epoch"]:
        one_epoch(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["--calibrate"]:
        one_calibration(int(sys.argv[2]))
    else:
        main()
