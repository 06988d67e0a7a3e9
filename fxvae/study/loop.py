"""One training loop for every start of a comparison: the same optimiser, batch order, noise stream and steps.

```
for each step:  batches = the next accumulate batches of the seed's permutation of the epoch, cut into batch_size
                for each batch (this rank's shard of it):
                    recon = the model's forward (under autocast at bf16 or fp16), then cast to float32
                    loss  = likelihood.nll(recon, x) + beta_t * KL   (a quantiser: + its own term; the AE: the first)
                    backward of loss * its share of the step's samples (fp16: scaled)
                optimiser step, learning-rate schedule step
```
A run's random state (the reparameterisation's noise) is its own: it is restored before each of its epochs
and kept after, so runs can take turns, epoch by epoch, and a resumed run continues its stream exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fxvae.analysis.outputs import reconstruction_like
from fxvae.errors import FxvaeError, InputError
from fxvae.latents.gaussian import KLDivergence
from fxvae.measure.likelihoods import Likelihood
from fxvae.ops import kl_divergence
from fxvae.recipe import conversion
from fxvae.study.options import CompareOptions
from fxvae.study.samples import Samples
from fxvae.study.starts import Begun


def batch_order(samples: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """The epoch's batches of sample indices: a permutation that depends only on the seed and the epoch.

    >>> [b.tolist() for b in batch_order(5, 2, seed=0, epoch=1)]
    [[0, 4], [2, 3], [1]]
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return list(torch.randperm(samples, generator=generator).split(batch_size))


def step_groups(batches: list[torch.Tensor], accumulate: int) -> list[list[torch.Tensor]]:
    """The batches of each optimiser step: ``accumulate`` consecutive batches, the last step taking those left.
    Cut from one permutation, the steps are the batches of a ``batch_size * accumulate`` run.

    >>> [[b.tolist() for b in group] for group in step_groups(batch_order(5, 2, seed=0, epoch=1), 2)]
    [[[0, 4], [2, 3]], [[1]]]
    """
    return [batches[i : i + accumulate] for i in range(0, len(batches), accumulate)]


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def lr_factor(step: int, total: int, options: CompareOptions, warmup: int = 0) -> float:
    """The learning rate at ``step`` (0-based) of ``total`` as a multiple of ``options.lr``, with a linear rise
    over the first ``warmup`` steps.

    >>> options = fxvae.study.CompareOptions(schedule="cosine")
    >>> [round(lr_factor(s, 4, options, warmup=2), 3) for s in range(4)]
    [0.5, 0.854, 0.5, 0.146]
    """
    t = min(step / max(total, 1), 1.0)
    if options.schedule == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * t))
    elif options.schedule == "one-cycle":
        rise = 0.3
        if t < rise:
            factor = 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * t / rise))
        else:
            factor = 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - rise) / (1 - rise)))
    else:
        factor = 1.0
    if warmup:
        factor *= min(1.0, (step + 1) / warmup)
    return factor


def warmup_steps(options: CompareOptions, steps_per_epoch: int) -> int:
    """The learning rate's warm-up in steps: as given, or one epoch."""
    return steps_per_epoch if options.lr_warmup is None else options.lr_warmup


def optimiser(model: nn.Module, options: CompareOptions) -> torch.optim.Optimizer:
    """The run's optimiser: one group, or two where the log-sigma head learns at ``log_sigma_lr`` times lr."""
    params = [p for p in model.parameters() if p.requires_grad]
    head = {id(p) for p in _log_sigma_head(model).parameters()} if options.log_sigma_lr != 1.0 else set()
    groups: list[dict[str, Any]] = [{"params": [p for p in params if id(p) not in head]}]
    if head:
        groups.append({"params": [p for p in params if id(p) in head], "lr": options.lr * options.log_sigma_lr})
    if options.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=options.lr, momentum=0.9)
    cls = torch.optim.AdamW if options.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=options.lr)


def quantizer_weight(likelihood: Likelihood, recon: torch.Tensor) -> torch.Tensor:
    """What a quantiser's training term is multiplied by before it joins the reconstruction's nats per sample:
    half the reconstruction's Fisher information per sample, the factor that turns a mean squared error of the
    output into this likelihood's nats (for a Gaussian, D / (2 sigma^2)).

    The term is a mean over the latent's elements, made to sit beside ``F.mse_loss(out, x)``: that is the
    balance VQ-VAE's beta = 0.25 is set for. Added unweighted to a negative log-likelihood per sample it is
    hundreds to thousands of times weaker: nothing then holds the encoder's output near the codebook under the
    straight-through gradient, and the codebook collapses as the output runs away (docs/discrete.md). A user's
    ``log_prob`` has no Fisher information; it is weighed as a Gaussian of sigma 1 would be, D / 2.

    >>> weight = quantizer_weight(fxvae.likelihoods.Gaussian(sigma=0.1), torch.zeros(8, 64))
    >>> round(weight.item())  # 64 / (2 * 0.1^2)
    3200
    """
    try:
        fisher = likelihood.fisher(recon.detach())
    except InputError:
        fisher = torch.ones_like(recon)
    return 0.5 * fisher.flatten(1).sum(1).mean()


def _log_sigma_head(model: nn.Module) -> nn.Module:
    try:
        name = conversion(model).log_sigma_head
    except FxvaeError:  # the AE itself
        name = None
    return model.get_submodule(name) if name else nn.Module()


@dataclass
class Run:
    """One start under one seed: its model, optimiser and schedule, its random state, and where it is."""

    begun: Begun
    seed: int
    options: CompareOptions
    likelihood: Likelihood
    steps_per_epoch: int
    trained: nn.Module
    """What the steps run: the model, or its DistributedDataParallel wrapper."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    rng: torch.Tensor
    cuda_rng: torch.Tensor | None = None
    scaler: torch.amp.GradScaler | None = None
    """fp16's loss scale (its steps skipped where a gradient overflows); None at other precisions."""
    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    """Training wall time so far (the steps alone, no measurement)."""
    losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    """Training wall time of each epoch."""

    @property
    def name(self) -> str:
        return self.begun.name

    @property
    def model(self) -> nn.Module:
        return self.begun.model

    @property
    def total_steps(self) -> int:
        return self.options.epochs * self.steps_per_epoch

    def steps_per_s(self) -> float | None:
        """Training steps per second: the median epoch's, leaving out the first (warm-up) where there are more."""
        timed = self.epoch_seconds[1:] or self.epoch_seconds
        if not timed:
            return None
        return self.steps_per_epoch / sorted(timed)[len(timed) // 2]

    def beta(self) -> float:
        warmup = self.options.kl_warmup
        return self.options.beta * (min(1.0, (self.step + 1) / warmup) if warmup else 1.0)

    def loss(self, args: tuple[Any, ...]) -> torch.Tensor:
        """The training loss of one batch, float32: the forward at the run's precision, the rest in float32."""
        x = args[0]
        with self._autocast(x.device):
            out = self.trained(*args)
        # Outside autocast and cast up: a half-precision likelihood or KL sum loses nats to rounding.
        recon = reconstruction_like(out, x).float()
        loss = self.likelihood.nll(recon, x)
        aux = self.begun.aux
        if aux is None:
            return loss
        if not isinstance(aux, KLDivergence):  # a quantiser's own term (commitment), with its own beta
            return loss + quantizer_weight(self.likelihood, recon) * aux().float()
        q = aux.source.posterior()
        return loss + kl_divergence(
            q.mu.float(),
            q.log_sigma.float(),
            reduction=aux.reduction,
            beta=self.beta(),
            free_bits=self.options.free_bits,
        )

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        dtype = _DTYPES.get(self.options.precision)
        return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP's all-reduce only on the step's last backward: the earlier ones accumulate locally."""
        module = getattr(self.trained, "_orig_mod", self.trained)  # under torch.compile
        if last or not isinstance(module, nn.parallel.DistributedDataParallel):
            return contextlib.nullcontext()
        return module.no_sync()

    def _optimiser_step(self) -> None:
        if self.scaler is None:
            self.optimizer.step()
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def train_epoch(self, train: Samples, device: torch.device, rank: int, world: int) -> float:
        """One epoch of steps; returns the mean training loss (this rank's batches)."""
        self.epoch += 1
        self.model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)
        batches = batch_order(len(train), self.options.batch_size, self.seed, self.epoch)
        scheduled = self.options.schedule != "constant" or warmup_steps(self.options, self.steps_per_epoch) > 0
        steps = 0
        # A batch too small to shard (the last): every rank skips it alike.
        groups = [[b for b in group if len(b) >= world] for group in step_groups(batches, self.options.accumulate)]
        groups = [group for group in groups if group]
        shards = [indices[rank::world] if world > 1 else indices for group in groups for indices in group]
        with _RandomState(self, device):
            began = time.perf_counter()
            read = train.stream(shards, seed=self.seed, epoch=self.epoch)
            for group in groups:
                self.optimizer.zero_grad(set_to_none=True)
                total += self._accumulate(group, read, device)
                self._optimiser_step()
                if scheduled:
                    self._schedule_step()
                else:  # a constant rate: the scheduler's bookkeeping only
                    self.scheduler.last_epoch += 1
                self.step += 1
                steps += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.epoch_seconds.append(time.perf_counter() - began)
            self.seconds += self.epoch_seconds[-1]
        mean = (total / max(1, steps)).item()
        self.losses.append(mean)
        return mean

    def _accumulate(
        self, group: list[torch.Tensor], read: Iterator[tuple[Any, ...]], device: torch.device
    ) -> torch.Tensor:
        """The gradients of one optimiser step, left in ``.grad``; returns the step's loss. ``read`` gives this
        rank's shard of each batch in turn. Each batch's mean loss counts by its share of the step's samples:
        the gradient of the mean over all of them."""
        size = sum(len(b) for b in group)
        losses = []
        for i, indices in enumerate(group):
            args = next(read)
            if device.type != "cpu":
                args = tuple(a.to(device, non_blocking=True) if isinstance(a, torch.Tensor) else a for a in args)
            if self.options.channels_last:
                args = tuple(_channels_last(a) for a in args)
            with self._no_sync(last=i == len(group) - 1):
                loss = self.loss(args)
                if len(group) > 1:
                    loss = loss * (len(indices) / size)
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            losses.append(loss.detach())
        return losses[0] if len(losses) == 1 else torch.stack(losses).sum()

    def _schedule_step(self) -> None:
        if self.scaler is None:
            self.scheduler.step()
            return
        # A step fp16's scaler skipped (an overflow) still counts: the schedule is one of optimiser steps taken
        # or tried, as the run's length is.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before")
            self.scheduler.step()

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds to continue the run exactly."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng,
            "cuda_rng": self.cuda_rng,
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "seconds": self.seconds,
            "losses": self.losses,
            "epoch_seconds": self.epoch_seconds,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.rng, self.cuda_rng = state["rng"], state["cuda_rng"]
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.seconds = state["epoch"], state["step"], state["seconds"]
        self.losses = list(state["losses"])
        self.epoch_seconds = list(state["epoch_seconds"])


def _channels_last(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() == 4 and value.is_floating_point():
        return value.contiguous(memory_format=torch.channels_last)
    return value


class _RandomState:
    """The run's own random state while its epoch runs; the caller's before and after."""

    def __init__(self, run: Run, device: torch.device) -> None:
        self.run, self.device = run, device

    def __enter__(self) -> None:
        self.saved = torch.get_rng_state()
        torch.set_rng_state(self.run.rng)
        if self.device.type == "cuda":
            self.saved_cuda = torch.cuda.get_rng_state(self.device)
            if self.run.cuda_rng is not None:
                torch.cuda.set_rng_state(self.run.cuda_rng, self.device)

    def __exit__(self, *exc: object) -> None:
        self.run.rng = torch.get_rng_state()
        torch.set_rng_state(self.saved)
        if self.device.type == "cuda":
            self.run.cuda_rng = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(self.saved_cuda, self.device)


def start_run(
    begun: Begun,
    seed: int,
    options: CompareOptions,
    likelihood: Likelihood,
    batches_per_epoch: int,
    device: torch.device,
    rank: int,
) -> Run:
    """The run of ``begun`` under ``seed``: its model on ``device`` (wrapped in DDP when a process group runs,
    then compiled with ``options.compile``), a fresh optimiser and schedule over the optimiser steps of
    ``batches_per_epoch`` batches an epoch, fp16's gradient scaler, and a random stream seeded by the seed (and
    the rank)."""
    model = begun.model.to(device)
    if options.channels_last:  # the 4-d parameters (conv weights); the run's copy, never the user's AE
        model.to(memory_format=torch.channels_last)
    trained: nn.Module = model
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        ids = [device.index] if device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if options.compile:
        # The forward alone: backward goes through AOTAutograd's compiled graph, and the loss stays the eager
        # float32 code every precision shares. The VAE's posterior is kept by the compiled forward too.
        trained = torch.compile(trained)
    steps_per_epoch = -(-batches_per_epoch // options.accumulate)
    opt = optimiser(model, options)
    total = options.epochs * steps_per_epoch
    warmup = warmup_steps(options, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, options, warmup))
    generator = torch.Generator().manual_seed(seed * 7919 + rank)
    rng = generator.get_state()
    cuda_rng = None
    if device.type == "cuda":
        with torch.random.fork_rng(devices=[device]):
            torch.cuda.manual_seed(seed * 7919 + rank)
            cuda_rng = torch.cuda.get_rng_state(device)
    scaler = torch.amp.GradScaler(device.type) if options.precision == "fp16" else None
    return Run(begun, seed, options, likelihood, steps_per_epoch, trained, opt, scheduler, rng, cuda_rng, scaler)


def save_checkpoint(run: Run, path: Path) -> None:
    """Write the run's state atomically: a stopped comparison resumes from the last one written."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(run.state(), tmp)
    os.replace(tmp, path)


def load_checkpoint(run: Run, path: Path) -> bool:
    if not path.is_file():
        return False
    run.restore(torch.load(path, map_location="cpu", weights_only=True))
    return True


def is_gaussian(run: Run) -> bool:
    """Whether the run's model draws z (a Gaussian VAE): its measurement's cost grows with k."""
    return run.begun.is_vae and conversion(run.model).reparameterize is not None
