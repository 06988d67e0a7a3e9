"""Compare's loop reading a Dataset through DataLoader workers: steps/s on a Dataset whose decoding costs about as
much as the training step.

The Dataset holds PNG bytes in memory (random-noise 3x``--size``x``--size`` images, which PNG cannot shrink) and
each read decodes one and resizes it to 3x32x32 with PIL: the work of an image folder without the disk. The model
is fxvae's ``conv_ae`` (3x32x32), warm-started, batch 64, one torch thread in the training process. Three loops,
interleaved epoch by epoch after a warm-up epoch each:

- **single process**: compare's loop (``Run.train_epoch``) with ``workers=0``, every item read in the training
  process (the path every Dataset took before workers);
- **compare, workers**: the same loop with ``--workers`` DataLoader processes;
- **plain PyTorch**: a ``DataLoader`` over the same Dataset with the same workers, prefetch and batch order, and
  the same step (``run.loss``, backward, Adam) written as a user would.

Each ratio is the median of per-repeat wall-time ratios. ``busy cores`` is the machine's busy CPU time over the
epoch's wall time (``/proc/stat``: every process, the benchmark's and others').

Run: python benchmarks/loader_throughput.py --threads 1 [--repeats 7] [--workers 1] [--size 160]
"""

from __future__ import annotations

import io
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fxvae  # noqa: E402
from benchmarks.common import arguments, provenance, recorded  # noqa: E402
from benchmarks.models import conv_ae  # noqa: E402
from fxvae.io.data import default_workers  # noqa: E402
from fxvae.measure.bench import quartiles  # noqa: E402
from fxvae.study import CompareOptions, Samples  # noqa: E402
from fxvae.study.loop import Run, batch_order, start_run  # noqa: E402
from fxvae.study.starts import begin  # noqa: E402

START, END = "<!-- loader-throughput:start -->", "<!-- loader-throughput:end -->"
CPU = torch.device("cpu")
BATCH = 64
LOOPS = ("single process", "compare, workers", "plain PyTorch")


class PNGs(Dataset):
    """PNG files held as bytes; an item is one decoded, resized to 32x32 and scaled to [0, 1]."""

    def __init__(self, count: int, size: int) -> None:
        from PIL import Image

        generator = torch.Generator().manual_seed(0)
        self.files = []
        for _ in range(count):
            pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=generator).numpy()
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            self.files.append(buffer.getvalue())

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        image = Image.open(io.BytesIO(self.files[i])).convert("RGB").resize((32, 32), Image.BILINEAR)
        return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(32, 32, 3).permute(2, 0, 1) / 255


def _run(ae: torch.nn.Module, samples: Samples, options: CompareOptions) -> Run:
    lik = fxvae.likelihoods.get("gaussian", sigma=0.1)
    first = samples.batch(torch.arange(BATCH))
    begun = begin("warm", ae, first, samples, options, 0, None)
    return start_run(begun, 0, options, lik, math.ceil(len(samples) / BATCH), CPU, 0)


def _plain(run: Run, dataset: Dataset, workers: int) -> Callable[[], None]:
    """A plain PyTorch epoch: a DataLoader with the same workers and batch order, and the same step."""
    epoch = [0]
    order: list[list[int]] = []
    loader = DataLoader(
        dataset,
        batch_sampler=order,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        persistent_workers=workers > 0,
    )

    def step() -> None:
        epoch[0] += 1
        order[:] = [b.tolist() for b in batch_order(len(dataset), BATCH, 0, epoch[0])]
        run.model.train()
        for x in loader:
            run.optimizer.zero_grad(set_to_none=True)
            run.loss((x,)).backward()
            run.optimizer.step()

    return step


def _busy() -> float:
    """The machine's busy CPU seconds so far (every core, every process)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / 100  # USER_HZ


def speed(repeats: int, workers: int, size: int, count: int) -> dict[str, Any]:
    dataset = PNGs(count, size)
    ae = conv_ae().eval()
    options = CompareOptions(likelihood="gaussian", sigma=0.1, batch_size=BATCH)
    inline, loaded = Samples(dataset, workers=0), Samples(dataset, workers=workers)
    runs = [_run(ae, inline, options), _run(ae, loaded, options), _run(ae, inline, options)]
    epochs = [
        lambda: runs[0].train_epoch(inline, CPU, 0, 1),
        lambda: runs[1].train_epoch(loaded, CPU, 0, 1),
        _plain(runs[2], dataset, workers),
    ]
    began = time.perf_counter()
    for i in range(200):
        dataset[i % len(dataset)]
    decode = (time.perf_counter() - began) / 200
    steps = len(batch_order(len(dataset), BATCH, 0, 1))
    batch = inline.batch(torch.arange(BATCH))
    began = time.perf_counter()
    for _ in range(5):
        runs[2].optimizer.zero_grad(set_to_none=True)
        runs[2].loss(batch).backward()
        runs[2].optimizer.step()
    step = (time.perf_counter() - began) / 5
    for epoch in epochs:  # warm-up: the loaders start their workers here
        epoch()
    walls: list[list[float]] = [[] for _ in epochs]
    busy: list[list[float]] = [[] for _ in epochs]
    for i in range(repeats):
        for k in (*range(i % 3, 3), *range(i % 3)):
            cpu, began = _busy(), time.perf_counter()
            epochs[k]()
            walls[k].append(time.perf_counter() - began)
            busy[k].append((_busy() - cpu) / walls[k][-1])
    loaded.close()
    row: dict[str, Any] = {
        "workers": workers,
        "items": count,
        "source_size": size,
        "steps_per_epoch": steps,
        "decode_ms_per_batch": 1000 * decode * BATCH,
        "step_ms": 1000 * step,
    }
    for name, wall, cores in zip(LOOPS, walls, busy, strict=True):
        row[name] = {"steps_per_s": steps / statistics.median(wall), "busy_cores": statistics.median(cores)}
    for name, (a, b) in {
        "compare_over_plain": (2, 1),
        "compare_over_single": (0, 1),
        "plain_over_single": (0, 2),
    }.items():
        ratios = [x / y for x, y in zip(walls[a], walls[b], strict=True)]
        row[name] = {"ratio": statistics.median(ratios), "ratio_q": quartiles(ratios)}
    print(
        ", ".join(f"{n} {row[n]['steps_per_s']:.1f} steps/s ({row[n]['busy_cores']:.2f} cores)" for n in LOOPS)
        + f"; compare/plain {row['compare_over_plain']['ratio']:.3f}x, "
        + f"speedup {row['compare_over_single']['ratio']:.2f}x",
        flush=True,
    )
    return row


def markdown(data: dict[str, Any]) -> str:
    row = data["rows"][0]
    lines = [
        START,
        "## Compare reading a Dataset with workers",
        "",
        provenance(data),
        "",
        f"conv_ae 3x32x32, batch {BATCH}, {row['steps_per_epoch']} steps per epoch on {row['items']} PNGs of "
        f"3x{row['source_size']}x{row['source_size']} held in memory, each decoded and resized to 32x32 on read "
        f"({row['decode_ms_per_batch']:.1f} ms per batch of reads against {row['step_ms']:.1f} ms per training step "
        f"in one process); {row['workers']} worker(s). Median of {data['repeats']} interleaved epochs.",
        "",
        "| loop | steps/s | busy cores |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {n} | {row[n]['steps_per_s']:.1f} | {row[n]['busy_cores']:.2f} |" for n in LOOPS]
    reads, step = row["decode_ms_per_batch"], row["step_ms"]
    bound = (reads + step) / max(reads, step)
    q = row["compare_over_plain"]["ratio_q"]
    s = row["compare_over_single"]["ratio_q"]
    lines += [
        "",
        f"Compare's loop with workers runs at **{row['compare_over_plain']['ratio']:.3f}x** the plain PyTorch loop "
        f"(IQR {q[0]:.3f}-{q[2]:.3f}; goal at least 0.95x) and **{row['compare_over_single']['ratio']:.2f}x** the "
        f"single-process path (IQR {s[0]:.2f}-{s[2]:.2f}). With a free core for the worker the speedup could reach "
        f"(reads + step) / max(reads, step) = {bound:.2f}x; busy cores count the whole machine, and where they are "
        "all busy (other processes' load included) the worker has no core of its own and the reads cost what they "
        "do in one process.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = arguments("loader_throughput", __doc__, repeats=7)
    parser.add_argument("--workers", type=int, default=default_workers() or 1)
    parser.add_argument("--size", type=int, default=160, help="the PNGs' side before the resize to 32")
    parser.add_argument("--items", type=int, default=1024)
    args = parser.parse_args()
    recorded(
        "loader_throughput",
        args,
        lambda: [speed(args.repeats, args.workers, args.size, args.items)],
        markdown,
        (START, END),
    )


if __name__ == "__main__":
    main()
