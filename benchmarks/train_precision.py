"""The training step at GPU scale, measured on CPU: what torch.compile, channels-last and bf16 do to compare's loop,
and whether a bf16 comparison ends where an fp32 one does.

- **Speed.** Compare's loop (``fxvae.study.loop.Run.train_epoch``) on a warm-start VAE, one epoch per call,
  four variants interleaved epoch by epoch after a warm-up epoch each (the compiled one compiles there):
  eager fp32, ``compile=True``, the model and its batches in channels-last, and ``precision="bf16"``. Each
  variant's ratio is its steps/s over eager's, the median of per-repeat CPU-time ratios.
- **bf16 against fp32.** ``fxvae.compare`` of the digits conv pair (examples/pairs.py: the conv AE on 28x28
  digits, Bernoulli) at fp32 and at bf16, with the same seeds: each start's final held-out -ELBO per seed.
  bf16 "ends within the seeds' spread" where its mean over the seeds differs from fp32's by no more than
  the larger range over the seeds of the two.

Run: python benchmarks/train_precision.py --threads 1 [--repeats 10] [--epochs 5 --seeds 2]
"""

from __future__ import annotations

import copy
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

import fxvae  # noqa: E402
from benchmarks.common import arguments, provenance, recorded  # noqa: E402
from benchmarks.models import conv_ae  # noqa: E402
from fxvae.measure.bench import interleave, quartiles  # noqa: E402
from fxvae.study import CompareOptions, Samples  # noqa: E402
from fxvae.study.loop import Run, start_run  # noqa: E402
from fxvae.study.starts import begin  # noqa: E402

START, END = "<!-- train-precision:start -->", "<!-- train-precision:end -->"
VARIANTS = ("eager", "compile", "channels_last", "bf16")
CPU = torch.device("cpu")


def conv_pair(epochs: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The digits conv pair: its AE trained for ``epochs`` epochs on the training split, all its data, and the
    training split (what the AE saw)."""
    from pairs import HOLDOUT, PAIRS, train_ae

    pair = PAIRS["conv"]
    data = pair.data()
    train = Samples(data).split(HOLDOUT, seed=0)[0].tensors[0]
    return train_ae(pair, train, epochs=epochs), data, train


def cases(ae_epochs: int) -> list[tuple[str, torch.nn.Module, torch.Tensor, str]]:
    ae, digits, _ = conv_pair(ae_epochs)
    images = torch.rand(256, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return [
        ("digits conv pair 1x28x28, batch 64 (Bernoulli)", ae, digits[:512], "bernoulli"),
        ("conv_ae 3x32x32, batch 64 (Gaussian)", conv_ae().eval(), images, "gaussian"),
    ]


def _run(variant: str, ae: torch.nn.Module, data: torch.Tensor, likelihood: str) -> Run:
    options = CompareOptions(
        likelihood=likelihood,
        sigma=0.1 if likelihood == "gaussian" else "optimal",
        compile=variant == "compile",
        precision="bf16" if variant == "bf16" else "fp32",
        channels_last=variant == "channels_last",
    )
    lik = fxvae.likelihoods.get(likelihood, sigma=0.1 if likelihood == "gaussian" else None)
    samples = Samples(data)
    begun = begin("warm", ae, (data[:64],), samples, options, 0, None)
    return start_run(begun, 0, options, lik, math.ceil(len(data) / 64), CPU, 0)


def speed(repeats: int, ae_epochs: int) -> list[dict[str, Any]]:
    rows = []
    for name, ae, data, likelihood in cases(ae_epochs):
        samples = Samples(data)
        runs = [_run(v, ae, data, likelihood) for v in VARIANTS]
        epochs: list[Callable[[], None]] = [partial(r.train_epoch, samples, CPU, 0, 1) for r in runs]
        first = []
        for epoch in epochs:  # warm-up: the compiled variant compiles here
            began = time.perf_counter()
            epoch()
            first.append(time.perf_counter() - began)
        timed = interleave(epochs, repeats=repeats, calls=1)
        steps = runs[0].steps_per_epoch
        row: dict[str, Any] = {"model": name, "steps_per_epoch": steps}
        row["first_epoch_s"] = dict(zip(VARIANTS, first, strict=True))
        for variant, t in zip(VARIANTS, timed, strict=True):
            ratios = [e / c for e, c in zip(timed[0].cpu, t.cpu, strict=True)]
            row[variant] = {
                "steps_per_s": steps / statistics.median(t.cpu),
                "ratio": statistics.median(ratios),
                "ratio_q": quartiles(ratios),
            }
        rows.append(row)
        print(
            f"{name}: "
            + ", ".join(f"{v} {row[v]['steps_per_s']:.1f} steps/s ({row[v]['ratio']:.3f}x)" for v in VARIANTS),
            flush=True,
        )
    return rows


def precision(epochs: int, seeds: int, ae_epochs: int) -> dict[str, Any]:
    ae, data, train = conv_pair(ae_epochs)
    finals: dict[str, dict[str, list[float]]] = {}
    seconds = {}
    for name in ("fp32", "bf16"):
        began = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            result = fxvae.compare(
                copy.deepcopy(ae),
                data,
                starts=("scratch", "warm"),
                likelihood="bernoulli",
                epochs=epochs,
                seeds=seeds,
                k=2,
                final_k=20,
                ae_train=train,  # held out: the 20% the AE never saw
                density=(),
                precision=name,
                out=out,
                progress=False,
            )
        seconds[name] = time.perf_counter() - began
        finals[name] = {row["start"]: row["final"] for row in result.table()}
        print(f"{name}: {finals[name]} ({seconds[name]:.0f} s)", flush=True)
    starts = []
    for start in finals["fp32"]:
        fp32, bf16 = finals["fp32"][start], finals["bf16"][start]
        spread = max(max(fp32) - min(fp32), max(bf16) - min(bf16))
        gap = abs(statistics.mean(bf16) - statistics.mean(fp32))
        starts.append({"start": start, "fp32": fp32, "bf16": bf16, "gap": gap, "spread": spread})
    return {"epochs": epochs, "seeds": seeds, "ae_epochs": ae_epochs, "seconds": seconds, "starts": starts}


def markdown(data: dict[str, Any]) -> str:
    lines = [
        START,
        "## The training step: compile, channels-last and bf16 on CPU",
        "",
        f"{provenance(data)} Compare's loop (`Run.train_epoch`) on each model's warm-start VAE, one epoch per call "
        f"after a warm-up epoch each, {data['repeats']} interleaved repeats; each ratio is the variant's steps/s over "
        "eager fp32's, the median of per-repeat CPU-time ratios (IQR).",
        "",
        "| model | steps/epoch | eager (steps/s) | compile (steps/s, ratio) | channels-last | bf16 | "
        "first epoch: eager / compile (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["rows"]["speed"]:
        cells = [
            f"{r[v]['steps_per_s']:.1f}, {r[v]['ratio']:.2f}x ({r[v]['ratio_q'][0]:.2f}-{r[v]['ratio_q'][2]:.2f})"
            for v in VARIANTS[1:]
        ]
        first = r["first_epoch_s"]
        lines.append(
            f"| {r['model']} | {r['steps_per_epoch']} | {r['eager']['steps_per_s']:.1f} | {' | '.join(cells)} | "
            f"{first['eager']:.1f} / {first['compile']:.1f} |"
        )
    p = data["rows"]["precision"]
    lines += [
        "",
        f"bf16 against fp32: `fxvae.compare` of the digits conv pair (examples/pairs.py, its AE trained "
        f"{p['ae_epochs']} epochs), starts scratch and warm, {p['epochs']} epochs x {p['seeds']} seeds, final "
        f"-ELBO at k=20 on the held-out 20% (nats per image; fp32 took {p['seconds']['fp32']:.0f} s, bf16 "
        f"{p['seconds']['bf16']:.0f} s).",
        "",
        "| start | fp32, per seed | bf16, per seed | gap of the means | larger spread over the seeds | within? |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for s in p["starts"]:
        lines.append(
            f"| {s['start']} | {', '.join(f'{v:.2f}' for v in s['fp32'])} | {', '.join(f'{v:.2f}' for v in s['bf16'])} "
            f"| {s['gap']:.2f} | {s['spread']:.2f} | {'yes' if s['gap'] <= s['spread'] else 'no'} |"
        )
    speed = {r["model"]: r for r in data["rows"]["speed"]}
    ratios = {v: [r[v]["ratio"] for r in speed.values()] for v in VARIANTS[1:]}
    within = all(s["gap"] <= s["spread"] for s in p["starts"])
    lines += [
        "",
        f"On this CPU, compile ran at {min(ratios['compile']):.2f}-{max(ratios['compile']):.2f}x of eager, no "
        "speed-up for these small conv models (most of their step is convolutions, which inductor leaves to "
        "the same kernels; not profiled further). The first epoch includes the compilation, with inductor's "
        "on-disk cache as this machine left it. Compile is meant for GPUs. Channels-last ran at "
        f"{min(ratios['channels_last']):.2f}-{max(ratios['channels_last']):.2f}x, "
        f"bf16 at {min(ratios['bf16']):.2f}-{max(ratios['bf16']):.2f}x (this CPU has AVX-512 BF16). bf16 "
        f"{'ends within' if within else 'does not end within'} the seeds' spread of fp32 for every start.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = arguments("train_precision", __doc__, repeats=10)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the bf16-against-fp32 comparison")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--ae-epochs", type=int, default=10, help="epochs of the digits conv pair's AE")
    args = parser.parse_args()

    def rows() -> dict[str, Any]:
        return {
            "speed": speed(args.repeats, args.ae_epochs),
            "precision": precision(args.epochs, args.seeds, args.ae_epochs),
        }

    recorded("train_precision", args, rows, markdown, (START, END))


if __name__ == "__main__":
    main()
