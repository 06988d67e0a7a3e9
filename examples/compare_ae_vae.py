"""AE vs VAE on real digits: fine-tune a VAE converted from a trained AE, or train the same VAE from scratch?

The question fxvae answers is "I have trained an autoencoder; can I turn it into a VAE with the same inputs
and outputs?". This example measures what the conversion buys once the VAE is trained with its own loss:

1. train a small MLP autoencoder on scikit-learn's 8x8 digits (1,797 images, shipped with the package);
2. convert it with :func:`fxvae.convert` and fine-tune the VAE with reconstruction + KL (warm start), either
   plainly or calibrated on the training split (``calibration=``, ``standardize="element"`` or ``"whiten"``,
   ``log_sigma_init="auto"`` or fixed), which moves the AE's codes to the prior before the first step;
3. train the identical VAE architecture from scratch: ``fxvae.convert`` of the same AE at its initial,
   untrained weights, with the same optimiser, batches and epoch budget;
4. try ways of fine-tuning faster: a one-cycle learning rate over the first epochs (also for the plain warm
   start and for scratch, to tell the schedule's part from the calibration's), the encoder's mean path
   frozen for the first epoch (the decoder and the log-sigma head adapt first), and a learning-rate warm-up
   for the decoder over the first epoch;
5. for the plain conversions, compare the log-sigma start (0, -3) and the KL weight schedule (beta = 1
   throughout, or a linear warm-up 0 -> 1 over the first epochs).

Likelihood: p(x | z) is a product of Bernoulli distributions over the 64 pixels, with the pixel intensities
in [0, 1] as (soft) targets; the decoder outputs logits. Reconstruction error, KL and the negative ELBO are
in nats per image on the held-out split, the ELBO estimated with a fixed set of posterior samples so that
curves are comparable across epochs and runs. With soft targets the reconstruction term cannot reach 0:
its floor is the targets' own binary entropy (:func:`target_entropy`), so the numbers compare runs; they
are not log-likelihoods of the images.

Run (the full 3-seed comparison, 60 runs; 724 s measured on 2 CPU cores shared with other jobs):

    python examples/compare_ae_vae.py --out results/

``--threads`` sets torch's intra-op threads, default 1, because that was measured faster: on 2 CPU cores
shared with other jobs, 6 AE epochs took 0.05-0.1 s each with 1 thread and 0.16-8.2 s (median about 1.1 s)
with torch's default of 2 (an earlier measurement: 0.41 s against 11.8 s). Two threads that wait on each
other stall whenever another job holds a core. The example prints the count it uses.

Each run's results are written as it finishes: a line appended to ``metrics.jsonl`` (metrics, the
per-dimension KL and the pictures' pixels) and ``metrics.json`` rewritten (metrics only), so an interrupted
study keeps what is done, and ``--resume`` skips the runs already there (with every run there, it only
rebuilds the report and figures). ``report.md`` and ``compare_{curves,terms,recon,samples}.png`` are
written at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # files only: the example runs on headless machines and in the test suite

import matplotlib.pyplot as plt
import torch
import torch.fx as fx
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.datasets import load_digits
from torch import nn

import fxvae

LATENT_DIM = 8
HELD_OUT = 360  # 20 % of the 1,797 digits
SPLIT_SEED = 0  # the split stays fixed across training seeds, so seeds vary only init, batches and noise
EVAL_SEED = 1234
ELBO_SAMPLES = 8  # posterior draws per held-out image for the ELBO estimate
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
PEAK_LEARNING_RATE = 5e-3  # the one-cycle start's top rate
ONE_CYCLE_EPOCHS = 3  # the one-cycle start is back at LEARNING_RATE after this many epochs
ONE_CYCLE_RISE_STEPS = 10
FROZEN_EPOCHS = 1  # the frozen-encoder start trains only the decoder and log-sigma head in these epochs
WARMUP_EPOCHS = 10
NEAR_NATS = 1.0  # "close to converged": within this many nats per image of the scratch VAE's final -ELBO
TARGET_RATIO = 1.2  # the calibrated start's goal: epoch-0 -ELBO at most this times scratch's final
TARGET_EPOCHS = 3  # ... and within NEAR_NATS of it after at most this many epochs
ACTIVE_NATS = 0.1  # a latent dimension whose held-out KL is below this carries next to no information
SHOWN = 10  # held-out digits in the reconstruction figure; prior samples per model in the samples figure

Schedule = Literal["constant", "warm-up"]
LearningRate = Literal["constant", "one-cycle", "decoder warm-up"]


class DigitAE(nn.Module):
    """An MLP autoencoder for flattened 8x8 digits; ``forward`` returns the 64 pixel logits.

    The latent is the output of a plain Linear layer (no squashing activation), so the VAE's mu head
    fxvae clones from it can take any value the N(0, I) prior asks for.
    """

    def __init__(self, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 64)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@dataclass(frozen=True)
class Start:
    """How one VAE run begins and is trained; every run has the same architecture, batches and noise."""

    pretrained: bool
    """Convert the trained AE (warm start), or the same AE at its initial weights (scratch)."""
    log_sigma_init: float | Literal["auto"] = 0.0
    standardize: Literal["element", "whiten"] | None = None
    """Calibrate the conversion on the training split with this map; None: plain conversion."""
    schedule: Schedule = "constant"
    """KL weight: 1 throughout, or a linear warm-up to 1 over WARMUP_EPOCHS."""
    lr: LearningRate = "constant"
    frozen_epochs: int = 0
    """Epochs in which the encoder's mean path (the AE's encoder and mu head) does not train."""

    @property
    def name(self) -> str:
        kind = "scratch" if not self.pretrained else "warm" if self.standardize is None else "calibrated"
        parts = [f"{kind} {self.standardize}" if self.standardize else kind]
        init = self.log_sigma_init
        parts.append(f"log_sigma_init={init if isinstance(init, str) else format(init, 'g')}")
        if self.schedule != "constant":
            parts.append(f"KL {self.schedule}")
        if self.lr != "constant":
            parts.append(f"{self.lr} lr")
        if self.frozen_epochs:
            parts.append(f"encoder frozen {self.frozen_epochs} epoch{'s' if self.frozen_epochs > 1 else ''}")
        return ", ".join(parts)


REFERENCE = Start(pretrained=False)
"""Scratch training with fxvae's defaults: the -ELBO every start is measured against."""
PLAIN = Start(pretrained=True)
CALIBRATED = tuple(
    Start(pretrained=True, log_sigma_init=init, standardize=mode)
    for mode in ("element", "whiten")
    for init in ("auto", 0.0, -1.0)
)
IDEAS = (
    Start(pretrained=True, log_sigma_init="auto", standardize="element", lr="one-cycle"),
    Start(pretrained=True, log_sigma_init="auto", standardize="element", frozen_epochs=FROZEN_EPOCHS),
    Start(pretrained=True, log_sigma_init="auto", standardize="element", lr="decoder warm-up"),
    Start(pretrained=True, lr="one-cycle"),
    Start(pretrained=False, lr="one-cycle"),
)
LOG_SIGMA_INITS = (0.0, -3.0)
SCHEDULES: tuple[Schedule, ...] = ("constant", "warm-up")
GRID = tuple(
    Start(pretrained=pretrained, log_sigma_init=init, schedule=schedule)
    for pretrained in (True, False)
    for init in LOG_SIGMA_INITS
    for schedule in SCHEDULES
)
# The headline runs first, so that an interrupted study has them; the plain grid's other settings last.
STARTS = tuple(dict.fromkeys((REFERENCE, PLAIN, *CALIBRATED, *IDEAS, *GRID)))
HEADLINE = (REFERENCE, PLAIN, Start(pretrained=True, log_sigma_init=-3.0), *CALIBRATED, *IDEAS)


@dataclass
class Curve:
    """Held-out metrics of one training run, one entry per epoch; entry 0 is before the first step."""

    name: str
    seed: int
    threads: int = 0
    """torch.get_num_threads() while the run trained."""
    convert_seconds: float = 0.0
    """fxvae.convert, calibration included (0 for the AE)."""
    wall_seconds: float = 0.0
    """The whole run: conversion, training, evaluation and pictures."""
    recon: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    neg_elbo: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    """Training wall time of each epoch (evaluation excluded); 0 for entry 0."""
    samples_start: list[list[float]] = field(default_factory=list)
    """Prior samples (the same z ~ N(0, I) in every run) decoded before training, Bernoulli means."""
    samples_end: list[list[float]] = field(default_factory=list)
    recon_end: list[list[float]] = field(default_factory=list)
    """The first SHOWN held-out digits reconstructed after training (eval mode, z = mu)."""
    kl_dims: list[list[float]] = field(default_factory=list)
    """Held-out KL of each latent dimension, per epoch: how many dimensions the posterior uses."""

    def metrics(self) -> dict[str, object]:
        """The record without the pictures' pixels and the per-dimension KL (those stay in metrics.jsonl)."""
        return {k: v for k, v in asdict(self).items() if k not in DETAIL}


DETAIL = ("samples_start", "samples_end", "recon_end", "kl_dims")


@dataclass(frozen=True)
class Data:
    train: torch.Tensor
    held_out: torch.Tensor


def load_split() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) flattened digits scaled to [0, 1], split by a fixed generator."""
    pixels = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return pixels[order[HELD_OUT:]], pixels[order[:HELD_OUT]]


def target_entropy(x: torch.Tensor) -> float:
    """The reconstruction floor: sum over pixels of the binary entropy of the soft targets, nats per image.

    A decoder that outputs exactly p = x reaches it; no model can do better on these targets.
    """
    return F.binary_cross_entropy(x, x, reduction="sum").item() / len(x)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) in nats per image: summed over pixels, averaged over the batch."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x)


def steps_per_epoch(samples: int, max_steps: int | None) -> int:
    steps = math.ceil(samples / BATCH_SIZE)
    return steps if max_steps is None else min(steps, max_steps)


def batches(train: torch.Tensor, generator: torch.Generator, max_steps: int | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(len(train), generator=generator)
    for step, start in enumerate(range(0, len(train), BATCH_SIZE)):
        if max_steps is not None and step >= max_steps:
            return
        yield train[order[start : start + BATCH_SIZE]]


def beta_at(epoch: int, schedule: Schedule) -> float:
    """KL weight during ``epoch`` (1-based): the warm-up reaches beta = 1 in epoch ``WARMUP_EPOCHS``."""
    return min(1.0, epoch / WARMUP_EPOCHS) if schedule == "warm-up" else 1.0


def learning_rates(step: int, per_epoch: int, kind: LearningRate) -> tuple[float, float]:
    """Adam's rates (decoder, everything else) at 0-based ``step``.

    One cycle: a linear rise from LEARNING_RATE to PEAK_LEARNING_RATE over the first steps, then a cosine
    back to LEARNING_RATE at the end of epoch ONE_CYCLE_EPOCHS. Why: Adam moves every parameter by about the
    rate per step, and the calibrated start's remaining gap is the slow shrinking of the latent dimensions
    the ELBO does not pay for (see docs/compare.md); the decay back lets the fast phase settle.
    Decoder warm-up: the decoder's rate rises linearly from 0 over the first epoch. Why: Adam's first steps
    move every weight by about the full rate whatever its gradient, which disturbs a trained decoder.
    """
    if kind == "decoder warm-up":
        return LEARNING_RATE * min(1.0, (step + 1) / per_epoch), LEARNING_RATE
    rate = one_cycle(step, per_epoch) if kind == "one-cycle" else LEARNING_RATE
    return rate, rate


def one_cycle(step: int, per_epoch: int) -> float:
    end = ONE_CYCLE_EPOCHS * per_epoch
    rise = min(ONE_CYCLE_RISE_STEPS, max(1, end // 3))
    at = step + 1
    if at <= rise:
        return LEARNING_RATE + (PEAK_LEARNING_RATE - LEARNING_RATE) * at / rise
    if at <= end:
        return LEARNING_RATE + (PEAK_LEARNING_RATE - LEARNING_RATE) * 0.5 * (
            1 + math.cos(math.pi * (at - rise) / (end - rise))
        )
    return LEARNING_RATE


@torch.no_grad()
def evaluate_vae(
    vae: fx.GraphModule, kl: fxvae.KLDivergence, held_out: torch.Tensor
) -> tuple[float, float, list[float]]:
    """(reconstruction, KL, KL per latent dimension) on the held-out split, in nats per image.

    Training mode makes the VAE sample z; the fixed seed draws the same eps at every evaluation so that
    differences between epochs and runs are not sampling noise.
    """
    x = held_out.repeat(ELBO_SAMPLES, 1)
    was_training = vae.training
    vae.train()
    with torch.random.fork_rng():
        torch.manual_seed(EVAL_SEED)
        recon = bernoulli_nll(vae(x), x).item()
    divergence = kl().item()
    posterior = fxvae.posterior(vae)
    mu, log_sigma = posterior.mu, posterior.log_sigma
    per_dimension = (0.5 * (mu.square() + (2 * log_sigma).exp() - 1) - log_sigma).mean(0)
    vae.train(was_training)
    return recon, divergence, [round(v, 4) for v in per_dimension.tolist()]


def pixels(images: torch.Tensor) -> list[list[float]]:
    """Bernoulli means as JSON-sized lists (3 decimals are far below what a picture shows)."""
    return images.detach().round(decimals=3).tolist()


def prior_z() -> torch.Tensor:
    """The z ~ N(0, I) every sample picture decodes: the draws fxvae.sample makes with the same generator."""
    return torch.randn(SHOWN, LATENT_DIM, generator=torch.Generator().manual_seed(EVAL_SEED))


@torch.no_grad()
def vae_samples(vae: fx.GraphModule) -> list[list[float]]:
    return pixels(torch.sigmoid(fxvae.sample(vae, SHOWN, generator=torch.Generator().manual_seed(EVAL_SEED))))


def train_ae(ae: DigitAE, data: Data, seed: int, args: Arguments) -> Curve:
    """Train the autoencoder on reconstruction alone; the curve has no KL and no ELBO."""
    curve = Curve(name="AE", seed=seed, threads=torch.get_num_threads())
    began_run = time.perf_counter()
    optimiser = torch.optim.Adam(ae.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)

    def record(seconds: float) -> None:
        with torch.no_grad():
            curve.recon.append(bernoulli_nll(ae(data.held_out), data.held_out).item())
        curve.seconds.append(seconds)

    record(0.0)
    with progress_bar(args.quiet) as progress:
        task = progress.add_task(f"seed {seed} AE", total=args.ae_epochs)
        for _ in range(args.ae_epochs):
            began = time.perf_counter()
            for x in batches(data.train, generator, args.max_steps):
                loss = bernoulli_nll(ae(x), x)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            record(time.perf_counter() - began)
            progress.advance(task)
    ae.eval()
    with torch.no_grad():
        curve.samples_end = pixels(torch.sigmoid(ae.decoder(prior_z())))
        curve.recon_end = pixels(torch.sigmoid(ae(data.held_out[:SHOWN])))
    curve.wall_seconds = time.perf_counter() - began_run
    return curve


def mean_path(vae: fx.GraphModule) -> list[nn.Parameter]:
    """The parameters that compute mu: the encoder's, less the log-sigma head's (shared with the VAE)."""
    encoder, _ = fxvae.split(vae)
    head = {id(p) for p in vae.get_submodule(fxvae.conversion(vae).log_sigma_head).parameters()}
    return [p for p in encoder.parameters() if id(p) not in head]


def convert(ae: DigitAE, start: Start, data: Data) -> tuple[fx.GraphModule, fxvae.KLDivergence]:
    """The VAE a start begins from; calibrated on the training split, never on the held-out digits."""
    example = data.held_out[:BATCH_SIZE]
    if start.standardize is None:
        return fxvae.convert(ae, example, log_sigma_init=start.log_sigma_init)
    return fxvae.convert(
        ae,
        example,
        calibration=data.train,
        standardize=start.standardize,
        log_sigma_init=start.log_sigma_init,
        likelihood="bernoulli",  # the decoder returns logits: 'auto' weighs them by p (1 - p)
    )


def train_vae(ae: DigitAE, start: Start, data: Data, seed: int, args: Arguments, progress: Progress) -> Curve:
    """Convert ``ae`` as ``start`` says, then train on reconstruction + beta * KL; the curve reports beta = 1."""
    began_run = time.perf_counter()
    vae, kl = convert(ae, start, data)
    curve = Curve(name=start.name, seed=seed, threads=torch.get_num_threads())
    curve.convert_seconds = time.perf_counter() - began_run
    curve.samples_start = vae_samples(vae)
    _, decoder = fxvae.split(vae)  # shares the VAE's parameters
    decoding = {id(p) for p in decoder.parameters()}
    groups = [
        [p for p in vae.parameters() if id(p) in decoding],
        [p for p in vae.parameters() if id(p) not in decoding],
    ]
    optimiser = torch.optim.Adam([{"params": group} for group in groups], lr=LEARNING_RATE)
    frozen = mean_path(vae) if start.frozen_epochs else []
    per_epoch = steps_per_epoch(len(data.train), args.max_steps)
    # The same batch order and the same eps stream for every run of a seed: runs differ only in what
    # the comparison is about (start, log-sigma init, schedules).
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    def record(seconds: float) -> None:
        recon, divergence, per_dimension = evaluate_vae(vae, kl, data.held_out)
        curve.recon.append(recon)
        curve.kl.append(divergence)
        curve.kl_dims.append(per_dimension)
        curve.neg_elbo.append(recon + divergence)
        curve.seconds.append(seconds)

    record(0.0)
    task = progress.add_task(f"seed {seed} {start.name}", total=args.epochs)
    vae.train()
    step = 0
    for epoch in range(1, args.epochs + 1):
        beta = beta_at(epoch, start.schedule)
        for parameter in frozen:
            parameter.requires_grad_(epoch > start.frozen_epochs)
        began = time.perf_counter()
        for x in batches(data.train, generator, args.max_steps):
            for group, rate in zip(optimiser.param_groups, learning_rates(step, per_epoch, start.lr), strict=True):
                group["lr"] = rate
            loss = bernoulli_nll(vae(x), x) + beta * kl()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
        record(time.perf_counter() - began)
        progress.advance(task)
    vae.eval()
    curve.samples_end = vae_samples(vae)
    with torch.no_grad():
        curve.recon_end = pixels(torch.sigmoid(vae(data.held_out[:SHOWN])))
    curve.wall_seconds = time.perf_counter() - began_run
    return curve


# --- results on disk, written as each run finishes ----------------------------------------------------


class Ledger:
    """``metrics.jsonl``: one line per finished run, appended at once; ``metrics.json``: the metrics so far.

    A run killed half-way loses only the run in progress; ``resume`` reads the lines back and the study
    skips what they hold.
    """

    def __init__(self, out: Path, resume: bool) -> None:
        self.lines, self.summary = out / "metrics.jsonl", out / "metrics.json"
        self.curves: list[Curve] = []
        if resume and self.lines.exists():
            known = {f.name for f in fields(Curve)}
            for line in self.lines.read_text().splitlines():
                if line.strip():
                    self.curves.append(Curve(**{k: v for k, v in json.loads(line).items() if k in known}))
        else:
            self.lines.write_text("")
        self.summary.write_text(json.dumps([c.metrics() for c in self.curves], indent=1))

    def has(self, name: str, seed: int) -> bool:
        return any(c.name == name and c.seed == seed for c in self.curves)

    def add(self, curve: Curve) -> None:
        with self.lines.open("a") as file:
            file.write(json.dumps(asdict(curve)) + "\n")
        self.curves.append(curve)
        self.summary.write_text(json.dumps([c.metrics() for c in self.curves], indent=1))


class Stopped(Exception):
    """``--stop-after`` runs are done: the study ends early, its results on disk."""


def autoencoders(seed: int, data: Data, args: Arguments, ledger: Ledger) -> tuple[DigitAE, DigitAE]:
    """(trained, untrained) AEs of a seed; the trained one is trained once and kept in ``--out`` for --resume."""
    torch.manual_seed(seed)
    untrained = DigitAE()
    # The scratch VAE starts from the very weights the AE started from: pre-training is the only difference.
    ae = DigitAE()
    ae.load_state_dict(untrained.state_dict())
    untrained.eval()
    weights = args.out / f"ae_seed{seed}.pt"
    if ledger.has("AE", seed) and weights.exists():
        ae.load_state_dict(torch.load(weights))
        return ae.eval(), untrained
    curve = train_ae(ae, data, seed, args)
    torch.save(ae.state_dict(), weights)
    if not ledger.has("AE", seed):
        finished(ledger, curve, args)
    return ae, untrained


def finished(ledger: Ledger, curve: Curve, args: Arguments) -> None:
    ledger.add(curve)
    if not args.quiet:
        values = curve.neg_elbo or curve.recon
        print(
            f"seed {curve.seed} {curve.name}: held-out {'-ELBO' if curve.neg_elbo else 'reconstruction'} "
            f"{values[0]:.2f} -> {values[-1]:.2f} nats, {curve.wall_seconds:.1f} s",
            flush=True,
        )
    args.budget.spend()


def run_seed(seed: int, data: Data, args: Arguments, ledger: Ledger) -> None:
    """Train the AE, then every start's VAE that the ledger does not hold yet, for one seed."""
    pending = [s for s in STARTS if not ledger.has(s.name, seed)]
    if not pending and ledger.has("AE", seed):
        return
    ae, untrained = autoencoders(seed, data, args, ledger)
    with progress_bar(args.quiet) as progress:
        for start in pending:
            curve = train_vae(ae if start.pretrained else untrained, start, data, seed, args, progress)
            finished(ledger, curve, args)


# --- summaries -------------------------------------------------------------------------------------------


def mean_sd(values: Sequence[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def epochs_to_reach(curve: Sequence[float], target: float) -> int | None:
    """First epoch whose held-out -ELBO is at or below ``target`` (0: already before fine-tuning)."""
    return next((epoch for epoch, value in enumerate(curve) if value <= target), None)


def epoch_summary(reached: Sequence[int | None], epochs: int) -> str:
    """Mean ± sd of the epochs with the per-seed values; a seed that never got there shows as ">epochs"."""
    per_seed = ", ".join(f">{epochs}" if e is None else str(e) for e in reached)
    hit = [e for e in reached if e is not None]
    return f"{mean_sd(hit)} ({per_seed})" if len(hit) == len(reached) else f"({per_seed})"


def by_name(curves: Sequence[Curve]) -> dict[str, list[Curve]]:
    grouped: dict[str, list[Curve]] = {}
    for curve in sorted(curves, key=lambda c: c.seed):
        grouped.setdefault(curve.name, []).append(curve)
    return grouped


def near_epochs(runs: Sequence[Curve], references: Sequence[Curve]) -> list[int | None]:
    """Per seed: the first epoch within NEAR_NATS of the reference run's final -ELBO."""
    return [epochs_to_reach(r.neg_elbo, ref.neg_elbo[-1] + NEAR_NATS) for r, ref in zip(runs, references, strict=True)]


def headline_table(grouped: dict[str, list[Curve]], epochs: int) -> str:
    """Every start against the scratch VAE's final -ELBO (same seed, fxvae defaults, all epochs)."""
    reference = grouped[REFERENCE.name]
    finals = [r.neg_elbo[-1] for r in reference]
    rows = [
        f"| start | -ELBO epoch 0 | epoch 0 / scratch final | -ELBO epoch 1 / {TARGET_EPOCHS} "
        f"| epochs to within {NEAR_NATS:g} nat of scratch final "
        "| -ELBO final | reconstruction final | KL final | active dims: epoch 0 / final | convert s |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for start in HEADLINE:
        runs = grouped[start.name]
        last = len(runs[0].neg_elbo) - 1
        ratio = [r.neg_elbo[0] / f for r, f in zip(runs, finals, strict=True)]
        rows.append(
            f"| {start.name} | {mean_sd([r.neg_elbo[0] for r in runs])} | {mean_sd(ratio, 2)} "
            f"| {statistics.mean(r.neg_elbo[min(1, last)] for r in runs):.2f} "
            f"/ {statistics.mean(r.neg_elbo[min(TARGET_EPOCHS, last)] for r in runs):.2f} "
            f"| {epoch_summary(near_epochs(runs, reference), epochs)} | {mean_sd([r.neg_elbo[-1] for r in runs], 2)} "
            f"| {mean_sd([r.recon[-1] for r in runs])} | {mean_sd([r.kl[-1] for r in runs])} "
            f"| {mean_sd([active(r, 0) for r in runs])} / {mean_sd([active(r, -1) for r in runs])} "
            f"| {mean_sd([r.convert_seconds for r in runs], 2)} |"
        )
    return "\n".join(rows)


def active(curve: Curve, epoch: int) -> float:
    """How many latent dimensions carry at least ACTIVE_NATS of held-out KL after ``epoch``."""
    return float(sum(v >= ACTIVE_NATS for v in curve.kl_dims[epoch]))


def dimensions_table(grouped: dict[str, list[Curve]]) -> str:
    """Where the KL sits: per-dimension KL sorted from largest, mean over seeds, at a few epochs."""
    rows = [
        "| start | epoch | -ELBO | reconstruction | KL | KL per latent dimension, largest first |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for start in (REFERENCE, PLAIN, CALIBRATED[0], IDEAS[0]):
        runs = grouped[start.name]
        last = len(runs[0].neg_elbo) - 1
        for epoch in sorted({0, min(1, last), min(TARGET_EPOCHS, last), last}):
            ranked = torch.tensor([sorted(r.kl_dims[epoch], reverse=True) for r in runs]).mean(0)
            rows.append(
                f"| {start.name} | {epoch} | {statistics.mean(r.neg_elbo[epoch] for r in runs):.2f} "
                f"| {statistics.mean(r.recon[epoch] for r in runs):.2f} "
                f"| {statistics.mean(r.kl[epoch] for r in runs):.2f} "
                f"| {' '.join(f'{v:.2f}' for v in ranked.tolist())} |"
            )
    return "\n".join(rows)


def targets_text(grouped: dict[str, list[Curve]]) -> str:
    """Which calibrated starts meet the targets, on the mean over seeds (epochs: every seed)."""
    reference = grouped[REFERENCE.name]
    final = statistics.mean(r.neg_elbo[-1] for r in reference)
    lines = []
    for start in (*CALIBRATED, *IDEAS):
        runs = grouped[start.name]
        ratio = statistics.mean(r.neg_elbo[0] for r in runs) / final
        fast = sum(e is not None and e <= TARGET_EPOCHS for e in near_epochs(runs, reference))
        lines.append(
            f"- {start.name}: epoch 0 at {ratio:.2f}x scratch final "
            f"({'meets' if ratio <= TARGET_RATIO else 'misses'} <= {TARGET_RATIO:g}x); within {NEAR_NATS:g} nat "
            f"in <= {TARGET_EPOCHS} epochs for {fast} of {len(runs)} seeds"
        )
    return "\n".join(lines)


def grid_table(grouped: dict[str, list[Curve]], epochs: int) -> str:
    """Per (log-sigma init, schedule): the plain warm start against the scratch VAE of the same setting."""
    rows = [
        "| log_sigma_init | KL schedule | scratch final -ELBO | warm start: epochs to reach it (per seed) "
        f"| epochs to within {NEAR_NATS:g} nat of it: warm start | same: scratch | -ELBO final: warm start "
        "| reconstruction / KL final: warm | same: scratch |",
        "| ---: | --- | ---: | --- | --- | --- | ---: | --- | --- |",
    ]
    for init in LOG_SIGMA_INITS:
        for schedule in SCHEDULES:
            warm = grouped[Start(True, init, schedule=schedule).name]
            scratch = grouped[Start(False, init, schedule=schedule).name]
            targets = [s.neg_elbo[-1] for s in scratch]
            reached = [epochs_to_reach(w.neg_elbo, t) for w, t in zip(warm, targets, strict=True)]
            rows.append(
                f"| {init:g} | {schedule} | {mean_sd(targets, 2)} | {epoch_summary(reached, epochs)} "
                f"| {epoch_summary(near_epochs(warm, scratch), epochs)} "
                f"| {epoch_summary(near_epochs(scratch, scratch), epochs)} "
                f"| {mean_sd([w.neg_elbo[-1] for w in warm], 2)} "
                f"| {mean_sd([w.recon[-1] for w in warm])} / {mean_sd([w.kl[-1] for w in warm])} "
                f"| {mean_sd([s.recon[-1] for s in scratch])} / {mean_sd([s.kl[-1] for s in scratch])} |"
            )
    return "\n".join(rows)


def write_report(
    out: Path, curves: Sequence[Curve], args: Arguments, command: str, total_s: float, floor: float
) -> None:
    grouped = by_name(curves)
    ae_runs = grouped["AE"]
    vae_runs = [c for c in curves if c.name != "AE"]
    epoch_s = statistics.median(s for c in vae_runs for s in c.seconds[1:])
    threads = sorted({c.threads for c in curves})
    text = f"""# AE vs VAE on scikit-learn digits: warm starts, calibrated starts, scratch

Command: `{command}`

Time: {total_s:.0f} s in this invocation; {sum(c.wall_seconds for c in curves):.0f} s summed over the
{len(curves)} runs' wall times.

Machine: {platform.processor() or platform.machine()}, torch threads {threads};
Python {platform.python_version()}, torch {torch.__version__}, fxvae {fxvae.__version__}.

Data: `sklearn.datasets.load_digits`, pixels / 16 in [0, 1], {HELD_OUT} held-out images (fixed split,
seed {SPLIT_SEED}), the rest for training and calibration. Model: MLP 64-256-128-{LATENT_DIM}-128-256-64,
Adam lr {LEARNING_RATE}, batch {BATCH_SIZE}; AE {args.ae_epochs} epochs, every VAE {args.epochs} epochs;
seeds {list(args.seed_list)}; max steps per epoch: {args.max_steps or "all"}.
KL warm-up: beta = epoch / {WARMUP_EPOCHS} up to 1. One-cycle lr: {LEARNING_RATE} -> {PEAK_LEARNING_RATE} over
{ONE_CYCLE_RISE_STEPS} steps, cosine back to {LEARNING_RATE} by the end of epoch {ONE_CYCLE_EPOCHS}.
Frozen encoder: the AE's encoder and the mu head do not train in the first {FROZEN_EPOCHS} epoch(s).
Decoder warm-up: the decoder's lr rises linearly from 0 to {LEARNING_RATE} over the first epoch.

Likelihood: Bernoulli over the 64 pixels with the intensities as targets; all numbers are held-out nats per
image, mean ± sd over seeds; -ELBO = reconstruction + KL with beta = 1 (whatever the training schedule),
estimated with {ELBO_SAMPLES} fixed posterior draws per image. Reconstruction floor (binary entropy of the
held-out targets): {floor:.1f} nats per image. Median training time per VAE epoch: {epoch_s:.3f} s.

AE held-out reconstruction (z deterministic): {mean_sd([r.recon[-1] for r in ae_runs])} nats per image
after {args.ae_epochs} epochs ({mean_sd([sum(r.seconds) for r in ae_runs], 2)} s of training).

## Every start against scratch

The reference is `{REFERENCE.name}` (scratch training with fxvae's defaults) after all {args.epochs} epochs,
same seed. Epoch 0 is the converted model before any training. Per-seed values in brackets; >{args.epochs}:
never got there.

{headline_table(grouped, args.epochs)}

Targets (epoch-0 -ELBO <= {TARGET_RATIO:g}x scratch final; within {NEAR_NATS:g} nat in <= {TARGET_EPOCHS} epochs):

{targets_text(grouped)}

## Where the KL sits

Held-out KL of each latent dimension (KL >= {ACTIVE_NATS:g} nat counts as an active dimension above), sorted
from largest within each seed, then averaged over seeds.

{dimensions_table(grouped)}

## Plain warm start vs scratch per log-sigma init and KL schedule

Each warm start against the scratch run of the same seed, log-sigma init and schedule.

{grid_table(grouped, args.epochs)}

![curves](compare_curves.png)
![terms](compare_terms.png)
![samples](compare_samples.png)
![reconstructions](compare_recon.png)
"""
    (out / "report.md").write_text(text)


# --- figures ---------------------------------------------------------------------------------------------

STYLE: dict[str, dict[str, object]] = {
    REFERENCE.name: {"color": "tab:orange", "linewidth": 2.2},
    PLAIN.name: {"color": "tab:blue", "linewidth": 2.2},
    CALIBRATED[0].name: {"color": "tab:green", "linewidth": 2.2},
    CALIBRATED[1].name: {"color": "tab:olive"},
    CALIBRATED[2].name: {"color": "tab:cyan"},
    CALIBRATED[3].name: {"color": "tab:green", "linestyle": "--"},
    CALIBRATED[4].name: {"color": "tab:olive", "linestyle": "--"},
    CALIBRATED[5].name: {"color": "tab:cyan", "linestyle": "--"},
    IDEAS[0].name: {"color": "tab:red"},
    IDEAS[1].name: {"color": "tab:purple"},
    IDEAS[2].name: {"color": "tab:brown"},
    IDEAS[3].name: {"color": "tab:blue", "linestyle": ":"},
    IDEAS[4].name: {"color": "tab:orange", "linestyle": ":"},
}
PANELS = (
    ("calibrated starts", (REFERENCE, PLAIN, *CALIBRATED)),
    ("ways to fine-tune faster", (REFERENCE, PLAIN, CALIBRATED[0], *IDEAS)),
)


def plot_band(axis: plt.Axes, runs: Sequence[Curve], values: Callable[[Curve], list[float]], **style) -> None:
    """Mean over seeds as a line, min-max over seeds as a band."""
    table = torch.tensor([values(r) for r in runs]).numpy()
    epochs = range(table.shape[1])
    axis.plot(epochs, table.mean(0), **style)
    if len(runs) > 1:
        axis.fill_between(epochs, table.min(0), table.max(0), alpha=0.15, color=style["color"])


def plot_curves(out: Path, grouped: dict[str, list[Curve]], floor: float) -> None:
    """Held-out -ELBO per epoch, above the reconstruction floor: all epochs (top) and the first ones (bottom).

    Plotted above the floor: it is common to every run and would flatten the differences that matter.
    """
    figure, axes = plt.subplots(2, 2, figsize=(13, 9), sharey="row", layout="constrained")
    near = statistics.mean(r.neg_elbo[-1] for r in grouped[REFERENCE.name]) + NEAR_NATS - floor
    epochs = len(grouped[REFERENCE.name][0].neg_elbo) - 1
    for column, (title, starts) in enumerate(PANELS):
        for row in range(2):
            axis = axes[row][column]
            for start in starts:
                runs = grouped[start.name]
                plot_band(axis, runs, lambda r: [v - floor for v in r.neg_elbo], label=start.name, **STYLE[start.name])
            axis.axhline(near, color="black", linestyle=":", label=f"scratch final + {NEAR_NATS:g} nat (mean)")
            axis.set_yscale("log")
            axis.grid(alpha=0.3, which="both")
            axis.set_xlabel("epoch (0 = before VAE training)")
            if row == 0:
                axis.set_title(f"{title}: all epochs")
            else:
                shown = min(epochs, 12)
                axis.set_xlim(0, shown)
                axis.set_ylim(near * 0.85, near * 2.2)
                axis.axvline(TARGET_EPOCHS, color="gray", linestyle="--", linewidth=0.8)
                axis.set_title(f"{title}: first {shown} epochs (dashed: epoch {TARGET_EPOCHS})")
        axes[0][column].legend(fontsize=7, loc="upper right")
    for row in range(2):
        axes[row][0].set_ylabel("-ELBO - floor, nats / image (log scale)")
    figure.suptitle(
        f"Held-out negative ELBO above the reconstruction floor ({floor:.1f} nats / image): "
        "mean over seeds, band = min-max"
    )
    figure.savefig(out / "compare_curves.png", dpi=100)
    plt.close(figure)


def plot_terms(out: Path, grouped: dict[str, list[Curve]], floor: float) -> None:
    """Reconstruction and KL per epoch, to show which term each start's gap to scratch comes from."""
    figure, (recon_axis, kl_axis) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    for start in (REFERENCE, PLAIN, CALIBRATED[0], CALIBRATED[3], IDEAS[0]):
        runs = grouped[start.name]
        plot_band(recon_axis, runs, lambda r: r.recon, label=start.name, **STYLE[start.name])
        plot_band(kl_axis, runs, lambda r: r.kl, label=start.name, **STYLE[start.name])
    ae_final = statistics.mean(r.recon[-1] for r in grouped["AE"])
    recon_axis.axhline(ae_final, color="black", linestyle=":", label="trained AE (deterministic z)")
    recon_axis.axhline(floor, color="gray", linestyle="-.", label="floor: entropy of the targets")
    for axis, title in ((recon_axis, "reconstruction E_q[-log p(x|z)]"), (kl_axis, "KL(q(z|x) || N(0, I))")):
        axis.set_title(f"Held-out {title}")
        axis.set_xlabel("epoch (0 = before VAE training)")
        axis.set_ylabel("nats / image (log scale)")
        axis.set_yscale("log")
        axis.grid(alpha=0.3, which="both")
    recon_axis.legend(fontsize=7)
    figure.savefig(out / "compare_terms.png", dpi=100)
    plt.close(figure)


def show_digits(axes: Sequence[plt.Axes], images: Sequence[Sequence[float]], label: str | None) -> None:
    for axis, image in zip(axes, images, strict=True):
        axis.imshow(torch.tensor(image).reshape(8, 8).numpy(), cmap="gray_r", vmin=0.0, vmax=1.0)
        axis.set_xticks([])
        axis.set_yticks([])
    if label:
        axes[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)


def digit_grid(rows: Sequence[tuple[str, Sequence[Sequence[Sequence[float]]]]], titles: Sequence[str]) -> plt.Figure:
    """One row per model; one block of SHOWN digits per title, side by side."""
    blocks, label_inches = len(titles), 3.4
    width = blocks * SHOWN * 0.62 + label_inches
    figure = plt.figure(figsize=(width, len(rows) * 0.68 + 0.6))
    grid = figure.add_gridspec(
        len(rows),
        blocks * (SHOWN + 1) - 1,
        left=label_inches / width,
        right=0.995,
        top=0.88,
        bottom=0.01,
        wspace=0.05,
        hspace=0.08,
    )
    for block, title in enumerate(titles):
        columns = slice(block * (SHOWN + 1), block * (SHOWN + 1) + SHOWN)
        for index, (label, images) in enumerate(rows):
            axes = [figure.add_subplot(grid[index, c]) for c in range(columns.start, columns.stop)]
            show_digits(axes, images[block], label if block == 0 else None)
            if index == 0:
                axes[SHOWN // 2].set_title(title, fontsize=9)
    return figure


def plot_samples(out: Path, grouped: dict[str, list[Curve]]) -> None:
    """Decoded prior samples z ~ N(0, I) before and after training (first seed): what each model generates."""
    starts = (REFERENCE, PLAIN, CALIBRATED[0], CALIBRATED[2], CALIBRATED[3], IDEAS[0])
    rows = [
        (start.name, (grouped[start.name][0].samples_start, grouped[start.name][0].samples_end)) for start in starts
    ]
    figure = digit_grid(rows, ("epoch 0 (as converted; warm's row is the AE's decoder)", "after training"))
    figure.suptitle("Samples from the prior: the same z ~ N(0, I) in every row, decoded (Bernoulli means)", fontsize=10)
    figure.savefig(out / "compare_samples.png", dpi=100)
    plt.close(figure)


def plot_reconstructions(out: Path, grouped: dict[str, list[Curve]], held_out: torch.Tensor) -> None:
    """Held-out digits and their reconstructions after training (first seed; eval mode, z = mu)."""
    rows = [("held-out digit", (pixels(held_out[:SHOWN]),)), ("AE", (grouped["AE"][0].recon_end,))]
    rows += [(s.name, (grouped[s.name][0].recon_end,)) for s in (REFERENCE, PLAIN, CALIBRATED[0], CALIBRATED[3])]
    figure = digit_grid(rows, ("held-out reconstructions after training (eval mode, z = mu)",))
    figure.savefig(out / "compare_recon.png", dpi=100)
    plt.close(figure)


# --- command line ----------------------------------------------------------------------------------------


def progress_bar(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs"),
        TimeElapsedColumn(),
        disable=quiet,
    )


@dataclass
class Budget:
    """How many more runs this invocation may finish (``--stop-after``); None: all of them."""

    left: int | None

    def spend(self) -> None:
        if self.left is not None:
            self.left -= 1
            if self.left <= 0:
                raise Stopped


@dataclass(frozen=True)
class Arguments:
    out: Path
    seeds: int
    epochs: int
    ae_epochs: int
    max_steps: int | None
    threads: int
    resume: bool
    stop_after: int | None
    quiet: bool
    budget: Budget = field(default_factory=lambda: Budget(None))

    @property
    def seed_list(self) -> range:
        return range(self.seeds)


def parse(argv: Sequence[str] | None) -> Arguments:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for the report and PNGs")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0 .. N-1")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of every VAE run")
    parser.add_argument("--ae-epochs", type=int, default=100, help="epochs of autoencoder training")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch (tests)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: measured 10x+ faster than 2 on 2 shared cores)",
    )
    parser.add_argument("--resume", action="store_true", help="keep --out's metrics.jsonl and skip its runs")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after this many runs (tests)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    args = vars(parser.parse_args(argv))
    if args["threads"] < 1:
        parser.error(f"--threads must be at least 1, got {args['threads']}")
    return Arguments(**args, budget=Budget(args["stop_after"]))


def main(argv: Sequence[str] | None = None) -> Path | None:
    """Run the comparison and write its outputs; returns the report's path (None if ``--stop-after`` hit)."""
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()} (--threads)", flush=True)
    try:
        return study(args, argv)
    finally:
        torch.set_num_threads(previous)  # main is also called in-process (tests): leave torch as it was


def study(args: Arguments, argv: Sequence[str] | None) -> Path | None:
    began = time.perf_counter()
    train, held_out = load_split()
    data = Data(train=train, held_out=held_out)
    ledger = Ledger(args.out, args.resume)
    try:
        for seed in args.seed_list:
            run_seed(seed, data, args, ledger)
    except Stopped:
        print(f"stopped after --stop-after {args.stop_after} runs; --resume finishes the study", flush=True)
        return None
    curves = [c for c in ledger.curves if c.seed in args.seed_list]
    grouped = by_name(curves)
    floor = target_entropy(held_out)
    plot_curves(args.out, grouped, floor)
    plot_terms(args.out, grouped, floor)
    plot_samples(args.out, grouped)
    plot_reconstructions(args.out, grouped, held_out)
    command = " ".join(["python examples/compare_ae_vae.py", *(sys.argv[1:] if argv is None else argv)])
    write_report(args.out, curves, args, command, time.perf_counter() - began, floor)
    return args.out / "report.md"


if __name__ == "__main__":
    main()
