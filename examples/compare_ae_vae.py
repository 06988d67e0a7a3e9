"""AE vs VAE on real digits: fine-tune a VAE converted from a trained AE, or train the same VAE from scratch?

The question fxvae answers is "I have trained an autoencoder; can I turn it into a VAE with the same inputs
and outputs?". This example measures what the conversion buys once the VAE is trained with its own loss:

1. train a small MLP autoencoder on scikit-learn's 8x8 digits (1,797 images, shipped with the package);
2. convert it with :func:`fxvae.convert` and fine-tune the VAE with reconstruction + KL (warm start);
3. train the identical VAE architecture from scratch: ``fxvae.convert`` of the same AE at its initial,
   untrained weights, with the same optimiser, batches and epoch budget;
4. for both, compare the log-sigma head's start (``log_sigma_init`` 0 and -3) and the KL weight schedule
   (beta = 1 throughout, or a linear warm-up 0 -> 1 over the first epochs).

Likelihood: p(x | z) is a product of Bernoulli distributions over the 64 pixels, with the pixel intensities
in [0, 1] as (soft) targets; the decoder outputs logits. Reconstruction error, KL and the negative ELBO are
in nats per image on the held-out split, the ELBO estimated with a fixed set of posterior samples so that
curves are comparable across epochs and runs. With soft targets the reconstruction term cannot reach 0:
its floor is the targets' own binary entropy (:func:`target_entropy`), so the numbers compare runs; they
are not log-likelihoods of the images.

Run (the full 3-seed comparison; 174 s measured on 2 shared CPU cores, longer when they are busy):

    python examples/compare_ae_vae.py --out results/

Writes ``metrics.json``, ``report.md`` and ``compare_{curves,terms,recon,samples}.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
WARMUP_EPOCHS = 10
NEAR_NATS = 1.0  # "close to converged": within this many nats per image of the scratch VAE's final -ELBO
LOG_SIGMA_INITS = (0.0, -3.0)
SCHEDULES = ("constant", "warm-up")
STARTS = ("warm", "scratch")
SHOWN = 10  # held-out digits in the reconstruction figure; prior samples per model in the samples figure


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

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel intensities (Bernoulli means) for latents ``z``."""
        return torch.sigmoid(self.decoder(z))


@dataclass
class Curve:
    """Held-out metrics of one training run, one entry per epoch; entry 0 is before the first step."""

    name: str
    seed: int
    recon: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    neg_elbo: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    """Training wall time of each epoch (evaluation excluded); 0 for entry 0."""


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


def batches(train: torch.Tensor, generator: torch.Generator, max_steps: int | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(len(train), generator=generator)
    for step, start in enumerate(range(0, len(train), BATCH_SIZE)):
        if max_steps is not None and step >= max_steps:
            return
        yield train[order[start : start + BATCH_SIZE]]


def beta_at(epoch: int, schedule: str) -> float:
    """KL weight during ``epoch`` (1-based): the warm-up reaches beta = 1 in epoch ``WARMUP_EPOCHS``."""
    return min(1.0, epoch / WARMUP_EPOCHS) if schedule == "warm-up" else 1.0


@torch.no_grad()
def evaluate_vae(vae: fx.GraphModule, kl: fxvae.KLDivergence, held_out: torch.Tensor) -> tuple[float, float]:
    """(reconstruction, KL) on the held-out split, in nats per image.

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
    vae.train(was_training)
    return recon, divergence


def train_ae(
    ae: DigitAE, train: torch.Tensor, held_out: torch.Tensor, epochs: int, seed: int, args: Arguments
) -> Curve:
    """Train the autoencoder on reconstruction alone; the curve has no KL and no ELBO."""
    curve = Curve(name="AE", seed=seed)
    optimiser = torch.optim.Adam(ae.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)

    def record(seconds: float) -> None:
        with torch.no_grad():
            curve.recon.append(bernoulli_nll(ae(held_out), held_out).item())
        curve.seconds.append(seconds)

    record(0.0)
    with progress_bar(args.quiet) as progress:
        task = progress.add_task(f"seed {seed} AE", total=epochs)
        for _ in range(epochs):
            began = time.perf_counter()
            for x in batches(train, generator, args.max_steps):
                loss = bernoulli_nll(ae(x), x)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            record(time.perf_counter() - began)
            progress.advance(task)
    ae.eval()
    return curve


def train_vae(
    vae: fx.GraphModule,
    kl: fxvae.KLDivergence,
    train: torch.Tensor,
    held_out: torch.Tensor,
    schedule: str,
    name: str,
    seed: int,
    args: Arguments,
    progress: Progress,
) -> Curve:
    """Fine-tune or train ``vae`` on reconstruction + beta * KL; the curve reports beta = 1 (the ELBO)."""
    curve = Curve(name=name, seed=seed)
    optimiser = torch.optim.Adam(vae.parameters(), lr=LEARNING_RATE)
    # The same batch order and the same eps stream for every run of a seed: runs differ only in what
    # the comparison is about (start, log-sigma init, schedule).
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    def record(seconds: float) -> None:
        recon, divergence = evaluate_vae(vae, kl, held_out)
        curve.recon.append(recon)
        curve.kl.append(divergence)
        curve.neg_elbo.append(recon + divergence)
        curve.seconds.append(seconds)

    record(0.0)
    task = progress.add_task(f"seed {seed} {name}", total=args.epochs)
    vae.train()
    for epoch in range(1, args.epochs + 1):
        beta = beta_at(epoch, schedule)
        began = time.perf_counter()
        for x in batches(train, generator, args.max_steps):
            loss = bernoulli_nll(vae(x), x) + beta * kl()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        record(time.perf_counter() - began)
        progress.advance(task)
    vae.eval()
    return curve


def run_name(start: str, log_sigma_init: float, schedule: str) -> str:
    return f"{start}, log_sigma_init={log_sigma_init:g}, {schedule}"


@dataclass
class SeedResult:
    """Everything one seed produced: the curves, and the trained models the figures need."""

    curves: list[Curve]
    ae: DigitAE
    vaes: dict[str, fx.GraphModule]


def run_seed(seed: int, train: torch.Tensor, held_out: torch.Tensor, args: Arguments) -> SeedResult:
    """Train the AE, then every (start, log-sigma init, schedule) VAE, for one seed."""
    torch.manual_seed(seed)
    untrained = DigitAE()
    # The scratch VAE starts from the very weights the AE started from: pre-training is the only difference.
    ae = copy.deepcopy(untrained)
    ae_curve = train_ae(ae, train, held_out, args.ae_epochs, seed, args)
    untrained.eval()
    curves, vaes = [ae_curve], {}
    with progress_bar(args.quiet) as progress:
        for start in STARTS:
            base = ae if start == "warm" else untrained
            for log_sigma_init in LOG_SIGMA_INITS:
                for schedule in SCHEDULES:
                    name = run_name(start, log_sigma_init, schedule)
                    vae, kl = fxvae.convert(base, held_out[:BATCH_SIZE], log_sigma_init=log_sigma_init)
                    curves.append(train_vae(vae, kl, train, held_out, schedule, name, seed, args, progress))
                    vaes[name] = vae
    return SeedResult(curves=curves, ae=ae, vaes=vaes)


def decoder_of(vae: fx.GraphModule) -> DigitAE:
    """A DigitAE carrying the VAE's trained weights, so that its ``decode`` maps prior samples to digits.

    The VAE keeps the AE's state-dict keys except the bottleneck layer's (now the mu head's) and adds the
    log-sigma head; mapping the keys back gives an AE checkpoint of the fine-tuned weights.
    """
    recipe = fxvae.conversion(vae)
    back = {vae_key: ae_key for ae_key, vae_key in recipe.key_map.items()}
    state = {back.get(k, k): v for k, v in vae.state_dict().items() if k not in recipe.new_keys}
    model = DigitAE()
    model.load_state_dict(state)
    return model.eval()


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
    for curve in curves:
        grouped.setdefault(curve.name, []).append(curve)
    return grouped


def final_table(grouped: dict[str, list[Curve]]) -> str:
    rows = [
        "| run | -ELBO epoch 0 | -ELBO final | reconstruction final | KL final | s / epoch |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in grouped.items():
        if name == "AE":
            continue
        rows.append(
            f"| {name} | {mean_sd([r.neg_elbo[0] for r in runs])} "
            f"| {mean_sd([r.neg_elbo[-1] for r in runs])} "
            f"| {mean_sd([r.recon[-1] for r in runs])} | {mean_sd([r.kl[-1] for r in runs])} "
            f"| {mean_sd([statistics.mean(r.seconds[1:]) for r in runs], 3)} |"
        )
    return "\n".join(rows)


def reach_table(grouped: dict[str, list[Curve]], epochs: int) -> str:
    """Per (log-sigma init, schedule): epochs the warm start needs to match the scratch VAE's final -ELBO."""
    rows = [
        "| log_sigma_init | schedule | scratch final -ELBO | warm start: epochs to reach it (per seed) "
        "| warm start: time to reach it, s | scratch: time for all epochs, s "
        f"| epochs to within {NEAR_NATS:g} nat of it: warm start | same: scratch |",
        "| ---: | --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for log_sigma_init in LOG_SIGMA_INITS:
        for schedule in SCHEDULES:
            warm = grouped[run_name("warm", log_sigma_init, schedule)]
            scratch = grouped[run_name("scratch", log_sigma_init, schedule)]
            targets = [s.neg_elbo[-1] for s in scratch]
            reached = [epochs_to_reach(w.neg_elbo, t) for w, t in zip(warm, targets, strict=True)]
            times = [sum(w.seconds[: e + 1]) for w, e in zip(warm, reached, strict=True) if e is not None]
            near = [t + NEAR_NATS for t in targets]
            near_warm = [epochs_to_reach(w.neg_elbo, t) for w, t in zip(warm, near, strict=True)]
            near_scratch = [epochs_to_reach(s.neg_elbo, t) for s, t in zip(scratch, near, strict=True)]
            rows.append(
                f"| {log_sigma_init:g} | {schedule} | {mean_sd(targets)} | {epoch_summary(reached, epochs)} "
                f"| {mean_sd(times, 2) if times else '-'} | {mean_sd([sum(s.seconds) for s in scratch], 2)} "
                f"| {epoch_summary(near_warm, epochs)} | {epoch_summary(near_scratch, epochs)} |"
            )
    return "\n".join(rows)


def write_report(
    out: Path, curves: Sequence[Curve], args: Arguments, command: str, total_s: float, floor: float
) -> None:
    grouped = by_name(curves)
    ae_runs = grouped["AE"]
    text = f"""# AE vs VAE on scikit-learn digits: warm start vs scratch

Command: `{command}` ({total_s:.0f} s in all)

Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads;
Python {platform.python_version()}, torch {torch.__version__}, fxvae {fxvae.__version__}.

Data: `sklearn.datasets.load_digits`, pixels / 16 in [0, 1], {HELD_OUT} held-out images (fixed split,
seed {SPLIT_SEED}), the rest for training. Model: MLP 64-256-128-{LATENT_DIM}-128-256-64,
Adam lr {LEARNING_RATE}, batch {BATCH_SIZE}; AE {args.ae_epochs} epochs, every VAE {args.epochs} epochs;
seeds {list(args.seed_list)}; max steps per epoch: {args.max_steps or "all"}.
Warm-up: beta = epoch / {WARMUP_EPOCHS} up to 1.

Likelihood: Bernoulli over the 64 pixels with the intensities as targets; all numbers are held-out nats per
image, mean ± sd over seeds; -ELBO = reconstruction + KL with beta = 1 (whatever the training schedule),
estimated with {ELBO_SAMPLES} fixed posterior draws per image. Reconstruction floor (binary entropy of the
held-out targets): {floor:.1f} nats per image.

AE held-out reconstruction (z deterministic): {mean_sd([r.recon[-1] for r in ae_runs])} nats per image
after {args.ae_epochs} epochs ({mean_sd([sum(r.seconds) for r in ae_runs], 2)} s of training).

## Final held-out metrics

{final_table(grouped)}

## Epochs for the warm start to reach the scratch VAE's final -ELBO

Epoch 0 is the converted AE before any fine-tuning; the reference is the scratch run of the same seed,
log-sigma init and schedule after all {args.epochs} epochs. Times are training time (evaluation excluded)
and do not count the AE's own training.

{reach_table(grouped, args.epochs)}

![curves](compare_curves.png)
![terms](compare_terms.png)
![reconstructions](compare_recon.png)
![samples](compare_samples.png)
"""
    (out / "report.md").write_text(text)


# --- figures ---------------------------------------------------------------------------------------------


def plot_band(axis: plt.Axes, runs: Sequence[Curve], values: Callable[[Curve], list[float]], **style) -> None:
    """Mean over seeds as a line, min-max over seeds as a band."""
    table = torch.tensor([values(r) for r in runs]).numpy()
    epochs = range(table.shape[1])
    axis.plot(epochs, table.mean(0), **style)
    if len(runs) > 1:
        axis.fill_between(epochs, table.min(0), table.max(0), alpha=0.2, color=style["color"])


def plot_curves(out: Path, grouped: dict[str, list[Curve]], floor: float) -> None:
    """Held-out -ELBO per epoch: one panel per (log-sigma init, schedule), warm start against scratch.

    Plotted above the reconstruction floor: the floor is common to every run and would flatten the
    differences that matter into a few percent of the axis.
    """
    figure, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharex=True, sharey=True, layout="constrained")
    for row, log_sigma_init in enumerate(LOG_SIGMA_INITS):
        for column, schedule in enumerate(SCHEDULES):
            axis = axes[row][column]
            for start, color in zip(STARTS, ("tab:blue", "tab:orange"), strict=True):
                runs = grouped[run_name(start, log_sigma_init, schedule)]
                label = "warm start (converted AE)" if start == "warm" else "scratch (converted untrained AE)"
                plot_band(axis, runs, lambda r: [v - floor for v in r.neg_elbo], color=color, label=label)
            scratch = grouped[run_name("scratch", log_sigma_init, schedule)]
            final = statistics.mean(r.neg_elbo[-1] for r in scratch)
            axis.axhline(final - floor, color="tab:orange", linestyle=":", label="scratch final (mean)")
            axis.set_title(f"log_sigma_init = {log_sigma_init:g}, KL weight {schedule}")
            axis.set_yscale("log")
            axis.grid(alpha=0.3, which="both")
            if row == 1:
                axis.set_xlabel("epoch (0 = before VAE training)")
            if column == 0:
                axis.set_ylabel("-ELBO - floor, nats / image (log scale)")
    axes[0][0].legend()
    figure.suptitle(
        f"Held-out negative ELBO above the reconstruction floor ({floor:.1f} nats / image): "
        "mean over seeds, band = min-max"
    )
    figure.savefig(out / "compare_curves.png", dpi=110)
    plt.close(figure)


def plot_terms(out: Path, grouped: dict[str, list[Curve]], floor: float) -> None:
    """Reconstruction and KL per epoch for every run, to show which term the -ELBO gap comes from."""
    figure, (recon_axis, kl_axis) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    colors = {
        (start, init): color
        for (start, init), color in zip(
            [(s, i) for s in STARTS for i in LOG_SIGMA_INITS],
            ("tab:blue", "tab:cyan", "tab:orange", "tab:red"),
            strict=True,
        )
    }
    for start in STARTS:
        for log_sigma_init in LOG_SIGMA_INITS:
            for schedule, linestyle in zip(SCHEDULES, ("-", "--"), strict=True):
                name = run_name(start, log_sigma_init, schedule)
                style = {"color": colors[start, log_sigma_init], "linestyle": linestyle, "label": name}
                plot_band(recon_axis, grouped[name], lambda r: r.recon, **style)
                plot_band(kl_axis, grouped[name], lambda r: r.kl, **style)
    ae = grouped["AE"]
    ae_final = statistics.mean(r.recon[-1] for r in ae)
    recon_axis.axhline(ae_final, color="black", linestyle=":", label="trained AE (deterministic z)")
    recon_axis.axhline(floor, color="gray", linestyle="-.", label="floor: entropy of the targets")
    for axis, title in ((recon_axis, "reconstruction E_q[-log p(x|z)]"), (kl_axis, "KL(q(z|x) || N(0, I))")):
        axis.set_title(f"Held-out {title}")
        axis.set_xlabel("epoch (0 = before VAE training)")
        axis.set_ylabel("nats / image (log scale)")
        axis.set_yscale("log")
        axis.grid(alpha=0.3, which="both")
    recon_axis.legend(fontsize=7)
    figure.savefig(out / "compare_terms.png", dpi=110)
    plt.close(figure)


def show_digits(axes: Sequence[plt.Axes], images: torch.Tensor, label: str) -> None:
    for axis, image in zip(axes, images, strict=True):
        axis.imshow(image.reshape(8, 8).numpy(), cmap="gray_r", vmin=0.0, vmax=1.0)
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)


@torch.no_grad()
def plot_reconstructions(out: Path, result: SeedResult, held_out: torch.Tensor) -> None:
    """Held-out digits and their reconstructions (z = mu: the models in eval mode)."""
    x = held_out[:SHOWN]
    rows = [("held-out digit", x), ("AE", torch.sigmoid(result.ae(x)))]
    for start in STARTS:
        for log_sigma_init in LOG_SIGMA_INITS:
            name = run_name(start, log_sigma_init, "constant")
            label = f"{start} VAE, log_sigma_init={log_sigma_init:g}"
            rows.append((label, torch.sigmoid(result.vaes[name](x))))
    figure, axes = plt.subplots(len(rows), SHOWN, figsize=(SHOWN * 0.9 + 2, len(rows) * 0.95))
    for axis_row, (label, images) in zip(axes, rows, strict=True):
        show_digits(axis_row, images, label)
    figure.suptitle("Held-out reconstructions (eval mode, z = mu; VAEs trained with constant KL weight)")
    figure.subplots_adjust(left=0.2, right=0.99, top=0.9, bottom=0.01, wspace=0.05, hspace=0.08)
    figure.savefig(out / "compare_recon.png", dpi=110)
    plt.close(figure)


@torch.no_grad()
def plot_samples(out: Path, result: SeedResult) -> None:
    """Decoded prior samples z ~ N(0, I): what each model generates (the AE was never trained for it)."""
    z = torch.randn(SHOWN, LATENT_DIM, generator=torch.Generator().manual_seed(EVAL_SEED))
    rows = [("AE decoder (not a VAE)", result.ae.decode(z))]
    for start in STARTS:
        for log_sigma_init in LOG_SIGMA_INITS:
            name = run_name(start, log_sigma_init, "constant")
            label = f"{start} VAE, log_sigma_init={log_sigma_init:g}"
            rows.append((label, decoder_of(result.vaes[name]).decode(z)))
    figure, axes = plt.subplots(len(rows), SHOWN, figsize=(SHOWN * 0.9 + 2, len(rows) * 0.95))
    for axis_row, (label, images) in zip(axes, rows, strict=True):
        show_digits(axis_row, images, label)
    figure.suptitle("Samples from the prior: the same z ~ N(0, I) in every row, decoded (Bernoulli means)")
    figure.subplots_adjust(left=0.2, right=0.99, top=0.88, bottom=0.01, wspace=0.05, hspace=0.08)
    figure.savefig(out / "compare_samples.png", dpi=110)
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


@dataclass(frozen=True)
class Arguments:
    out: Path
    seeds: int
    epochs: int
    ae_epochs: int
    max_steps: int | None
    quiet: bool

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
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return Arguments(**vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the comparison and write its outputs; returns the report's path."""
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    train, held_out = load_split()
    floor = target_entropy(held_out)
    results = [run_seed(seed, train, held_out, args) for seed in args.seed_list]
    curves = [curve for result in results for curve in result.curves]
    grouped = by_name(curves)
    plot_curves(args.out, grouped, floor)
    plot_terms(args.out, grouped, floor)
    plot_reconstructions(args.out, results[0], held_out)
    plot_samples(args.out, results[0])
    (args.out / "metrics.json").write_text(json.dumps([asdict(c) for c in curves], indent=1))
    command = " ".join(["python examples/compare_ae_vae.py", *(sys.argv[1:] if argv is None else argv)])
    write_report(args.out, curves, args, command, time.perf_counter() - began, floor)
    return args.out / "report.md"


if __name__ == "__main__":
    main()
