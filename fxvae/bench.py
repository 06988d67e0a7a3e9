"""AE vs VAE throughput and memory, measured side by side in one process.

Used by ``fxvae bench`` and the scripts in benchmarks/. Ratios come from interleaved, back-to-back
timings, so that the drift of a shared, noisy machine cancels.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from fxvae.convert import convert
from fxvae.modules import eval_mode
from fxvae.outputs import reconstruction
from fxvae.tracing import as_args

Mode = Literal["eval", "train"]
Device = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class Stats:
    """Throughput of one model in one phase, over interleaved timed repeats."""

    median: float
    """samples/s"""
    q1: float
    q3: float
    min: float
    max: float
    peak_mem_mib: float | None
    """Peak memory above the phase's baseline: CPU process RSS high-water (VmHWM), CUDA max allocated."""


@dataclass(frozen=True)
class BenchRow:
    """AE and VAE measured side by side for one mode and batch size."""

    mode: Mode
    batch_size: int
    steps_per_repeat: int
    repeats: int
    ae: Stats
    vae: Stats
    ratio: float
    """Median over repeats of VAE/AE samples/s, each pair timed back to back (drift cancels)."""
    ratio_q1: float
    ratio_q3: float


@dataclass(frozen=True)
class ConversionTiming:
    """fxvae.convert against its baseline, torch.fx.symbolic_trace plus one forward pass."""

    convert_s: float
    baseline_s: float
    ratio: float


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


class _Runner:
    """One model's step for a mode: no-grad forward (eval), or forward, loss, backward, Adam (train)."""

    def __init__(self, model: nn.Module, kl: Callable[[], torch.Tensor] | None, mode: Mode) -> None:
        self.model, self.kl, self.mode = model, kl, mode
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-5) if mode == "train" else None
        model.train(mode == "train")

    def step(self, x: torch.Tensor) -> None:
        if self.optimizer is None:
            with torch.no_grad():
                self.model(x)
            return
        loss = F.mse_loss(reconstruction(self.model(x), x), x)
        if self.kl is not None:
            loss = loss + self.kl()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class _Memory:
    """Peak memory of a phase: CUDA allocator peak, or the process RSS high-water mark on Linux.

    torch's CPU allocations bypass tracemalloc, so RSS it is: writing 5 to /proc/self/clear_refs resets
    VmHWM to the current RSS, making the high-water mark per phase. Elsewhere the peak is unknown (None).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> _Memory:
        self.peak_mib: float | None = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.base = _proc_status_kib("VmRSS") * 1024
            except OSError:
                self.base = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.base is not None:
            self.peak_mib = (_proc_status_kib("VmHWM") * 1024 - self.base) / 2**20


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(runner: _Runner, x: torch.Tensor, steps: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        runner.step(x)
    _sync(device)
    return time.perf_counter() - start


def measure(
    ae: nn.Module,
    vae: nn.Module,
    kl: Callable[[], torch.Tensor],
    sample_shape: tuple[int, ...],
    *,
    device: Device = "cpu",
    batch_sizes: tuple[int, ...] = (1, 32, 256),
    modes: tuple[Mode, ...] = ("eval", "train"),
    repeats: int = 20,
    warmup: int = 3,
    repeat_s: float = 0.05,
    on_repeat: Callable[[], None] | None = None,
) -> list[BenchRow]:
    """Throughput and peak memory of an AE and its VAE, interleaved in one process.

    For each mode and batch size: ``warmup`` steps of each model, then ``repeats`` timed pairs
    (the order alternates), each timing ``steps_per_repeat`` steps chosen so that one repeat lasts
    about ``repeat_s``; then a few steps of each under a memory probe. Both models are trained in
    place in train mode (Adam, lr 1e-5), so pass copies you do not need.

    >>> rows = measure(ae, vae, kl, (64,), batch_sizes=(32,), repeats=3, repeat_s=0.001)
    >>> rows[0].mode, rows[0].batch_size
    ('eval', 32)
    """
    dev = torch.device(device)
    ae, vae = ae.to(dev), vae.to(dev)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for mode in modes:
        runners = (_Runner(ae, None, mode), _Runner(vae, kl, mode))
        for batch in batch_sizes:
            x = torch.randn((batch, *sample_shape), generator=generator).to(dev)
            slowest = max(_timed(r, x, warmup, dev) / warmup for r in runners)
            steps = max(1, math.ceil(repeat_s / max(slowest, 1e-9)))
            rates: tuple[list[float], list[float]] = ([], [])
            for i in range(repeats):
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for k in order:
                    rates[k].append(batch * steps / _timed(runners[k], x, steps, dev))
                if on_repeat is not None:
                    on_repeat()
            peaks = []
            for r in runners:
                with _Memory(dev) as mem:
                    _timed(r, x, 2, dev)
                peaks.append(mem.peak_mib)
            pair = [v / a for a, v in zip(*rates, strict=True)]
            rq1, rmed, rq3 = _quartiles(pair)
            stats = []
            for values, peak in zip(rates, peaks, strict=True):
                q1, med, q3 = _quartiles(values)
                stats.append(Stats(med, q1, q3, min(values), max(values), peak))
            rows.append(BenchRow(mode, batch, steps, repeats, stats[0], stats[1], rmed, rq1, rq3))
    return rows


def time_conversion(model: nn.Module, example_inputs: Any, *, repeats: int = 5) -> ConversionTiming:
    """Median time of fxvae.convert against symbolic_trace plus one no-grad forward, interleaved.

    >>> time_conversion(ae, x, repeats=1).ratio > 0
    True
    """
    args = as_args(example_inputs)

    def baseline() -> None:
        fx.symbolic_trace(model)
        with eval_mode(model), torch.no_grad():
            model(*args)

    def conversion() -> None:
        convert(model, args)

    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats):
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            start = time.perf_counter()
            (conversion, baseline)[k]()
            times[k].append(time.perf_counter() - start)
    convert_s, baseline_s = statistics.median(times[0]), statistics.median(times[1])
    return ConversionTiming(convert_s, baseline_s, convert_s / baseline_s)
