"""AE vs VAE throughput and memory, measured side by side in one process.

Used by ``fxvae bench`` and the scripts in benchmarks/. Ratios come from interleaved, back-to-back
timings, so that the drift of a shared, noisy machine cancels. Every repeat is timed on two clocks:
the wall clock (what a user waits for) and the process's CPU time, which does not count the time the
process spends descheduled; on a busy machine the CPU-time ratio is the steadier estimate of what the
VAE costs over its AE (with one torch thread the two clocks agree on an idle machine).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from fxvae.analysis.outputs import reconstruction
from fxvae.capture.tracing import as_args
from fxvae.convert import convert
from fxvae.modules import eval_mode

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
    """The most memory a step's tensors hold at once, above the phase's start: CUDA's allocator peak; on CPU,
    from torch's profiler (None where it gives no allocation events)."""
    cpu_median: float | None = None
    """Samples per second of process CPU time (None on CUDA, where the CPU mostly waits)."""


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
    """Median over repeats of VAE/AE samples/s (wall clock), each pair timed back to back (drift cancels)."""
    ratio_q1: float
    ratio_q3: float
    threads: int | None = None
    """torch.get_num_threads() while measuring."""
    cpu_ratio: float | None = None
    """As ``ratio``, on process CPU time: descheduling by other processes does not count (None on CUDA)."""
    cpu_ratio_q1: float | None = None
    cpu_ratio_q3: float | None = None
    extra_cpu_s: float | None = None
    """Median over pairs of the VAE's CPU seconds per step minus the AE's: fixed overheads show as the same
    number at every batch size, per-sample work grows with it."""
    fused_adam: bool | None = None
    """Whether the train phase used ``Adam(fused=True)`` (None for eval)."""


@dataclass(frozen=True)
class ConversionTiming:
    """fxvae.convert against its baseline, torch.fx.symbolic_trace plus one forward pass."""

    convert_s: float
    baseline_s: float
    ratio: float
    convert_cpu_s: float | None = None
    """Median process CPU time of the conversion: steadier than the wall clock on a busy machine."""
    baseline_cpu_s: float | None = None
    cpu_ratio: float | None = None


@dataclass(frozen=True)
class Timings:
    """Seconds per call of one step function in each interleaved repeat, on both clocks."""

    wall: tuple[float, ...]
    cpu: tuple[float, ...]


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
"""glibc's mallopt parameters (malloc.h)."""
_MMAP_THRESHOLD_MAX = 32 << 20
"""glibc refuses a larger mmap threshold on 64-bit systems."""


def steady_allocator() -> bool:
    """Make glibc keep freed memory mapped, so that CPU timings measure compute, not page faults.

    With glibc's defaults, a freed block at the top of the heap goes back to the OS once the free space
    passes the trim threshold, and blocks above the (adaptive) mmap threshold are mapped afresh; the next
    large tensor then page-faults on every page, and the kernel zeroes each one. How often that happens
    depends on the order in which tensors are freed, so two models that run the same operators (an AE and
    its eval-mode VAE) differed by up to 15% on the benchmark zoo, and a batch-8 forward of
    benchmarks/models.py's codec_ae took 102 ms with the defaults against 72 ms steady. This sets the trim
    threshold to 1 GiB and the mmap threshold to its 32 MiB maximum, for the whole process. Returns
    whether glibc accepted both (False elsewhere; a preloaded jemalloc or tcmalloc ignores them).

    >>> fxvae.measure.bench.steady_allocator()  # doctest: +SKIP
    True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); one value is all three.

    >>> quartiles([1.0, 2.0, 3.0, 4.0, 5.0])
    (2.0, 3.0, 4.0)
    """
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def adam(model: nn.Module) -> tuple[torch.optim.Adam, bool]:
    """Adam (lr 1e-5) over the model's trainable parameters, fused where torch can; returns it and whether
    it is fused.

    The for-loop Adam of CPU tensors computes ``exp_avg_sq.sqrt()``, and torch's vectorised CPU sqrt is
    15-30x slower on exact zeros than on positive numbers (measured on AVX512, torch 2.13). Every dead
    ReLU unit leaves zeros there, so that Adam's step time depends on how many units a model has killed,
    not on its size: an AE with more dead units than its VAE (whose noisy latent keeps units alive) then
    looks slower. The fused kernel has no such path and is 2.5x faster on 0.2M parameters besides.

    >>> adam(nn.Linear(2, 2))[1]
    True
    """
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=1e-5, fused=True), True
    except (RuntimeError, ValueError):  # parameters of a dtype or device the fused kernel lacks
        return torch.optim.Adam(params, lr=1e-5), False


class Runner:
    """One model's step for a mode: no-grad forward (eval), or forward, loss, backward, Adam (train).

    ``kl`` (the VAE's KL term) is added to the MSE reconstruction loss in train mode.

    >>> Runner(vae, kl, "train").step(x)
    """

    def __init__(self, model: nn.Module, kl: Callable[[], torch.Tensor] | None, mode: Mode) -> None:
        self.model, self.kl, self.mode = model, kl, mode
        self.optimizer, self.fused = adam(model) if mode == "train" else (None, None)
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
    """Peak memory of a phase above its start: the CUDA allocator's peak, or on CPU the peak of the bytes
    torch's tensors hold, from the profiler's allocation events (None where the profiler gives none).

    The process's RSS cannot show it: after the warm-up steps the allocator reuses the memory it keeps, so
    the high-water mark does not move and a step's peak read 0.
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
            from torch.profiler import ProfilerActivity, profile

            self.profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self.quiet = _quiet_stderr()
            self.quiet.__enter__()
            self.profiler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
            return
        try:
            self.profiler.__exit__(*exc)
        finally:
            self.quiet.__exit__(*exc)
        try:
            events = self.profiler.profiler.kineto_results.events()
        except AttributeError:  # a torch without kineto's results
            return
        changes = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
        live = peak = 0
        for _, size in changes:
            live += size
            peak = max(peak, live)
        self.peak_mib = peak / 2**20 if changes else None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while the profiler runs: its C++ side prints a line when it starts and stops,
    and warns about blocks allocated before it started."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], None], calls: int, device: torch.device) -> tuple[float, float]:
    """Wall and process-CPU seconds per call over ``calls`` back-to-back calls."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        step()
    _sync(device)
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def calls_per_repeat(
    steps: Sequence[Callable[[], None]], repeat_s: float, *, warmup: int = 3, device: str | torch.device = "cpu"
) -> int:
    """Run ``warmup`` calls of each step; return how many calls of the slowest one last ``repeat_s``.

    >>> calls_per_repeat([lambda: None], 0.0, warmup=1)
    1
    """
    dev = torch.device(device)
    slowest = max(_timed(step, warmup, dev)[0] for step in steps)
    return max(1, math.ceil(repeat_s / max(slowest, 1e-9)))


def interleave(
    steps: Sequence[Callable[[], None]],
    *,
    repeats: int,
    calls: int,
    device: str | torch.device = "cpu",
    on_repeat: Callable[[], None] | None = None,
) -> list[Timings]:
    """Time ``calls`` calls of each step per repeat, the steps back to back in an order that rotates
    every repeat (for two: AB, BA, AB, ...), so that neither always runs first or after the other.

    >>> [len(t.wall) for t in interleave([lambda: None, lambda: None], repeats=3, calls=1)]
    [3, 3]
    """
    dev = torch.device(device)
    walls: list[list[float]] = [[] for _ in steps]
    cpus: list[list[float]] = [[] for _ in steps]
    for i in range(repeats):
        for k in (*range(i % len(steps), len(steps)), *range(i % len(steps))):
            wall, cpu = _timed(steps[k], calls, dev)
            walls[k].append(wall)
            cpus[k].append(cpu)
        if on_repeat is not None:
            on_repeat()
    return [Timings(tuple(w), tuple(c)) for w, c in zip(walls, cpus, strict=True)]


def speed_ratios(base: Sequence[float], other: Sequence[float]) -> list[float]:
    """Per repeat, other's throughput over base's (base time / other time), from seconds per call.

    >>> speed_ratios([2.0, 1.0], [1.0, 1.0])
    [2.0, 1.0]
    """
    return [b / o for b, o in zip(base, other, strict=True)]


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
    place in train mode (Adam, lr 1e-5, fused where torch can: see :func:`adam`), so pass copies you
    do not need. The ratios are medians of per-pair ratios, on the wall clock and on CPU time; the
    row records the torch thread count they were measured with.

    >>> rows = measure(ae, vae, kl, (64,), batch_sizes=(32,), repeats=3, repeat_s=0.001)
    >>> rows[0].mode, rows[0].batch_size, rows[0].threads == torch.get_num_threads()
    ('eval', 32, True)
    """
    dev = torch.device(device)
    ae, vae = ae.to(dev), vae.to(dev)
    generator = torch.Generator().manual_seed(0)
    on_cpu = dev.type == "cpu"
    rows = []
    for mode in modes:
        runners = (Runner(ae, None, mode), Runner(vae, kl, mode))
        for batch in batch_sizes:
            x = torch.randn((batch, *sample_shape), generator=generator).to(dev)
            steps = [functools.partial(r.step, x) for r in runners]
            calls = calls_per_repeat(steps, repeat_s, warmup=warmup, device=dev)
            timings = interleave(steps, repeats=repeats, calls=calls, device=dev, on_repeat=on_repeat)
            peaks = []
            for step in steps:
                with _Memory(dev) as mem:
                    _timed(step, 2, dev)
                peaks.append(mem.peak_mib)
            stats = []
            for t, peak in zip(timings, peaks, strict=True):
                rates = [batch / s for s in t.wall]
                q1, med, q3 = quartiles(rates)
                cpu_med = statistics.median(batch / s for s in t.cpu) if on_cpu and min(t.cpu) > 0 else None
                stats.append(Stats(med, q1, q3, min(rates), max(rates), peak, cpu_med))
            ae_t, vae_t = timings
            rq1, rmed, rq3 = quartiles(speed_ratios(ae_t.wall, vae_t.wall))
            cpu: tuple[float | None, ...] = (None, None, None)
            extra = None
            if on_cpu and min(ae_t.cpu) > 0 and min(vae_t.cpu) > 0:
                cpu = quartiles(speed_ratios(ae_t.cpu, vae_t.cpu))
                extra = statistics.median(v - a for a, v in zip(ae_t.cpu, vae_t.cpu, strict=True))
            rows.append(
                BenchRow(
                    mode,
                    batch,
                    calls,
                    repeats,
                    stats[0],
                    stats[1],
                    rmed,
                    rq1,
                    rq3,
                    threads=torch.get_num_threads(),
                    cpu_ratio=cpu[1],
                    cpu_ratio_q1=cpu[0],
                    cpu_ratio_q3=cpu[2],
                    extra_cpu_s=extra,
                    fused_adam=runners[0].fused,
                )
            )
    return rows


def time_conversion(model: nn.Module, example_inputs: Any, *, repeats: int = 5, warmup: int = 1) -> ConversionTiming:
    """Median time of fxvae.convert against symbolic_trace plus one no-grad forward, interleaved (wall
    clock and process CPU time), after ``warmup`` untimed runs of each (first calls pay for imports and
    caches, which are not what a conversion costs).

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

    for _ in range(warmup):
        conversion()
        baseline()
    conv, base = interleave([conversion, baseline], repeats=repeats, calls=1, device=args[0].device)
    convert_s, baseline_s = statistics.median(conv.wall), statistics.median(base.wall)
    convert_cpu, baseline_cpu = statistics.median(conv.cpu), statistics.median(base.cpu)
    return ConversionTiming(
        convert_s, baseline_s, convert_s / baseline_s, convert_cpu, baseline_cpu, convert_cpu / max(baseline_cpu, 1e-9)
    )
