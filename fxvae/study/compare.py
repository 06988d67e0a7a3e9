"""``fxvae.compare``: train the AE's VAE beside a VAE trained from scratch, on the user's model and data, and
write the report. Every start is made with the public verbs (``convert``, ``convert(..., calibration=...)``),
trained by one loop (:mod:`fxvae.study.loop`) and measured by :func:`fxvae.evaluate`.

```
for epoch 0 (before any step), 1, ..., E:          runs take turns, epoch by epoch, so a budget ends
    for seed, for start:  train one epoch           every start at the same step count
                          save a checkpoint; every eval_every-th epoch and the last: evaluate on held-out
                          data (eval_samples of it), write a line to metrics.jsonl
at the end:  evaluate at the final k on every held-out sample, pictures, report.md
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from fxvae.analysis.outputs import reconstruction_like
from fxvae.convert import convert, find_bottleneck
from fxvae.errors import InputError
from fxvae.io.checkpoints import save
from fxvae.io.data import check_model_takes, to_device
from fxvae.latents.registry import family_of
from fxvae.latents.tokens import detokenize
from fxvae.measure import likelihoods
from fxvae.measure.evaluation import evaluate
from fxvae.measure.likelihoods import Likelihood, LikelihoodName
from fxvae.measure.sampling import sample
from fxvae.modules import eval_mode, first_tensor, input_count
from fxvae.progress import bar
from fxvae.recipe import conversion
from fxvae.study import ledger
from fxvae.study.axes import SUBSET_SEED, FinalAxes
from fxvae.study.comparison import Comparison
from fxvae.study.labels import Labels, index_of, indexed, label_values
from fxvae.study.ledger import rounded
from fxvae.study.loop import Run, batch_order, is_gaussian, load_checkpoint, save_checkpoint, start_run
from fxvae.study.options import CompareOptions, DensityKind, Latent, Optimizer, Precision, Schedule, StartName
from fxvae.study.records import objective_of
from fxvae.study.samples import Samples
from fxvae.study.starts import begin
from fxvae.study.tracking import Tracker
from fxvae.surgery.split import decoder_conditions, split
from fxvae.version import VERSION

_clock = time.perf_counter
"""The budget's clock (a test may replace it)."""
SPLIT_SEED = 0
"""The held-out split does not change with the seeds: they vary initialisation, batches and noise only."""
EVAL_SUBSET_SEED = SUBSET_SEED
"""``eval_samples``' subset does not change with the seeds either, so every run's curve is measured on the same
samples (paired). It is the start of the order the axes' subset is drawn from: the two subsets nest."""
REPORT_SECONDS = 10.0
"""What the budget keeps for the report and its pictures: 4.8 to 6.2 s measured for report.md and its four PNGs (four
starts, matplotlib imported) on one shared CPU core."""
MODELS = "models"
"""The folder under ``out`` that holds each run's final model."""
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(CompareOptions))
"""The keywords of :func:`compare` that :class:`CompareOptions` holds (the others say what to compare and where)."""


def compare(
    ae: nn.Module,
    train: Any,
    test: Any = None,
    *,
    options: CompareOptions | None = None,
    starts: tuple[StartName, ...] | None = None,
    epochs: int = 20,
    latent: Latent = "gaussian",
    codebook_size: int = 512,
    levels: tuple[int, ...] = (8, 5, 5, 5),
    fold: bool = True,
    log_sigma_init: float | Literal["auto"] = "auto",
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
    accumulate: int = 1,
    precision: Precision = "fp32",
    compile: bool = False,
    channels_last: bool = False,
    holdout: float = 0.1,
    seeds: int = 1,
    k: int = 8,
    final_k: int = 100,
    eval_samples: int | None = None,
    eval_every: int = 1,
    workers: int | None = None,
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
    tensorboard: bool | None = None,
    callbacks: Sequence[Callable[[dict[str, Any]], Any]] | None = None,
) -> Comparison:
    """Train the AE's VAE (``"warm"``, ``"calibrated"``) beside the same VAE trained from scratch, and measure both.

    ``ae`` is the trained autoencoder (never changed). ``train`` and ``test`` are tensors, tuples of tensors
    (data, conditions), Datasets or DataLoaders over one. A Dataset is read by ``workers`` DataLoader processes
    (default: min(4, CPU cores - 1); pinned memory on CUDA, prefetch, persistent workers), in compare's batch
    order per seed and with each item's random draws seeded by (seed, epoch, index), so every start sees the same
    batches and augmentations; a DataLoader given is read the same way, with its dataset, its ``collate_fn`` and
    its ``num_workers`` (unless ``workers`` is given): its batch size, sampler and shuffle do not apply. Tensors
    are indexed in the training process, without a loader. Without ``test``, a seeded ``holdout`` fraction of
    ``train`` is held out (the same split for every seed), and calibration and training never see it. The AE
    may have been trained on that split, which favours the starts made from it: a warning says so, in the
    records (``config["warnings"]``) and the report. Pass the AE's own test data as ``test``, or its training
    data as ``ae_train`` (same forms): then only samples of ``train`` whose data input is in no row of
    ``ae_train`` are held out (an exact match), and none left is an :class:`~fxvae.InputError`.

    Starts: ``"warm"`` is ``convert(ae, x)``; ``"calibrated"`` is ``convert(ae, x, calibration=train,
    log_sigma_init="auto", likelihood=likelihood)`` (with ``fold=False``, its standardising map kept as a frozen
    module of its own instead of folded into the mu head and the decoder's first layer; ``log_sigma_init`` a number
    starts its log sigma there instead); ``"scratch"`` is the
    same VAE with every parameter re-initialised by its module's own ``reset_parameters`` under the run's seed
    (or ``convert(scratch(), x)`` where the architecture has modules without one: pass ``scratch=`` a function
    returning the untrained model); ``"ae"`` trains the AE itself on its reconstruction loss, as the reference row.

    Every start runs the same loop: ``optimizer`` at ``lr`` with ``schedule`` after ``lr_warmup`` steps of
    linear warm-up (default: a cosine after one epoch of warm-up, the recipe docs/compare.md measured; the
    log-sigma head at ``log_sigma_lr`` times the rate), the same batch order and noise stream per seed,
    ``epochs`` epochs of ``batch_size`` (``accumulate`` batches to an optimiser step; the forward in ``precision``
    ``"fp32"``, ``"bf16"`` or ``"fp16"``, ``torch.compile``-d with ``compile``, in channels-last memory format
    with ``channels_last``: docs/compare.md); the loss is the likelihood's ``nll`` plus ``beta`` times the KL
    (linearly warmed up over ``kl_warmup`` steps, with ``free_bits``). ``sigma="optimal"`` is fitted once to the
    AE's error on the training data and shared by every start, in training and measurement. After every epoch,
    and at epoch 0 before any step, each run is measured on the held-out data by :func:`fxvae.evaluate` with
    ``k`` draws, at the end with ``final_k``. On large held-out data, ``eval_samples`` measures each epoch on that
    many held-out samples, a seeded subset drawn once and shared by every start and seed (more than the held-out
    data holds is an :class:`~fxvae.InputError`), and ``eval_every`` measures every that many epochs (epoch 0, the
    last epoch and the epoch a budget stops at always); the final measurement uses every held-out sample.

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

    Each measured epoch's record (the ``"epoch"`` line of ``metrics.jsonl``, as a dict) also goes to TensorBoard
    and to ``callbacks``, on rank 0 alone (:mod:`fxvae.study.tracking`). With ``out``, ``tensorboard`` (default
    None: where tensorboard is installed, and otherwise a warning that says how to install it) writes each run's
    curves to ``out/tensorboard/<start>/seed<N>``, against the epoch. Each of ``callbacks`` is called as
    ``callback(record)`` once the line is on disk: ``callbacks=[lambda r: wandb.log(fxvae.study.scalars(r))]``
    logs every curve to W&B. A callback that raises stops the comparison with a :class:`~fxvae.CallbackError`
    naming it; every finished epoch stays in ``out``, and ``resume=True`` continues from there (the event files
    and the callbacks then get the epochs measured after it).

    At its end, a Gaussian comparison measures every run, the AE and each VAE, on the same axes (the final record's
    ``"axes"`` and ``"pictures"``): ex-post densities (``density``: ``"gaussian"``, ``"gmm"``; default both, gmm
    where scikit-learn imports) fitted by :func:`fxvae.fit_density` to the run's training codes; the AE's ``nll``
    under each (:func:`fxvae.evaluate` with ``density=``, at ``final_k`` and the run's seed, so that it pairs sample
    by sample with the VAEs' ``nll``); the distance (:func:`fxvae.sample_quality`, MMD) of samples from the prior
    and from each density to the held-out data, of the held-out codes to the prior or density, and of decoded
    interpolation midpoints to the held-out data, on at most :data:`fxvae.study.axes.AXES_SAMPLES` samples, in the
    space of ``features`` (a callable ``features(batch) -> [N, F]``, such as a classifier's penultimate layer;
    default: the data, flattened); active units; PSNR and SSIM for images (:mod:`fxvae.measure.fidelity`); with
    ``labels``
    (one integer per sample of ``train``, or with ``test`` a pair ``(train_labels, test_labels)``), the accuracy of
    a linear probe on the codes; with ``anomaly_labels`` (the same forms, 1 = anomaly), the AUROC of each run's
    per-sample score (the AE's reconstruction term, a VAE's nll). Labels of the wrong length are refused before any
    training.

    >>> result = fxvae.compare(ae, torch.randn(200, 64), epochs=2, k=2, final_k=4, progress=False)
    >>> [row["start"] for row in result.table()]
    ['ae', 'scratch', 'warm', 'calibrated']
    >>> len(result.run("warm", 0).points)  # epoch 0, 1, 2
    3

    ``options`` holds the choices from ``starts`` to ``density`` as one :class:`fxvae.study.CompareOptions`, the
    object the command line builds, to keep or vary between calls. With ``options``, those keywords stay at
    their defaults: one given beside it is refused rather than silently laid over it (a keyword at its default
    cannot be told from one left out). Vary the options with ``dataclasses.replace(options, seeds=3)``.

    >>> options = fxvae.study.CompareOptions(epochs=2, k=2, final_k=4)
    >>> fxvae.compare(ae, torch.randn(200, 64), options=options, seeds=3)
    Traceback (most recent call last):
    fxvae.errors.InputError: compare got options= and seeds=3 beside it: ...
    """
    given = locals()  # the parameters by name, before any other name is bound: CompareOptions' fields among them
    return run_comparison(
        ae,
        train,
        test,
        _options(options, {name: given[name] for name in OPTION_NAMES}),
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
        tensorboard=tensorboard,
        callbacks=callbacks,
    )


def _options(options: CompareOptions | None, keywords: dict[str, Any]) -> CompareOptions:
    """``options``, or the keywords as options: never both, where a keyword differs from its default."""
    if options is None:
        return CompareOptions(**keywords)
    if not isinstance(options, CompareOptions):
        raise InputError(f"options={options!r} must be a fxvae.study.CompareOptions")
    defaults = {f.name: f.default for f in dataclasses.fields(CompareOptions)}
    given = {
        name: value
        for name, value in keywords.items()
        if (tuple(value) if isinstance(value, list) else value) != defaults[name]
    }
    if given:
        listed = ", ".join(f"{name}={value!r}" for name, value in given.items())
        raise InputError(
            f"compare got options= and {listed} beside it: pass them in the options, "
            f"dataclasses.replace(options, {listed}), or drop options="
        )
    return options


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
    tensorboard: bool | None = None,
    callbacks: Sequence[Callable[[dict[str, Any]], Any]] | None = None,
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
        folder = Path(out) if out is not None else None
        tracker = Tracker(folder, tensorboard=tensorboard, callbacks=callbacks, writes=rank == 0)
        with held, tracker:
            _check_axes_inputs(options, labels=labels, anomaly_labels=anomaly_labels, features=features)
            data = _Data(train, test, ae_train, labels, anomaly_labels, features)
            session = _Session(
                device=device,
                out=out,
                resume=resume,
                show=progress and rank == 0,
                rank=rank,
                world=world,
                tracker=tracker,
            )
            study = _Study(ae, data, options, scratch, session)
            try:
                if rank == 0:
                    for warning in study.warnings:
                        warnings.warn(warning, UserWarning, stacklevel=3)
                return study.run()
            finally:
                # Forked loader workers hold the folder's lock file open: they end before the lock is let go.
                for samples in (study.train, study.test, study.measured_on):
                    samples.close()


def _check_axes_inputs(options: CompareOptions, **given: Any) -> None:
    """``labels``, ``anomaly_labels`` and ``features`` are for a Gaussian comparison's axes, features a callable."""
    features = given["features"]
    if features is not None and not callable(features):
        raise InputError(f"features={features!r} must be a callable features(batch) -> Tensor[N, F]")
    named = [f"{name}=" for name, value in given.items() if value is not None]
    if named and family_of(options.latent).estimator != "posterior":
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


@dataclasses.dataclass(frozen=True)
class _Session:
    """Where and how this process runs the comparison: its device (None: the AE's), the folder it writes (rank 0
    alone), whether it resumes the comparison there, whether it shows progress, its rank among ``world``
    processes (torchrun), and where each measured epoch's record goes besides ``metrics.jsonl``."""

    device: str | torch.device | None
    out: str | os.PathLike[str] | None
    resume: bool
    show: bool
    rank: int
    world: int
    tracker: Tracker


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
        session: _Session,
    ) -> None:
        self.ae, self.options, self.scratch = ae, options, scratch
        self.rank, self.world, self.show = session.rank, session.world, session.show
        self.tracker = session.tracker
        self.device = torch.device(session.device) if session.device is not None else first_tensor(ae).device
        self.warnings: list[str] = []
        # A Dataset may draw at random as it reads (augmentation): the set-up reads under its own seed.
        with _seeded(self.device, "set-up"):
            self._hold_out(data, input_count(ae))
            self.measured_on = self._eval_subset()
            self.example = self._first_batch(self.train)
            home = first_tensor(ae).device
            check_model_takes(ae, to_device(self.example, home), "the training data")
            check_model_takes(ae, to_device(self._first_batch(self.test), home), "the held-out data")
            self.found = find_bottleneck(ae, self.example, bottleneck=options.bottleneck)
            # Every start converts at the same latent, the one the trained AE shows (an untrained one may tie).
            self.options = dataclasses.replace(options, bottleneck=self.found.node)
            self.likelihood = self._likelihood()
            measured = family_of(options.latent).estimator == "posterior"
            self.axes = FinalAxes(self, data.features) if measured else None
        self.measure_seconds: dict[tuple[str, int], float] = {}
        self.out = Path(session.out) if session.out is not None else None
        self.records: list[dict[str, Any]] = []
        self.ledger: ledger.Ledger | None = None
        self.resume = session.resume
        self.steps_per_epoch = sum(len(b) >= self.world for b in batch_order(len(self.train), options.batch_size, 0, 1))
        self.began = _clock()

    # --- set-up ---------------------------------------------------------------------------------------

    def _eval_subset(self) -> Samples:
        """What each epoch is measured on: the held-out samples, or ``eval_samples`` of them drawn once by a
        fixed seed (never the runs' seeds), in data order."""
        wanted, held = self.options.eval_samples, len(self.test)
        if wanted is None or wanted == held:
            return self.test
        if wanted > held:
            raise InputError(
                f"eval_samples={wanted} is more than the {held} held-out samples: pass at most {held}, or leave it "
                "out to measure every epoch on all of them"
            )
        order = torch.randperm(held, generator=torch.Generator().manual_seed(EVAL_SUBSET_SEED))
        return self.test.subset(order[:wanted].sort().values)

    def _first_batch(self, samples: Samples) -> tuple[Any, ...]:
        return samples.batch(torch.arange(min(len(samples), max(2, self.options.batch_size))))

    def _hold_out(self, data: _Data, count: int) -> None:
        """The training and held-out samples, the split's description, a warning where the AE may have been
        trained on the held-out samples, and the labels of each (checked against the data before any work)."""
        reading = {"workers": self.options.workers, "pin_memory": self.device.type == "cuda"}
        given = Samples(data.train, count, **reading)
        test = Samples(data.test, count, **reading) if data.test is not None else None
        held = len(test) if test is not None else None
        given_labels = {
            name: label_values(value, name, len(given), held)
            for name, value in (("labels", data.labels), ("anomaly_labels", data.anomaly_labels))
            if value is not None
        }
        if given_labels and test is None:
            given = indexed(given)  # the split's indices, to split the labels with the samples
        self._split(given, test, data.ae_train, count)
        self.labels: dict[str, Labels] = {}
        for name, (train_labels, test_labels) in given_labels.items():
            if test_labels is None:
                train_labels, test_labels = train_labels[index_of(self.train)], train_labels[index_of(self.test)]
            self.labels[name] = Labels(train_labels, test_labels)
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
        if record["type"] == "epoch":  # once the line is on disk: a callback that raises loses nothing
            self.tracker.epoch(record)

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
                    # A resumed run measures its epoch only where an unbroken run would have (epoch 0, every
                    # eval_every-th, the last), so that its curve has the same points.
                    if self._due(run.epoch) and not self._measured(run, run.epoch):
                        self._show(shown, run, self._measure(run))
                self._train(runs, shown)
            except KeyboardInterrupt:
                self._finish(runs, final=False)
                raise
        return self._finish(runs, final=True)

    def _train(self, runs: list[Run], shown: Any) -> None:
        train_seconds = 0.0
        while any(r.epoch < self.options.epochs for r in runs):
            budget = self.options.max_minutes
            elapsed = _clock() - self.began
            # The next round's training, then a measurement per run: in the round where it is due, else when
            # the budget stops the runs after it.
            left = [r for r in runs if r.epoch < self.options.epochs]
            measuring = sum(self.measure_seconds.get((r.name, r.seed), 0.0) for r in left)
            if budget is not None and elapsed + train_seconds + measuring + self._final_seconds(runs) > 60 * budget:
                for run in runs:
                    if not self._measured(run, run.epoch):
                        self._show(shown, run, self._measure(run))
                done = min(r.epoch for r in runs)
                reason = f"the {budget:g}-minute budget ended every start after {done} of {self.options.epochs} epochs"
                self.write({"type": "stopped", "reason": reason, "epochs": done})
                return
            train_seconds = 0.0
            for run in runs:
                if run.epoch >= self.options.epochs:
                    continue
                began = _clock()
                loss = run.train_epoch(self.train, self.device, self.rank, self.world)
                path = self.checkpoint_path(run)
                if path is not None and self.rank == 0:
                    save_checkpoint(run, path)
                train_seconds += _clock() - began
                evaluation = self._measure(run, loss) if self._due(run.epoch) else None
                shown.advance(self.steps_per_epoch)
                if evaluation is not None:
                    self._show(shown, run, evaluation)

    def _due(self, epoch: int) -> bool:
        """Whether a run is measured after ``epoch`` epochs: epoch 0, every ``eval_every``-th and the last."""
        return epoch % self.options.eval_every == 0 or epoch >= self.options.epochs

    def _show(self, shown: Any, run: Run, evaluation: Any) -> None:
        measure = "-ELBO" if evaluation.kind == "vae" else "distortion" if run.begun.is_vae else "recon"
        shown.describe(
            f"{run.name} seed {run.seed} epoch {run.epoch}/{self.options.epochs}: held-out {measure} "
            f"{objective_of(evaluation):.2f}"
        )

    def _final_seconds(self, runs: list[Run]) -> float:
        """What the end will take: each run's final measurement (its last measurement's time, scaled from the
        samples each epoch is measured on to all the held-out ones, times final_k / k where the draws count,
        plus one more for its reconstructions, samples and MSE), and the report."""
        seconds = REPORT_SECONDS if self.out is not None else 0.0
        whole = len(self.test) / len(self.measured_on)
        for run in runs:
            draws = self.options.final_k / self.options.k if is_gaussian(run) else 1.0
            measured = self.measure_seconds.get((run.name, run.seed), 0.0) * whole
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
            evaluation = evaluate(
                run.model, self.measured_on, likelihood=self.likelihood, k=self.options.k, seed=run.seed
            )
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
                self.write({"type": "shown", "data": rounded(shown[0])})
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
            errors = self._mse(run, sampled=False)
            mse = {"eval": errors.mean().item(), "sampled": None}
        if is_gaussian(run):
            with _seeded(self.device, "mse", run.name, run.seed, run.epoch):
                mse["sampled"] = self._mse(run, sampled=True).mean().item()
        extra: dict[str, Any] = {}
        if self.axes is not None:
            with _seeded(self.device, "axes", run.name, run.seed, run.epoch):
                extra["axes"], extra["pictures"] = self.axes.measure(run, evaluation, errors)
        # The AE has no prior, and its codes do not follow N(0, I): its row of the samples' grid decodes draws of
        # the first density fitted to its codes, as the AE-vs-VAE pictures do.
        drawn = extra["pictures"]["samples"] if extra and not run.begun.is_vae else {}
        samples_from = next(iter(drawn), None)
        if samples_from is None:
            with _seeded(self.device, "final", run.name, run.seed, run.epoch):
                samples = rounded(self._prior_samples(run, args))
        else:
            samples = drawn[samples_from]
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
                "reconstructions": rounded(recon),
                "samples": samples,
                "samples_from": samples_from,
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
        from fxvae.measure.bench import interleave

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
    # An option the comparison's fxvae did not have yet ran as its default does.
    defaults = json_ready(CompareOptions().to_dict())
    before = {k: v for k, v in {**defaults, **saved["options"]}.items() if k not in keep}
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


def _try_plot(comparison: Comparison, out: Path) -> list[str]:
    try:
        return [p.name for p in comparison.plot(out)]
    except InputError:  # no matplotlib: the report goes without pictures
        return []
