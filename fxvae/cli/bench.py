"""``fxvae bench``: throughput and peak memory of MODEL and its VAE (:func:`fxvae.measure.bench.measure`), inference
and training step."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import click
import torch
from rich.table import Table

import fxvae
from fxvae.cli.data import example_input
from fxvae.cli.errors import CliError, ExitCode, reported
from fxvae.cli.models import load_checkpoint_into, load_model
from fxvae.cli.options import (
    conversion_options,
    debug_option,
    input_shape_option,
    json_option,
    model_argument,
    parse_ints,
    threads_option,
)
from fxvae.cli.output import print_table, stdout
from fxvae.measure.bench import BenchRow, measure
from fxvae.progress import bar


@click.command()
@model_argument
@input_shape_option
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Where to run.")
@click.option(
    "--batch-sizes", default="1,32,256", show_default=True, metavar="N,N", help="Comma-separated batch sizes."
)
@click.option(
    "--mode",
    type=click.Choice(["eval", "train", "eval,train"]),
    default="eval,train",
    show_default=True,
    help="eval (no-grad forward), train (whole step), or both.",
)
@click.option(
    "--repeats", type=click.IntRange(min=1), default=20, show_default=True, help="Timed repeats per model and phase."
)
@click.option(
    "--warmup", type=click.IntRange(min=1), default=3, show_default=True, help="Untimed steps per model and phase."
)
@click.option(
    "--repeat-ms",
    type=click.FloatRange(min=0.0),
    default=50.0,
    show_default=True,
    help="Target duration of one timed repeat.",
)
@threads_option
@click.option("--checkpoint", type=click.Path(path_type=Path), metavar="FILE", help="Load these weights first.")
@conversion_options()
@json_option
@debug_option
def bench(
    model: str,
    input_shape: str,
    device: str,
    batch_sizes: str,
    mode: str,
    repeats: int,
    warmup: int,
    repeat_ms: float,
    threads: int,
    checkpoint: Path | None,
    options: fxvae.Options,
    as_json: bool,
    debug: bool,
) -> None:
    """Throughput (samples/s) and peak memory of MODEL and its VAE, inference and training step."""
    with reported(debug):
        if device == "cuda" and not torch.cuda.is_available():
            raise CliError(ExitCode.USAGE, "--device cuda: CUDA is not available in this torch build/machine")
        modes = tuple(mode.split(","))
        torch.set_num_threads(threads)
        sizes = parse_ints(batch_sizes, "--batch-sizes")
        shape = parse_ints(input_shape, "--input-shape")
        module = load_model(model)
        if checkpoint is not None:
            load_checkpoint_into(module, checkpoint)
        x = example_input(module, shape)
        start = time.perf_counter()
        vae, kl = fxvae.convert(module, x, options=options)
        convert_s = time.perf_counter() - start
        if not fxvae.conversion(vae).dynamic_batch and set(sizes) != {shape[0]}:
            raise CliError(
                ExitCode.USAGE, f"the VAE was exported with a fixed batch of {shape[0]}; pass --batch-sizes {shape[0]}"
            )
        params = (sum(p.numel() for p in module.parameters()), sum(p.numel() for p in vae.parameters()))
        with bar("AE vs VAE", len(modes) * len(sizes) * repeats, enabled=not as_json) as shown:
            rows = measure(
                module,
                vae,
                kl,
                shape[1:],
                device=device,
                batch_sizes=sizes,
                modes=modes,
                repeats=repeats,
                warmup=warmup,
                repeat_s=repeat_ms / 1000,
                on_repeat=shown.advance,
            )
        if as_json:
            result = {
                "model": model,
                "input_shape": list(shape),
                "device": device,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "convert_s": convert_s,
                "params": params,
                "rows": [asdict(r) for r in rows],
            }
            click.echo(json.dumps(result, indent=2))
            return
        _print_bench(rows, model, device, convert_s, params)


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _print_bench(rows: list[BenchRow], model: str, device: str, convert_s: float, params: tuple[int, int]) -> None:
    threads = torch.get_num_threads()
    stdout.print(f"torch threads: {threads}", markup=False)
    table = Table(
        title=f"{model} on {device} (torch {torch.__version__}, {threads} thread{'s' if threads > 1 else ''}); "
        f"converted in {convert_s:.2f} s; params AE {params[0]:,} VAE {params[1]:,}",
        title_justify="left",
    )
    columns = ("mode", "batch", "AE samples/s (IQR)", "VAE samples/s (IQR)", "VAE/AE wall clock (IQR)")
    columns += ("VAE/AE CPU time (IQR)", "peak MiB AE / VAE")
    for col in columns:
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        cpu = "n/a" if r.cpu_ratio is None else f"{r.cpu_ratio:.3f} ({r.cpu_ratio_q1:.3f}-{r.cpu_ratio_q3:.3f})"
        table.add_row(
            r.mode,
            str(r.batch_size),
            f"{r.ae.median:,.0f} ({r.ae.q1:,.0f}-{r.ae.q3:,.0f})",
            f"{r.vae.median:,.0f} ({r.vae.q1:,.0f}-{r.vae.q3:,.0f})",
            f"{r.ratio:.3f} ({r.ratio_q1:.3f}-{r.ratio_q3:.3f})",
            cpu,
            f"{_mib(r.ae.peak_mem_mib)} / {_mib(r.vae.peak_mem_mib)}",
        )
    print_table(table)
    stdout.print(
        "VAE/AE: the VAE's throughput over the AE's, median of interleaved pairs; the CPU-time ratio counts only "
        "this process's time. Peak MiB: the most memory a step's tensors hold at once (CUDA: the allocator's "
        "peak; CPU: torch's profiler).",
        markup=False,
        soft_wrap=True,
    )
