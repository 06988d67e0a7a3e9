"""``fxvae.compare``: train the AE's VAE beside a VAE trained from scratch, on the user's model and data, and
write the report. Every start is made with the public verbs (``convert``, ``convert(..., calibration=...)``),
trained by one loop (:mod:`fxvae.study.loop`) and measured by :func:`fxvae.evaluate`.

```
for epoch 0 (before any step), 1, ..., E:          runs take turns, epoch by epoch, so a budget ends
    for seed, for start:  train one epoch           every start at the same step count
                          evaluate on held-out data, write a line to metrics.jsonl, save a checkpoint
at the end:  evaluate at the final k, pictures, report.md
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fxvae import downstream, fidelity, likelihoods
from fxvae.convert import convert, find_bottleneck
from fxvae.data import check_model_takes, to_device
from fxvae.density import coder, codes, fit_density
from fxvae.errors import InputError
from fxvae.evaluation import evaluate
from fxvae.io import save
from fxvae.likelihoods import Likelihood, LikelihoodName
from fxvae.modules import eval_mode, first_tensor, input_count
from fxvae.outputs import reconstruction_like
from fxvae.progress import bar
from fxvae.quality import sample_quality
from fxvae.recipe import conversion, posterior
from fxvae.split import decoder_conditions, sample, split
from fxvae.study import ledger
from fxvae.study.comparison import Comparison, objective_of
from fxvae.study.loop import Run, batch_order, load_checkpoint, save_checkpoint, start_run
from fxvae.study.options import CompareOptions, DensityKind, Latent, Optimizer, Schedule, StartName
from fxvae.study.samples import Samples
from fxvae.study.starts import begin
from fxvae.tokens import detokenize
from fxvae.version import VERSION

_clock = time.perf_counter
"""The budget's clock (a test may replace it)."""
SPLIT_SEED = 0
"""The held-out split does not change with the seeds: they vary initialisation, batches and noise only."""
REPORT_SECONDS = 10.0
"""What the budget keeps for the report and its pictures: 4.8 to 6.2 s measured for report.md and its four PNGs (four
starts, matplotlib imported) on one shared CPU core."""
_DECIMALS = 4
MODELS = "models"
"""The folder under ``out`` that holds each run's final model."""


def compare(
    ae: nn.Module,
    train: Any,
    test: Any = None,
    *,
    starts: tuple[StartName, ...] | None = None,
    epochs: int = 20,
    latent: Latent = "gaussian",
    codebook_size: int = 512,
    levels: tuple[int, ...] = (8, 5, 5, 5),
    likelihood: LikelihoodName = "gaussian",
    sigma: float | Literal["optimal"] = "optimal",
    beta: float = 1.0,
    kl_warmup: int = 0,
    free_bits: float = 0.0,
    optimizer: Optimizer = "adam",
    lr: float = 1e-3,
    schedule: Schedule = "cosine",
    lr_warmup: int | None = None,
    log_sigma_lr: float = 1.0,
    batch_size: int = 64,
    holdout: float = 0.1,
    seeds: int = 1,
    k: int = 8,
    final_k: int = 100,
    max_minutes: float | None = None,
    shown: int = 8,
    bottleneck: str | None = None,
    image_shape: tuple[int, ...] | None = None,
    density: tuple[DensityKind, ...] | None = None,
    labels: Any = None,
    anomaly_labels: Any = None,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    scratch: Callable[[], nn.Module] | None = None,
    ae_train: Any = None,
    device: str | torch.device | None = None,
    threads: int | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Comparison:
    """Train the AE's VAE (``"warm"``, ``"calibrated"``) beside the same VAE trained from scratch, and measure both.

    ``ae`` is the trained autoencoder (never changed). ``train`` and ``test`` are tensors, tuples of tensors
    (data, conditions), Datasets or DataLoaders over one; without ``test``, a seeded ``holdout`` fraction of
    ``train`` is held out (the same split for every seed), and calibration and training never see it. The AE
    may have been trained on that split, which favours the starts made from it: a warning says so, in the
    records (``config["warnings"]``) and the report. Pass the AE's own test data as ``test``, or its training
    data as ``ae_train`` (same forms): then only samples of ``train`` whose data input is in no row of
    ``ae_train`` are held out (an exact match), and none left is an :class:`~fxvae.InputError`.

    Starts: ``"warm"`` is ``convert(ae, x)``; ``"calibrated"`` is ``convert(ae, x, calibration=train,
    log_sigma_init="auto", likelihood=likelihood)``; ``"scratch"`` is the same VAE with every parameter
    re-initialised by its module's own ``reset_parameters`` under the run's seed (or ``convert(scratch(), x)``
    where the architecture has modules without one: pass ``scratch=`` a function returning the untrained
    model); ``"ae"`` trains the AE itself on its reconstruction loss, as the reference row.

    Every start runs the same loop: ``optimizer`` at ``lr`` with ``schedule`` after ``lr_warmup`` steps of
    linear warm-up (default: a cosine after one epoch of warm-up, the recipe docs/compare.md measured; the
    log-sigma head at ``log_sigma_lr`` times the rate), the same batch order and noise stream per seed,
    ``epochs`` epochs of ``batch_size``; the loss is the likelihood's ``nll`` plus ``beta`` times the KL
    (linearly warmed up over ``kl_warmup`` steps, with ``free_bits``). ``sigma="optimal"`` is fitted once to
    the AE's error on the training data and shared by every start, in training and measurement. After every
    epoch, and at epoch 0 before any step, each run is measured on the held-out data by :func:`fxvae.evaluate`
    with ``k`` draws, at the end with ``final_k``.

    ``latent="vq"`` (``codebook_size``) or ``"fsq"`` (``levels``) compares discrete latents instead: ``"warm"``
    is the trained AE with its quantiser fitted to the training data's codes (k-means, or principal
    components), ``"random"`` the trained AE with its quantiser at the random initialisation a new one has (a
    codebook drawn from N(0, I), FSQ's projections as a new Linear draws them), ``"scratch"`` the whole model
    from scratch. Without ``starts``, a Gaussian comparison runs ae, scratch, warm and calibrated, a discrete one
    scratch, warm and random;
    the loss is the likelihood's plus the quantiser's own term, weighed into nats by
    :func:`fxvae.study.loop.quantizer_weight`, and each run is measured by its distortion.

    ``seeds`` repeats every start; ``max_minutes`` ends all of them at the same epoch once the next, the final
    measurement and the report would pass the budget; ``device`` (default: the AE's), ``threads`` (torch threads
    while it runs). Every random draw outside the runs (the "optimal" sigma's pass, calibration, the shown
    samples, the measurements) is seeded by what it is for, so the same call gives the same records whatever
    the global random state, which is left as it was. Under ``torchrun`` (a process group), each start trains
    with DistributedDataParallel on a shard of every batch and rank 0 alone writes. With ``out``,
    ``metrics.jsonl`` gets a line as each measurement ends, a checkpoint per run after each epoch, each run's
    final model in ``models/<start>-seed<N>.safetensors`` (:func:`fxvae.save`; the ``"ae"`` start's is its
    plain state dict), and ``report.md`` with its PNGs at the end; another comparison into the same ``out`` is
    refused while this one runs; ``resume=True`` continues a stopped comparison in ``out``. ``image_shape``
    shows flattened samples as images in the pictures. ``progress`` shows a bar on a terminal, and a line per
    measured epoch where stderr is a file or a pipe.

    At its end, a Gaussian comparison measures every run, the AE and each VAE, on the same axes (the final
    record's ``"axes"`` and ``"pictures"``): ex-post densities (``density``: ``"gaussian"``, ``"gmm"``; default
    both, gmm where scikit-learn imports) fitted by :func:`fxvae.fit_density` to the run's training codes; the
    AE's ``nll`` under each (:func:`fxvae.evaluate` with ``density=``, at ``final_k`` and the run's seed, so
    that it pairs sample by sample with the VAEs' ``nll``); the distance (:func:`fxvae.sample_quality`, MMD)
    of samples from the prior and from each density to the held-out data, of the held-out codes to the prior
    or density, and of decoded interpolation midpoints to the held-out data, on at most
    :data:`AXES_SAMPLES` samples, in the space of ``features`` (a callable ``features(batch) -> [N, F]``,
    such as a classifier's penultimate layer; default: the data, flattened); active units; PSNR and SSIM for
    images (:mod:`fxvae.fidelity`); with ``labels`` (one integer per sample of ``train``, or with ``test`` a
    pair ``(train_labels, test_labels)``), the accuracy of a linear probe on the codes; with
    ``anomaly_labels`` (the same forms, 1 = anomaly), the AUROC of each run's per-sample score (the AE's
    reconstruction term, a VAE's nll). Labels of the wrong length are refused before any training.

    >>> result = fxvae.compare(ae, torch.randn(200, 64), epochs=2, k=2, final_k=4, progress=False)
    >>> [row["start"] for row in result.table()]
    ['ae', 'scratch', 'warm', 'calibrated']
    >>> len(result.run("warm", 0).points)  # epoch 0, 1, 2
    3
    """
    options = CompareOptions(
        starts=starts,
        epochs=epochs,
        latent=latent,
        codebook_size=codebook_size,
        levels=levels,
        likelihood=likelihood,
        sigma=sigma,
        beta=beta,
        kl_warmup=kl_warmup,
        free_bits=free_bits,
        optimizer=optimizer,
        lr=lr,
        schedule=schedule,
        lr_warmup=lr_warmup,
        log_sigma_lr=log_sigma_lr,
        batch_size=batch_size,
        holdout=holdout,
        seeds=seeds,
        k=k,
        final_k=final_k,
        max_minutes=max_minutes,
        shown=shown,
        bottleneck=bottleneck,
        image_shape=image_shape,
        density=density,
    )
    return run_comparison(
        ae,
        train,
        test,
        options,
        labels=labels,
        anomaly_labels=anomaly_labels,
        features=features,
        scratch=scratch,
        ae_train=ae_train,
        device=device,
        threads=threads,
        out=out,
        resume=resume,
        progress=progress,
    )


def run_comparison(
    ae: nn.Module,
    train: Any,
    test: Any,
    options: CompareOptions,
    *,
    labels: Any = None,
    anomaly_labels: Any = None,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    scratch: Callable[[], nn.Module] | None = None,
    ae_train: Any = None,
    device: str | torch.device | None = None,
    threads: int | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Comparison:
    """:func:`compare` with its options as one :class:`CompareOptions` (what the command line passes).

    >>> options = fxvae.study.CompareOptions(starts=("warm", "ae"), epochs=1, k=1, final_k=2, density=("gaussian",))
    >>> result = fxvae.study.compare.run_comparison(ae, torch.rand(100, 64), None, options, progress=False)
    >>> [run.start for run in result.runs]
    ['warm', 'ae']
    """
    if not isinstance(ae, nn.Module) or first_tensor(ae) is None:
        raise InputError("compare takes the trained autoencoder, an nn.Module with parameters")
    if resume and out is None:
        raise InputError("resume=True continues the comparison in out=<folder>: pass out")
    with _torch_threads(threads), _process_group() as (rank, world):
        # Rank 0 alone writes, so it alone holds the folder.
        held = ledger.locked(Path(out)) if out is not None and rank == 0 else contextlib.nullcontext()
        with held:
            _check_axes_inputs(options, labels=labels, anomaly_labels=anomaly_labels, features=features)
            data = _Data(train, test, ae_train, labels, anomaly_labels, features)
            study = _Study(ae, data, options, scratch, device, out, resume, progress and rank == 0, rank, world)
            if rank == 0:
                for warning in study.warnings:
                    warnings.warn(warning, UserWarning, stacklevel=3)
            return study.run()


def _check_axes_inputs(options: CompareOptions, **given: Any) -> None:
    """``labels``, ``anomaly_labels`` and ``features`` are for a Gaussian comparison's axes, features a callable."""
    features = given["features"]
    if features is not None and not callable(features):
        raise InputError(f"features={features!r} must be a callable features(batch) -> Tensor[N, F]")
    named = [f"{name}=" for name, value in given.items() if value is not None]
    if named and options.latent != "gaussian":
        raise InputError(
            f"{', '.join(named)} measure the axes at the end of a Gaussian comparison; latent={options.latent!r} "
            "has none: leave them out"
        )


@dataclasses.dataclass
class _Data:
    """What the user passed as data: the training data, the held-out data, the AE's own training data, labels
    (each as given: one per sample of ``train``, or a pair for ``train`` and ``test``) and a feature extractor."""

    train: Any
    test: Any
    ae_train: Any
    labels: Any = None
    anomaly_labels: Any = None
    features: Callable[[torch.Tensor], torch.Tensor] | None = None


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise InputError(f"threads={threads!r} must be a positive whole number")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _seeded(device: torch.device, *purpose: object) -> Iterator[None]:
    """The global random state (CPU, and ``device``'s if CUDA) seeded by ``purpose`` while the block runs, and
    as it was after: every draw outside the runs repeats from one comparison to the next."""
    seed = zlib.crc32(repr(purpose).encode())
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


@contextlib.contextmanager
def _process_group() -> Iterator[tuple[int, int]]:
    """(rank, world size): the running process group's, or one started from torchrun's environment."""
    started = False
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started = True
    try:
        if dist.is_available() and dist.is_initialized():
            yield dist.get_rank(), dist.get_world_size()
        else:
            yield 0, 1
    finally:
        if started:
            dist.destroy_process_group()


class _Study:
    """One comparison's state: data, likelihood, runs, records; :meth:`run` drives it to the report."""

    def __init__(
        self,
        ae: nn.Module,
        data: _Data,
        options: CompareOptions,
        scratch: Callable[[], nn.Module] | None,
        device: str | torch.device | None,
        out: str | os.PathLike[str] | None,
        resume: bool,
        shown: bool,
        rank: int,
        world: int,
    ) -> None:
        self.ae, self.options, self.scratch = ae, options, scratch
        self.rank, self.world, self.show = rank, world, shown
        self.device = torch.device(device) if device is not None else first_tensor(ae).device
        self.warnings: list[str] = []
        # A Dataset may draw at random as it reads (augmentation): the set-up reads under its own seed.
        with _seeded(self.device, "set-up"):
            self._hold_out(data, input_count(ae))
            self.example = self._first_batch(self.train)
            home = first_tensor(ae).device
            check_model_takes(ae, to_device(self.example, home), "the training data")
            check_model_takes(ae, to_device(self._first_batch(self.test), home), "the held-out data")
            self.found = find_bottleneck(ae, self.example, bottleneck=options.bottleneck)
            # Every start converts at the same latent, the one the trained AE shows (an untrained one may tie).
            self.options = dataclasses.replace(options, bottleneck=self.found.node)
            self.likelihood = self._likelihood()
            self.axes = _Axes(self, data.features) if options.latent == "gaussian" else None
        self.measure_seconds: dict[tuple[str, int], float] = {}
        self.out = Path(out) if out is not None else None
        self.records: list[dict[str, Any]] = []
        self.ledger: ledger.Ledger | None = None
        self.resume = resume
        self.steps_per_epoch = sum(len(b) >= world for b in batch_order(len(self.train), options.batch_size, 0, 1))
        self.began = _clock()

    # --- set-up ---------------------------------------------------------------------------------------

    def _first_batch(self, samples: Samples) -> tuple[Any, ...]:
        return samples.batch(torch.arange(min(len(samples), max(2, self.options.batch_size))))

    def _hold_out(self, data: _Data, count: int) -> None:
        """The training and held-out samples, the split's description, a warning where the AE may have been
        trained on the held-out samples, and the labels of each (checked against the data before any work)."""
        given = Samples(data.train, count)
        test = Samples(data.test, count) if data.test is not None else None
        held = len(test) if test is not None else None
        given_labels = {
            name: _label_values(value, name, len(given), held)
            for name, value in (("labels", data.labels), ("anomaly_labels", data.anomaly_labels))
            if value is not None
        }
        if given_labels and test is None:
            given = _indexed(given)  # the split's indices, to split the labels with the samples
        self._split(given, test, data.ae_train, count)
        self.labels: dict[str, _Labels] = {}
        for name, (train_labels, test_labels) in given_labels.items():
            if test_labels is None:
                train_labels, test_labels = train_labels[_index_of(self.train)], train_labels[_index_of(self.test)]
            self.labels[name] = _Labels(train_labels, test_labels)
        if "anomaly_labels" in self.labels and self.labels["anomaly_labels"].test.unique().numel() < 2:
            raise InputError(
                f"the {len(self.test)} held-out samples are all labelled {int(self.labels['anomaly_labels'].test[0])} "
                "in anomaly_labels: an AUROC needs anomalies (1) and normal samples (0) among them; pass held-out "
                "data with both (test=, with anomaly_labels=(train_labels, test_labels))"
            )
        if "labels" in self.labels and self.labels["labels"].train.unique().numel() < 2:
            raise InputError("labels holds one class in the training data: a linear probe needs two or more")

    def _split(self, given: Samples, test: Samples | None, ae_train: Any, count: int) -> None:
        o = self.options
        seen = Samples(ae_train, count).row_hashes(like=given) if ae_train is not None else None
        if test is not None:
            self.train, self.test = given, test
            self.split = "held-out data given separately"
            overlap = self.test.count_in(seen) if seen is not None else 0
            if overlap:
                self.warnings.append(
                    f"{overlap} of the {len(self.test)} held-out samples are in the AE's training data (ae_train): "
                    f"the starts made from the trained AE ({', '.join(_from_ae(o))}) are favoured on them; pass "
                    "held-out data the AE never saw"
                )
            return
        if seen is None:
            self.train, self.test = given.split(o.holdout, SPLIT_SEED)
            self.split = (
                f"held out: a seeded {o.holdout:g} of the data (split seed {SPLIT_SEED}), which the AE may have "
                "been trained on"
            )
            if _from_ae(o):
                self.warnings.append(
                    f"the held-out data is a seeded {o.holdout:g} of the training data, which the AE checkpoint may "
                    f"have been trained on: the starts made from the trained AE ({', '.join(_from_ae(o))}) are "
                    "favoured on it. Pass the AE's own test data as the held-out data (--test; test= in Python), or "
                    "its training data (--ae-train; ae_train=) to hold out only samples it never saw"
                )
            return
        self.train, self.test, unseen = given.split_unseen(seen, o.holdout, SPLIT_SEED)
        self.split = (
            f"held out: a seeded {len(self.test)} of the {unseen} samples of the data that are not in the AE's "
            f"training data (split seed {SPLIT_SEED})"
        )

    def _likelihood(self) -> Likelihood:
        """The likelihood of every start; an ``"optimal"`` scale is fitted once, to the AE on the training data."""
        o = self.options
        lik = likelihoods.get(o.likelihood, sigma=None if o.sigma == "optimal" else o.sigma)
        device = first_tensor(self.ae).device
        with eval_mode(self.ae), torch.no_grad():
            args = to_device(self.example, device)
            lik.check(reconstruction_like(self.ae(*args), args[0]), args[0])
            if not lik.needs_fit:
                return lik
            batches = (to_device(batch, device) for batch in self.train.batches())
            return likelihoods.fit(lik, ((reconstruction_like(self.ae(*b), b[0]), b[0]) for b in batches))

    def config(self) -> dict[str, Any]:
        return {
            "type": "config",
            "model": type(self.ae).__name__,
            "parameters": sum(p.numel() for p in self.ae.parameters()),
            "bottleneck": self.found.node,
            "latent_shape": list(self.found.shape),
            "tracer": self.found.tracer,
            "input_shape": list(self.example[0].shape[1:]),
            "data": {"train": len(self.train), "test": len(self.test), "split": self.split},
            "warnings": self.warnings,
            "likelihood": self.likelihood.describe(),
            "options": self.options.to_dict(),
            "axes": self.axes.describe() if self.axes is not None else None,
            "seeds": list(range(self.options.seeds)),
            "steps_per_epoch": self.steps_per_epoch,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "world": self.world,
            "torch": torch.__version__,
            "fxvae": VERSION,
        }

    def _open(self) -> None:
        """Start the records: a fresh ledger, or the one a stopped comparison left (its options must match)."""
        config = self.config()
        if self.out is None:
            self.records.append(config)
            return
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "checkpoints").mkdir(exist_ok=True)
        if self.resume and (self.out / ledger.FILE).exists():
            self.records = ledger.records(self.out / ledger.FILE)
            _check_same(self.records, config, self.out)
        else:
            self.records = []
        if self.rank == 0:
            self.ledger = ledger.Ledger(self.out, resume=bool(self.records))
        if self.records:
            self.write({"type": "resumed"})
        else:
            self.write(config)

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.ledger is not None:
            self.ledger.write(record)

    def checkpoint_path(self, run: Run) -> Path | None:
        if self.out is None:
            return None
        return self.out / "checkpoints" / f"{run.name}-seed{run.seed}.pt"

    def _runs(self) -> list[Run]:
        runs = []
        for seed in range(self.options.seeds):
            for name in self.options.starts:
                with _seeded(self.device, "start", name, seed):
                    begun = begin(name, self.ae, self.example, self.train, self.options, seed, self.scratch)
                run = start_run(
                    begun, seed, self.options, self.likelihood, self.steps_per_epoch, self.device, self.rank
                )
                path = self.checkpoint_path(run)
                if self.resume and path is not None:
                    load_checkpoint(run, path)
                runs.append(run)
        return runs

    # --- the loop ---------------------------------------------------------------------------------------

    def run(self) -> Comparison:
        self._open()
        runs = self._runs()
        total = len(runs) * self.options.epochs * self.steps_per_epoch
        with bar("comparing", total, enabled=self.show) as shown:
            shown.advance(sum(r.step for r in runs))
            try:
                for run in runs:
                    if not self._measured(run, run.epoch):
                        self._show(shown, run, self._measure(run))
                self._train(runs, shown)
            except KeyboardInterrupt:
                self._finish(runs, final=False)
                raise
        return self._finish(runs, final=True)

    def _train(self, runs: list[Run], shown: Any) -> None:
        epoch_seconds = 0.0
        while any(r.epoch < self.options.epochs for r in runs):
            budget = self.options.max_minutes
            elapsed = _clock() - self.began
            if budget is not None and elapsed + epoch_seconds + self._final_seconds(runs) > 60 * budget:
                done = min(r.epoch for r in runs)
                reason = f"the {budget:g}-minute budget ended every start after {done} of {self.options.epochs} epochs"
                self.write({"type": "stopped", "reason": reason, "epochs": done})
                return
            began = _clock()
            for run in runs:
                if run.epoch >= self.options.epochs:
                    continue
                loss = run.train_epoch(self.train, self.device, self.rank, self.world)
                path = self.checkpoint_path(run)
                if path is not None and self.rank == 0:
                    save_checkpoint(run, path)
                evaluation = self._measure(run, loss)
                shown.advance(self.steps_per_epoch)
                self._show(shown, run, evaluation)
            epoch_seconds = _clock() - began

    def _show(self, shown: Any, run: Run, evaluation: Any) -> None:
        measure = "-ELBO" if evaluation.kind == "vae" else "distortion" if run.begun.is_vae else "recon"
        shown.describe(
            f"{run.name} seed {run.seed} epoch {run.epoch}/{self.options.epochs}: held-out {measure} "
            f"{objective_of(evaluation):.2f}"
        )

    def _final_seconds(self, runs: list[Run]) -> float:
        """What the end will take: each run's final measurement (its last measurement's time, times final_k / k
        where the draws count, plus one more for its reconstructions, samples and MSE), and the report."""
        seconds = REPORT_SECONDS if self.out is not None else 0.0
        for run in runs:
            draws = self.options.final_k / self.options.k if _is_gaussian(run) else 1.0
            measured = self.measure_seconds.get((run.name, run.seed), 0.0)
            seconds += measured * (draws + 1)
            if self.axes is not None:
                seconds += self.axes.seconds(run, measured)
        return seconds

    def _measured(self, run: Run, epoch: int) -> bool:
        return any(
            r.get("type") == "epoch" and r["start"] == run.name and r["seed"] == run.seed and r["epoch"] == epoch
            for r in self.records
        )

    def _measure(self, run: Run, loss: float | None = None) -> Any:
        if loss is None and run.losses and run.epoch:
            loss = run.losses[-1]
        began = _clock()
        with _seeded(self.device, "measure", run.name, run.seed, run.epoch):
            evaluation = evaluate(run.model, self.test, likelihood=self.likelihood, k=self.options.k, seed=run.seed)
        self.measure_seconds[(run.name, run.seed)] = _clock() - began
        self.write(
            {
                "type": "epoch",
                "start": run.name,
                "seed": run.seed,
                "epoch": run.epoch,
                "step": run.step,
                "train_loss": loss,
                "seconds": run.seconds,
                "eval": evaluation.to_dict(),
            }
        )
        return evaluation

    # --- the end ------------------------------------------------------------------------------------------

    def _finish(self, runs: list[Run], *, final: bool) -> Comparison:
        with _seeded(self.device, "shown"):
            shown = self.test.batch(torch.arange(min(self.options.shown, len(self.test))))
        if final:
            if not any(r.get("type") == "shown" for r in self.records):
                self.write({"type": "shown", "data": _rounded(shown[0])})
            for run in runs:
                if not any(
                    r.get("type") == "final" and (r["start"], r["seed"], r["epoch"]) == (run.name, run.seed, run.epoch)
                    for r in self.records
                ):
                    self._final(run, shown)
            self.write({"type": "throughput", **self._throughput(runs)})
        comparison = ledger.comparison_of(self.records)
        if self.out is not None and self.rank == 0 and final:
            figures = _try_plot(comparison, self.out)
            (self.out / "report.md").write_text(comparison.to_markdown(figures))
        return comparison

    def _final(self, run: Run, shown: tuple[Any, ...]) -> None:
        per_sample = self.axes is not None
        with _seeded(self.device, "final", run.name, run.seed, run.epoch):
            evaluation = evaluate(
                run.model,
                self.test,
                likelihood=self.likelihood,
                k=self.options.final_k,
                seed=run.seed,
                **({"per_sample": True} if per_sample else {}),
            )
            args = to_device(shown, self.device)
            with eval_mode(run.model), torch.no_grad():
                recon = self.likelihood.mean(reconstruction_like(run.model(*args), args[0]))
            samples = self._prior_samples(run, args)
            errors = self._mse(run, sampled=False)
            mse = {"eval": errors.mean().item(), "sampled": None}
        if _is_gaussian(run):
            with _seeded(self.device, "mse", run.name, run.seed, run.epoch):
                mse["sampled"] = self._mse(run, sampled=True).mean().item()
        extra: dict[str, Any] = {}
        if self.axes is not None:
            with _seeded(self.device, "axes", run.name, run.seed, run.epoch):
                extra["axes"], extra["pictures"] = self.axes.measure(run, evaluation, errors)
        # The file before the record: a final line on disk promises the model beside it.
        model_file = self._save_model(run)
        self.write(
            {
                "type": "final",
                "start": run.name,
                "seed": run.seed,
                "epoch": run.epoch,
                "eval": evaluation.to_dict(),
                "steps_per_s": run.steps_per_s(),
                "reconstructions": _rounded(recon),
                "samples": _rounded(samples),
                "mse": mse,
                "model_file": model_file,
                **extra,
            }
        )

    def _mse(self, run: Run, *, sampled: bool) -> torch.Tensor:
        """Each held-out sample's mean squared error per element between the data and the likelihood's mean of
        the reconstruction, in the data's units (float64, data order): in eval mode, or (``sampled``) with only
        the reparameterisation in training mode, so that z is drawn as in training while dropout and batch norm
        stay as measured."""
        model = run.model
        errors = []
        with eval_mode(model), torch.no_grad():
            if sampled:
                model.get_submodule(str(conversion(model).reparameterize)).train()
            for batch in self.test.batches():
                args = to_device(batch, self.device)
                mean = self.likelihood.mean(reconstruction_like(model(*args), args[0]))
                errors.append((mean.double() - args[0].double()).pow(2).flatten(1).mean(1).cpu())
        return torch.cat(errors)

    def _save_model(self, run: Run) -> str | None:
        """``models/<start>-seed<N>.safetensors`` under ``out``: the VAE (or discrete model) as :func:`fxvae.save`
        writes it, the ``"ae"`` start's AE as its plain state dict (an AE checkpoint, as every command reads one)."""
        if self.out is None:
            return None
        name = f"{MODELS}/{run.name}-seed{run.seed}.safetensors"
        if self.rank == 0:
            (self.out / MODELS).mkdir(exist_ok=True)
            if run.begun.is_vae:
                save(run.model, self.out / name)
            else:
                _save_state_dict(run.model, self.out / name)
        return name

    def _prior_samples(self, run: Run, args: tuple[Any, ...]) -> torch.Tensor:
        """Prior draws decoded by the run's decoder: z ~ N(0, I) (the AE: by the decoder of its plain
        conversion), or codes drawn uniformly for a discrete latent."""
        vae = run.model if run.begun.is_vae else convert(run.model, args, bottleneck=self.options.bottleneck)[0]
        _, decoder = split(vae)
        conditions = [args[i] for i in decoder_conditions(vae, decoder, len(args))]
        generator = torch.Generator().manual_seed(run.seed)
        info = conversion(vae).quantizer
        with torch.no_grad():
            if info is None:
                out = sample(vae, len(args[0]), *conditions, generator=generator)
            else:
                codes = torch.randint(info.codebook_size, (len(args[0]), *info.code_shape), generator=generator)
                out = detokenize(vae, codes.to(self.device), *conditions)
        return self.likelihood.mean(reconstruction_like(out, args[0]))

    def _throughput(self, runs: list[Run]) -> dict[str, float]:
        """Steps per second of an AE step and of a VAE step, from the runs' own training time (the AE: the
        ``"ae"`` start's, or a short interleaved timing of the AE's step)."""
        vae = [rate for r in runs if r.begun.is_vae and (rate := r.steps_per_s())]
        ae = [rate for r in runs if not r.begun.is_vae and (rate := r.steps_per_s())]
        how = "the runs' own training time"
        if not ae:
            ae, vae, how = self._timed_steps(runs)
        ae_rate, vae_rate = sum(ae) / len(ae), sum(vae) / len(vae)
        return {"ae_steps_per_s": ae_rate, "vae_steps_per_s": vae_rate, "ratio": vae_rate / ae_rate, "how": how}

    def _timed_steps(self, runs: list[Run]) -> tuple[list[float], list[float], str]:
        from fxvae.bench import interleave

        ae_run = start_run(
            begin("ae", self.ae, self.example, self.train, self.options, 0, None),
            0,
            self.options,
            self.likelihood,
            self.steps_per_epoch,
            self.device,
            self.rank,
        )
        vae_run = next(r for r in runs if r.begun.is_vae)
        snapshot = {k: v.clone() for k, v in vae_run.model.state_dict().items()}
        batches = batch_order(len(self.train), self.options.batch_size, 0, 1)[:5]

        def steps(run: Run) -> Callable[[], None]:
            def step() -> None:
                for indices in batches:
                    args = to_device(self.train.batch(indices), self.device)
                    loss = run.loss(args)
                    run.optimizer.zero_grad(set_to_none=True)
                    loss.backward()

            return step

        with _seeded(self.device, "timing"):
            timings = interleave([steps(ae_run), steps(vae_run)], repeats=5, calls=1, device=self.device)
        vae_run.model.load_state_dict(snapshot)
        vae_run.optimizer.zero_grad(set_to_none=True)
        ae_t, vae_t = (sorted(t.wall)[len(t.wall) // 2] for t in timings)
        count = len(batches)
        return [count / ae_t], [count / vae_t], "5 interleaved timings of forward and backward on 5 batches"


# --- the axes: the AE and each VAE measured alike at the end ------------------------------------------------

AXES_SAMPLES = 1000
"""The most held-out samples the axes are measured on (a seeded subset), and the most draws per sample distance:
the kernel two-sample statistic's cost grows with the square of the count."""
AXES_PERMUTATIONS = 100
"""Permutations of each sample distance's test (its p-value resolves 1%)."""
SSIM_SAMPLES = 100
"""The most held-out images SSIM is measured on (the first of the axes' subset): torchmetrics' SSIM in float64
takes about 22 ms per 3x32x32 image on one CPU thread, PSNR almost nothing."""
STRIP_PAIRS, STRIP_STEPS = 4, 8
"""The pictures' interpolation strips: pairs of held-out samples, points per straight line (the ends included)."""
_CHUNK = 256
"""Draws decoded per decoder call."""
GMM_COMPONENTS = 10
"""The gmm density's components (fit_density's default, Ghosh et al. 2020's ex-post GMM)."""


@dataclasses.dataclass(frozen=True)
class _Labels:
    """One integer label per training and per held-out sample, in the samples' order."""

    train: torch.Tensor
    test: torch.Tensor


class _Axes:
    """What the end of a Gaussian comparison measures on every run, the AE's and each VAE's alike: ex-post
    densities of its training codes, likelihoods, sample and latent distances, interpolations, reconstruction
    in the data's units, active units, and the downstream uses that labels allow (the final record's ``"axes"``
    and ``"pictures"``)."""

    def __init__(self, study: _Study, features: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.study, self.features = study, features
        self.kinds = _density_kinds(study.options.density, study.warnings, len(study.train))
        self.labels = study.labels
        if "labels" in self.labels and not _importable("sklearn"):
            raise InputError("labels= (the linear probe) needs scikit-learn: pip install 'fxvae[metrics]'")
        if "anomaly_labels" in self.labels and not _importable("torchmetrics"):
            raise InputError("anomaly_labels= (the AUROC) needs torchmetrics: pip install 'fxvae[metrics]'")
        self.fidelity = _importable("torchmetrics")
        if not self.fidelity:
            study.warnings.append("PSNR and SSIM were skipped: they need torchmetrics (pip install 'fxvae[metrics]')")
        test = study.test
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(SPLIT_SEED))
        self.reference = test.batch(order[:AXES_SAMPLES].sort().values)
        self.conditions_at = self._decoder_inputs()

    def describe(self) -> dict[str, Any]:
        """What the config records of the axes: the densities fitted, the caps, the features, the labels."""
        labels, anomalies = self.labels.get("labels"), self.labels.get("anomaly_labels")
        return {
            "densities": list(self.kinds),
            "samples": len(self.reference[0]),
            "ssim_samples": min(SSIM_SAMPLES, len(self.reference[0])),
            "permutations": AXES_PERMUTATIONS,
            "features": _name(self.features) if self.features is not None else None,
            "labels": {"classes": int(labels.train.unique().numel())} if labels is not None else None,
            "anomaly_labels": {"anomalies": int(anomalies.test.sum())} if anomalies is not None else None,
        }

    def _decoder_inputs(self) -> list[int]:
        """Positions, among the model's inputs, of the conditions its decoder takes (none for most models)."""
        example = self.study.example
        if len(example) == 1:
            return []
        home = first_tensor(self.study.ae).device
        vae, _ = convert(self.study.ae, to_device(example, home), bottleneck=self.study.options.bottleneck)
        return decoder_conditions(vae, split(vae)[1], len(example))

    def seconds(self, run: Run, measured: float) -> float:
        """What :meth:`measure` will take, from what the run's last measurement (``measured`` seconds) and epoch
        took: a pass over the training data per density fit (and the probe's), a third of an epoch's forward
        and backward; the AE's nll at final_k per density, final_k times its one-pass measurement."""
        passes = len(self.kinds) + ("labels" in self.labels)
        forward = (run.epoch_seconds[-1] / 3) if run.epoch_seconds else 0.0
        likelihoods = 0.0 if run.begun.is_vae else len(self.kinds) * self.study.options.final_k * measured
        return passes * forward + likelihoods

    def measure(self, run: Run, evaluation: Any, errors: torch.Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
        """(axes, pictures) of the run at its end; ``evaluation`` is its final one (with per-sample values) and
        ``errors`` its held-out per-sample MSE in eval mode."""
        study, model, vae = self.study, run.model, run.begun.is_vae
        args = to_device(self.reference, study.device)
        x, conditions = args[0], [args[i] for i in self.conditions_at]
        encoder, decoder = coder(model, to_device(study.example, study.device))
        densities = {
            kind: fit_density(model, study.train, kind=kind, components=GMM_COMPONENTS, seed=run.seed)
            for kind in self.kinds
        }
        codes_eval = self._chunked(lambda a: encoder(*a), args)
        held_codes = self._posterior_draws(run, args) if vae else codes_eval
        nll, paired = self._likelihoods(run, evaluation, densities)
        drawn, latent = self._drawn(run, densities, held_codes, conditions, x)
        pairs = torch.randperm(len(x), generator=torch.Generator().manual_seed(run.seed))
        midpoints = self._decoded(
            lambda count, at: decoder((codes_eval[at] + codes_eval[pairs[at]]) / 2, *[c[at] for c in conditions]),
            len(x),
            x,
        )
        axes = {
            **self._fidelity(run, args),
            "nll": nll,
            "samples": {source: self._distance(means, x, run) for source, means in drawn.items()},
            "latent": latent,
            "active_units": evaluation.active_units if vae else _active(codes_eval, evaluation.active_threshold),
            "latent_dims": codes_eval[0].numel(),
            "interpolation": self._distance(midpoints, x, run),
            **self._downstream(run, model, evaluation),
            "paired": {"nll": paired, "mse": _listed(errors)},
            "densities": {kind: density.to_dict() for kind, density in densities.items()},
        }
        shown = study.options.shown
        pictures = {
            "samples": {source: _rounded(means[:shown]) for source, means in drawn.items()},
            "interpolation": self._strips(codes_eval, decoder, conditions, x),
        }
        return axes, pictures

    def _likelihoods(
        self, run: Run, evaluation: Any, densities: dict[str, Any]
    ) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
        """The nll (value, standard error) and its per-sample values: a VAE's under its prior, from its final
        evaluation; the AE's under each density, at final_k and the run's seed (the same posterior noise as the
        VAEs' of that seed, so that the differences pair sample by sample)."""
        if run.begun.is_vae:
            return {"prior": _estimate(evaluation.nll)}, {"prior": _listed(evaluation.per_sample["nll"])}
        nll, paired = {}, {}
        for kind, density in densities.items():
            measured = evaluate(
                run.model,
                self.study.test,
                likelihood=self.study.likelihood,
                k=self.study.options.final_k,
                seed=run.seed,
                density=density,
                per_sample=True,
            )
            nll[kind], paired[kind] = _estimate(measured.nll), _listed(measured.per_sample["nll"])
        return nll, paired

    def _drawn(
        self,
        run: Run,
        densities: dict[str, Any],
        held_codes: torch.Tensor,
        conditions: list[torch.Tensor],
        x: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Per source (a VAE's prior, each density): as many decoded draws as held-out samples (each with its
        sample's conditions), and the distance of the held-out codes from the source's latent draws."""
        drawn: dict[str, torch.Tensor] = {}
        latent: dict[str, Any] = {}
        sources: dict[str, Any] = ({"prior": None} if run.begun.is_vae else {}) | densities
        n = len(x)
        for index, (source, density) in enumerate(sources.items()):
            generator = torch.Generator().manual_seed(run.seed * 1_000_003 + index)
            drawn[source] = self._decoded(
                lambda count, at, d=density, g=generator: sample(
                    run.model, count, *[c[at] for c in conditions], generator=g, density=d
                ),
                n,
                x,
            )
            z = (
                torch.randn((n, *held_codes.shape[1:]), generator=generator)
                if density is None
                else density.sample(n, generator=generator)
            )
            latent[source] = self._distance(held_codes, z.to(held_codes), run, features=False)
        return drawn, latent

    def _chunked(self, call: Callable[[tuple[Any, ...]], torch.Tensor], args: tuple[Any, ...]) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([call(tuple(a[i : i + _CHUNK] for a in args)) for i in range(0, len(args[0]), _CHUNK)])

    def _decoded(self, decode: Callable[[int, slice], Any], n: int, x: torch.Tensor) -> torch.Tensor:
        """The likelihood's means of ``n`` decoded draws, ``_CHUNK`` to a call (``decode(count, rows)``)."""
        means = []
        with torch.no_grad():
            for i in range(0, n, _CHUNK):
                rows = slice(i, min(i + _CHUNK, n))
                out = decode(rows.stop - rows.start, rows)
                means.append(self.study.likelihood.mean(reconstruction_like(out, x[rows])))
        return torch.cat(means)

    def _posterior_draws(self, run: Run, args: tuple[Any, ...]) -> torch.Tensor:
        """One draw of q(z | x) per held-out sample (a VAE's codes as its prior is meant to match them)."""
        generator = torch.Generator().manual_seed(run.seed)
        draws = []
        with eval_mode(run.model), torch.no_grad():
            for i in range(0, len(args[0]), _CHUNK):
                run.model(*(a[i : i + _CHUNK] for a in args))
                q = posterior(run.model)
                noise = torch.randn(q.mu.shape, generator=generator, dtype=q.mu.dtype).to(q.mu.device)
                draws.append(q.mu + q.log_sigma.exp() * noise)
        return torch.cat(draws)

    def _distance(self, samples: torch.Tensor, reference: torch.Tensor, run: Run, features: bool = True) -> Any:
        if len(reference) < 2:  # one held-out sample: no distance between distributions to measure
            return None
        return sample_quality(
            samples,
            reference,
            features=self.features if features else None,
            max_samples=AXES_SAMPLES,
            permutations=AXES_PERMUTATIONS,
            seed=run.seed,
        ).to_dict()

    def _fidelity(self, run: Run, args: tuple[Any, ...]) -> dict[str, Any]:
        """PSNR (on the axes' held-out subset) and SSIM (on its first SSIM_SAMPLES) of the reconstructions in
        eval mode, and of a Gaussian VAE's with z drawn, for images; the data range is the subset's."""
        x = args[0]
        shape = self.study.options.image_shape
        view = tuple(x.shape) if shape is None or len(shape) < 2 else (len(x), *([1] * (3 - len(shape))), *shape)
        if not self.fidelity or not fidelity.is_image(view) or math.prod(view[1:]) != x[0].numel():
            return {"psnr": None, "ssim": None}
        span = (float(x.min()), float(x.max()))
        psnr, ssim = {}, {}
        for mode in ("eval", "sampled"):
            if mode == "sampled" and not _is_gaussian(run):
                psnr[mode] = ssim[mode] = None
                continue
            with eval_mode(run.model):
                if mode == "sampled":
                    run.model.get_submodule(str(conversion(run.model).reparameterize)).train()
                recon = self._decoded(lambda count, at: run.model(*(a[at] for a in args)), len(x), x)
            recon, images = recon.reshape(view), x.reshape(view)
            psnr[mode] = fidelity.psnr(recon, images, data_range=span)
            ssim[mode] = fidelity.ssim(recon[:SSIM_SAMPLES], images[:SSIM_SAMPLES], data_range=span)
        return {"psnr": psnr, "ssim": ssim if ssim["eval"] is not None else None}

    def _downstream(self, run: Run, model: nn.Module, evaluation: Any) -> dict[str, Any]:
        """The linear probe's accuracy on the codes (``labels``), the AUROC of the per-sample score
        (``anomaly_labels``): the AE's reconstruction term, a VAE's nll."""
        found: dict[str, Any] = {"probe": None, "auroc": None, "auroc_score": None}
        labels = self.labels.get("labels")
        if labels is not None:
            train = codes(model, self.study.train).flatten(1).cpu()
            test = codes(model, self.study.test).flatten(1).cpu()
            found["probe"] = _estimate(downstream.linear_probe(train, labels.train, test, labels.test))
        anomalies = self.labels.get("anomaly_labels")
        if anomalies is not None:
            score = "nll" if run.begun.is_vae else "recon"
            found["auroc"] = downstream.auroc(evaluation.per_sample[score], anomalies.test)
            found["auroc_score"] = score
        return found

    def _strips(
        self, codes_eval: torch.Tensor, decoder: Any, conditions: list[torch.Tensor], x: torch.Tensor
    ) -> list[Any]:
        """Decoded straight lines between pairs of held-out codes, STRIP_STEPS points each."""
        pairs = min(STRIP_PAIRS, len(codes_eval) // 2)
        t = torch.linspace(0, 1, STRIP_STEPS, dtype=codes_eval.dtype, device=codes_eval.device)
        strips = []
        with torch.no_grad():
            for p in range(pairs):
                a, b = codes_eval[2 * p], codes_eval[2 * p + 1]
                line = (1 - t).view(-1, *[1] * a.dim()) * a + t.view(-1, *[1] * a.dim()) * b
                shared = [c[2 * p].expand(STRIP_STEPS, *c.shape[1:]) for c in conditions]
                like = x[2 * p].expand(STRIP_STEPS, *x.shape[1:])
                strips.append(_rounded(self.study.likelihood.mean(reconstruction_like(decoder(line, *shared), like))))
        return strips


def _density_kinds(density: tuple[str, ...] | None, warned: list[str], codes: int) -> tuple[str, ...]:
    """The densities to fit: those named, or gaussian and gmm (where scikit-learn imports and the ``codes``
    training samples are enough for its components), checked before any training."""
    sklearn = _importable("sklearn")
    if density is not None:
        if "gmm" in density and not sklearn:
            raise InputError("density='gmm' needs scikit-learn: pip install 'fxvae[metrics]', or density=('gaussian',)")
        if "gmm" in density and codes < GMM_COMPONENTS:
            raise InputError(
                f"density='gmm' fits {GMM_COMPONENTS} components to the {codes} training samples' codes, which are "
                "too few: pass more training data, or density=('gaussian',)"
            )
        return density
    if sklearn and codes >= GMM_COMPONENTS:
        return ("gaussian", "gmm")
    why = "it needs scikit-learn (pip install 'fxvae[metrics]')" if not sklearn else f"{codes} training samples"
    why += "" if not sklearn else f" are too few for its {GMM_COMPONENTS} components"
    warned.append(f"the gmm density was skipped: {why}; only the gaussian one was fitted")
    return ("gaussian",)


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _name(features: Callable[..., Any]) -> str:
    """The features' name as :func:`fxvae.sample_quality` records it."""
    return getattr(features, "__name__", None) or type(features).__name__


def _estimate(value: Any) -> dict[str, float]:
    return {"value": value.value, "stderr": value.stderr}


def _listed(values: torch.Tensor) -> list[float]:
    """Per-sample values for the record (6 decimals: far below any difference a standard error resolves)."""
    return [round(v, 6) for v in values.detach().double().cpu().tolist()]


def _active(codes_eval: torch.Tensor, threshold: float) -> int:
    """An AE's active units, as evaluate counts a VAE's: latent elements whose code varies over the held-out
    data by more than ``threshold`` (Burda et al. 2015)."""
    return int((codes_eval.flatten(1).double().var(0) > threshold).sum())


def _label_values(value: Any, name: str, train: int, test: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(training labels, held-out labels or None) from what the user passed: one integer per sample of the
    training data, or with held-out data a pair (train_labels, test_labels). Lengths are checked here."""
    pair = isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_array(v) for v in value)
    if test is not None and not pair:
        raise InputError(
            f"{name} is one array, but the held-out data is given separately: pass {name}=(train_labels, "
            f"test_labels), one label per sample of each (on the command line, --test-{name.replace('_', '-')})"
        )
    if test is None and pair:
        raise InputError(
            f"{name} is a pair (train_labels, test_labels), but no held-out data is given: pass test=, or one label "
            "per sample of train"
        )
    parts = value if pair else (value,)
    found = [_label_tensor(v, name) for v in parts]
    for labels, samples, what in zip(found, (train, test), ("training data", "held-out data"), strict=False):
        if len(labels) != samples:
            raise InputError(
                f"{name} holds {len(labels)} labels, but the {what} holds {samples} samples: pass one integer "
                "label per sample, in the data's order"
            )
    if name == "anomaly_labels" and any(((t != 0) & (t != 1)).any() for t in found):
        raise InputError(f"{name} must be 0 (normal) or 1 (anomaly) for each sample")
    return found[0], found[1] if pair else None


def _is_array(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, list, tuple)) or hasattr(value, "__array__")


def _label_tensor(value: Any, name: str) -> torch.Tensor:
    try:
        labels = torch.as_tensor(value if isinstance(value, (torch.Tensor, list, tuple)) else np.array(value))
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{name} must be one integer per sample (a tensor, an array or a list): {err}") from err
    labels = labels.squeeze(-1) if labels.dim() == 2 and labels.shape[1] == 1 else labels
    if labels.dim() != 1 or labels.is_complex():
        raise InputError(f"{name} must be one integer per sample, a 1-d array; got shape {list(labels.shape)}")
    if labels.is_floating_point() and not (torch.isfinite(labels).all() and (labels == labels.round()).all()):
        raise InputError(f"{name} must be whole numbers (class indices), one per sample")
    return labels.long().cpu()


def _indexed(samples: Samples) -> Samples:
    """``samples`` carrying each sample's index, so that a split says which samples went where (a Dataset's
    subsets keep their indices already)."""
    if samples.tensors is None:
        return samples
    index = torch.arange(len(samples))
    return Samples(None, samples.count, _tensors=(*samples.tensors, index))


def _index_of(samples: Samples) -> torch.Tensor:
    """The indices, in the data as given, of a split's samples (:func:`_indexed`)."""
    if samples.tensors is not None:
        return samples.tensors[-1]
    return torch.as_tensor(samples.dataset.indices)


def _is_gaussian(run: Run) -> bool:
    """Whether the run's model draws z (a Gaussian VAE): its measurement's cost grows with k."""
    return run.begun.is_vae and conversion(run.model).quantizer is None


def _from_ae(options: CompareOptions) -> list[str]:
    """The starts made from the trained AE's weights: those a held-out split the AE saw favours."""
    return [s for s in options.starts if s != "scratch"]


def _save_state_dict(model: nn.Module, path: Path) -> None:
    """The model's state dict as a safetensors file, written atomically (tied tensors each get their copy, so
    that ``load_state_dict`` reads the file as any checkpoint)."""
    from safetensors.torch import save as to_bytes

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    # Written by open(), the file gets the mode the umask gives (safetensors' own writer makes it private).
    tmp.write_bytes(to_bytes(tensors, metadata={"format": "pt"}))
    os.replace(tmp, path)


def _check_same(records: list[dict[str, Any]], config: dict[str, Any], out: Path) -> None:
    saved = next((r for r in records if r.get("type") == "config"), None)
    if saved is None:
        raise InputError(f"{str(out)!r} holds no comparison to resume: run without resume=True")
    keep = ("max_minutes",)
    before = {k: v for k, v in saved["options"].items() if k not in keep}
    now = {k: v for k, v in json_ready(config["options"]).items() if k not in keep}
    changed = [k for k in now if before.get(k) != now[k]]
    if changed or saved.get("data") != config["data"]:
        what = ", ".join(f"{k} ({before.get(k)!r} then, {now[k]!r} now)" for k in changed) or "the data"
        raise InputError(
            f"the comparison in {str(out)!r} was run with other settings: {what}; resume it with the same ones, or "
            "write to a new folder"
        )


def json_ready(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists)."""
    return json.loads(json.dumps(value))


def _rounded(values: torch.Tensor) -> list[Any]:
    return values.detach().float().cpu().round(decimals=_DECIMALS).tolist()


def _try_plot(comparison: Comparison, out: Path) -> list[str]:
    try:
        return [p.name for p in comparison.plot(out)]
    except InputError:  # no matplotlib: the report goes without pictures
        return []
