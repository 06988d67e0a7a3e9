"""The quantisers a discrete conversion inserts at the latent, and the training term they expose.

A **code** is the latent's feature vector at one position, along ``feature_dim``: the channel vector per
pixel (or time step) of a channels-first conv latent ``(B, C, H, W)``, whose codes are ``(B, H, W)``; the
feature vector per token of a features-last latent ``(B, T, C)``, codes ``(B, T)``; the whole vector of a
flat latent ``(B, D)``, one code per sample, codes ``(B,)``.

```
eval:      z --[codes]--> integer codes --[lookup]--> z_q                 the decoder reads z_q
training:  the same z_q, and the decoder's gradient reaches z straight through (z + sg(z_q - z))
```
:class:`VectorQuantize` (van den Oord et al. 2017) replaces a code by its nearest codebook entry; the codebook
learns by exponential moving averages (Razavi et al. 2019) or by gradient, and entries no code has chosen for a
while restart from recent encoder outputs. :class:`FiniteScalarQuantize` (Mentzer et al. 2023) rounds each
dimension to a fixed number of levels: no codebook to learn, none to collapse. Each forward keeps its
:class:`Quantized` (the latent, the codes, the codebook usage) for :class:`QuantizerLoss`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fxvae.errors import FxvaeError
from fxvae.latents.configs import CodebookUpdate
from fxvae.latents.kmeans import BLOCK_ELEMENTS, kmeans, nearest
from fxvae.recipe import QuantizerFamily, conversion, inserted


@dataclass(frozen=True)
class Quantized:
    """A quantiser's latest forward: its input, what the decoder read, the codes, and the codebook usage.

    >>> vq = fxvae.VectorQuantize(16, 8)
    >>> _ = vq(torch.randn(32, 8))
    >>> step = vq.quantized()
    >>> step.codes.shape, 1 <= step.perplexity <= 16, 0 < step.used <= 1
    (torch.Size([32]), True, True)
    """

    latent: torch.Tensor
    """The encoder's continuous latent: the quantiser's input."""
    quantized: torch.Tensor
    """The quantised latent, whose value the decoder read (in training mode the gradient passes it by)."""
    codes: torch.Tensor
    """One int64 code per position of the latent (see :mod:`fxvae.latents.quantize` for the layout)."""
    codebook_size: int

    @property
    def perplexity(self) -> float:
        """exp(entropy of the codes' histogram): how many codes an equally spread use would take."""
        _, counts = torch.unique(self.codes, return_counts=True)
        return math.exp(torch.special.entr(counts.double() / counts.sum()).sum().item())

    @property
    def used(self) -> float:
        """The fraction of the codebook's codes that this forward used."""
        return torch.unique(self.codes).numel() / self.codebook_size


class Quantizer(nn.Module):
    """What the quantisers share: codes per position, their lookup, the straight-through forward, the rate.

    ``width`` is the number of features in a code and ``feature_dim`` the latent dimension holding them (-1:
    features last, flat and token latents; 1: channels first, conv latents). Subclasses define how rows of
    features (one per position) become codes and back.
    """

    family: ClassVar[QuantizerFamily]

    def __init__(self, width: int, feature_dim: int) -> None:
        super().__init__()
        self.width, self.feature_dim = width, feature_dim
        self.latest: Quantized | None = None

    def __getstate__(self) -> dict[str, object]:
        # Copies and pickles leave the latest forward's tensors behind: they belong to that forward.
        return {**super().__getstate__(), "latest": None}

    @property
    def codebook_size(self) -> int:
        """How many distinct codes there are."""
        raise NotImplementedError

    @property
    def rate_bits(self) -> float:
        """Bits per position: log2 of the number of codes."""
        return math.log2(self.codebook_size)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        rows, positions = self._rows(latent), self._positions(latent)
        out, quantized, codes = self._quantize(rows)
        # An export traces the forward with placeholder tensors: nothing to learn from or to keep.
        if not torch.compiler.is_exporting():
            if self.training:
                with torch.no_grad():
                    self._learn(rows.detach(), codes)
            # The instance dict skips nn.Module.__setattr__'s checks, a few microseconds on every forward.
            self.__dict__["latest"] = Quantized(
                latent, self._unrows(quantized, positions), codes.reshape(positions), self.codebook_size
            )
        return self._unrows(out, positions)

    def codes(self, latent: torch.Tensor) -> torch.Tensor:
        """The int64 code of each position of ``latent``: its shape without ``feature_dim``."""
        return self._codes(self._rows(latent)).reshape(self._positions(latent))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The quantised latent of ``codes``: ``lookup(codes(z))`` is the eval-mode forward of ``z``."""
        return self._unrows(self._lookup(codes.reshape(-1)), codes.shape)

    def quantized(self) -> Quantized:
        """The latest forward's :class:`Quantized`."""
        if self.latest is None:
            raise FxvaeError(
                "the model has not run yet: call model(*inputs) before asking for its quantised latent or loss"
            )
        return self.latest

    def loss(self) -> torch.Tensor:
        """The training term of the latest forward."""
        raise NotImplementedError

    def fit(self, latents: Sequence[torch.Tensor]) -> None:
        """Initialise from batches of the encoder's latent (the calibration data's)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Back to the random start a new quantiser has (no data): what :meth:`fit` is measured against."""
        raise NotImplementedError

    def _rows(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.dim() < 2 or latent.shape[self.feature_dim] != self.width:
            raise FxvaeError(
                f"{type(self).__name__} quantises {self.width} features along dim {self.feature_dim} of a batched "
                f"latent; got shape {list(latent.shape)}: pass the latent the encoder returns"
            )
        return latent.movedim(self.feature_dim, -1).reshape(-1, self.width)

    def _positions(self, latent: torch.Tensor) -> torch.Size:
        return latent.movedim(self.feature_dim, -1).shape[:-1]

    def _unrows(self, rows: torch.Tensor, positions: torch.Size) -> torch.Tensor:
        return rows.reshape(*positions, self.width).movedim(-1, self.feature_dim)

    def _quantize(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(what the decoder reads, the quantised rows, the codes) for rows of features."""
        raise NotImplementedError

    def _codes(self, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _lookup(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _learn(self, rows: torch.Tensor, codes: torch.Tensor) -> None:
        """What a training forward updates outside the optimiser (nothing, unless a subclass says so)."""


class VectorQuantize(Quantizer):
    """z_q = the nearest of ``codebook_size`` learned codes to each code (squared Euclidean distance; of equally
    near codes, the lowest index), searched in blocks of bounded memory (:attr:`search_block`).

    The training term is ``commitment * ||z - sg(z_q)||^2`` (beta, the commitment loss), plus
    ``||sg(z) - z_q||^2`` when the codebook learns by ``update="gradient"``; with ``"ema"`` each code is
    instead the moving average (``decay``) of the encoder outputs it wins, and only codes a batch uses
    move. Codes whose moving-average use falls below ``dead_code_threshold`` times the average code's are
    restarted at random encoder outputs of the batch. Means are over the latent's elements, as for
    ``F.mse_loss``. ``fit`` initialises the codebook by k-means (:func:`fxvae.latents.kmeans.kmeans`).

    Under a process group (DistributedDataParallel) the moving averages are updated with every rank's codes:
    the per-code counts and sums are summed over the ranks, and dead codes restart at rows of all the ranks'
    batches drawn by rank 0, so every rank holds the codebook one process would on the ranks' batches together.
    Every rank must then run each training-mode forward, as DistributedDataParallel's steps do.

    >>> vq = fxvae.VectorQuantize(16, 8).train()
    >>> z = torch.randn(32, 8, requires_grad=True)
    >>> vq(z).shape, vq.codes(z).shape, vq.rate_bits
    (torch.Size([32, 8]), torch.Size([32]), 4.0)
    >>> vq.loss().backward()  # the commitment term pulls z towards its codes
    """

    family = "vq"
    search_block: int = BLOCK_ELEMENTS
    """(position, code) pairs the nearest-code search scores at a time (:func:`fxvae.latents.kmeans.nearest`): its
    memory is bounded by this, whatever the codebook and the batch; the codes do not depend on it."""

    def __init__(
        self,
        codebook_size: int,
        width: int,
        *,
        feature_dim: int = -1,
        commitment: float = 0.25,
        update: CodebookUpdate = "ema",
        decay: float = 0.99,
        dead_code_threshold: float = 0.03,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(width, feature_dim)
        self.commitment, self.update, self.decay = commitment, update, decay
        self.dead_code_threshold = dead_code_threshold
        factory = {"dtype": dtype, "device": device}
        codebook = torch.randn(codebook_size, width, **factory)
        if update == "gradient":
            self.codebook = nn.Parameter(codebook)
        else:
            self.register_buffer("codebook", codebook)
        # Moving averages per training step: how many positions choose each code, and (for "ema") the sum of
        # the encoder outputs each code wins, whose ratio is the code.
        self.register_buffer("usage", torch.zeros(codebook_size, **factory))
        self.register_buffer("code_sum", torch.zeros(codebook_size, width, **factory) if update == "ema" else None)

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def _codes(self, rows: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            # An exported graph has a symbolic batch, which a loop over blocks of rows cannot be: one matmul,
            # argmin ||x - c||^2 = argmin ||c||^2 - 2 x.c (||x||^2 is the same for every code).
            book = self.codebook.detach()
            return torch.addmm((book * book).sum(1), rows.detach(), book.T, alpha=-2).argmin(1)
        return nearest(rows, self.codebook, block=self.search_block)[0]

    def _lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.codebook)

    def _quantize(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        codes = self._codes(rows)
        quantized = self._lookup(codes)
        return (rows + (quantized - rows).detach() if self.training else quantized), quantized, codes

    def _learn(self, rows: torch.Tensor, codes: torch.Tensor) -> None:
        # Under a process group every rank adds its batch's statistics to the others' first: each rank then
        # updates as one process would on the ranks' batches together, and the ranks' codebooks stay equal.
        counts = torch.zeros_like(self.usage).index_add_(0, codes, torch.ones_like(codes, dtype=self.usage.dtype))
        if self.code_sum is None:
            counts = _summed_over_ranks(counts)
        else:
            sums = torch.zeros_like(self.code_sum).index_add_(0, codes, rows)
            both = _summed_over_ranks(torch.cat([counts[:, None], sums], 1))
            counts, sums = both[:, 0], both[:, 1:]
        self.usage.lerp_(counts, 1 - self.decay)
        if self.code_sum is not None:
            self.code_sum.lerp_(sums, 1 - self.decay)
            means = self.code_sum / self.usage.clamp_min(torch.finfo(self.usage.dtype).tiny)[:, None]
            self.codebook.copy_(torch.where((counts > 0)[:, None], means, self.codebook))
        if self.dead_code_threshold > 0:
            self._restart_dead(rows)

    def _restart_dead(self, rows: torch.Tensor) -> None:
        """Codes used far less than the average one start again at random rows of this batch (of every rank's
        batch, drawn by rank 0, under a process group)."""
        average = self.usage.mean()
        dead = self.usage < self.dead_code_threshold * average
        rows = _gathered_over_ranks(rows)
        picks = torch.randint(len(rows), (self.codebook_size,), device=rows.device)
        fresh = rows[_broadcast_from_rank_0(picks)]
        self.codebook.copy_(torch.where(dead[:, None], fresh, self.codebook))
        self.usage.copy_(torch.where(dead, average, self.usage))
        if self.code_sum is not None:
            self.code_sum.copy_(torch.where(dead[:, None], fresh * average, self.code_sum))

    def loss(self) -> torch.Tensor:
        step = self.quantized()
        term = self.commitment * F.mse_loss(step.latent, step.quantized.detach())
        if self.code_sum is None:
            term = term + F.mse_loss(step.quantized, step.latent.detach())
        return term

    def reset(self) -> None:
        """A codebook drawn from N(0, I), no use recorded: the start of a VQ layer that has seen no data.

        >>> vq = fxvae.VectorQuantize(16, 8)
        >>> vq.fit([torch.randn(64, 8)]); vq.reset()
        >>> float(vq.usage.sum())
        0.0
        """
        with torch.no_grad():
            self.codebook.normal_()
            self.usage.zero_()
            if self.code_sum is not None:
                self.code_sum.zero_()

    def fit(self, latents: Sequence[torch.Tensor]) -> None:
        """k-means on the codes of ``latents`` (batches of the encoder's latent): the codebook starts at the
        centres, and each code's use at its share of the rows per batch (the scale of a training step)."""
        found = kmeans(torch.cat([self._rows(latent.detach()) for latent in latents]), self.codebook_size)
        with torch.no_grad():
            self.codebook.copy_(found.centroids)
            self.usage.copy_(found.counts / len(latents))
            if self.code_sum is not None:
                self.code_sum.copy_(self.codebook * self.usage[:, None])


class FiniteScalarQuantize(Quantizer):
    """Each of ``len(levels)`` dimensions rounded to one of ``levels[d]`` values; the code is the mixed-radix
    number of the per-dimension levels, in ``[0, prod(levels))``.

    A dimension's range ``center +- scale`` is divided into ``levels[d]`` evenly spaced values; values outside
    it are clamped first (bounded rounding). Where the latent's ``width`` differs from ``len(levels)``, a
    ``project_down`` Linear maps each code to ``len(levels)`` dimensions and a ``project_up`` Linear maps the
    rounded values back. ``fit`` sets the projections to the latent's principal components and the ranges to
    the data's, so that a converted model's first distortion is only the dropped components and the rounding;
    ``convert`` keeps the fit only where it reconstructs the calibration data better than the start without data
    (on a latent with heavy tails the data's extremes make every step wide). There is no training term:
    :meth:`loss` is 0.

    >>> fsq = fxvae.FiniteScalarQuantize((8, 5, 5, 5), 4).eval()
    >>> z = torch.randn(32, 4)
    >>> fsq.codebook_size, fsq.codes(z).shape, torch.equal(fsq.lookup(fsq.codes(z)), fsq(z))
    (1000, torch.Size([32]), True)
    """

    family = "fsq"

    def __init__(
        self,
        levels: Sequence[int],
        width: int,
        *,
        feature_dim: int = -1,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(width, feature_dim)
        self.levels = tuple(int(n) for n in levels)
        factory = {"dtype": dtype, "device": device}
        dims = len(self.levels)
        projected = width != dims
        self.project_down = nn.Linear(width, dims, **factory) if projected else None
        self.project_up = nn.Linear(dims, width, **factory) if projected else None
        self.register_buffer("center", torch.zeros(dims, **factory))
        self.register_buffer("scale", torch.ones(dims, **factory))
        # Constants of the levels themselves, rebuilt from ``levels``: not state.
        self.register_buffer(
            "half_steps", torch.tensor([(n - 1) / 2 for n in self.levels], **factory), persistent=False
        )
        self.register_buffer("radix", torch.tensor(self.levels, device=device), persistent=False)
        places = [math.prod(self.levels[:d]) for d in range(dims)]
        self.register_buffer("places", torch.tensor(places, device=device), persistent=False)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def rate_bits(self) -> float:
        return sum(math.log2(n) for n in self.levels)

    def _bounded(self, rows: torch.Tensor) -> torch.Tensor:
        reduced = rows if self.project_down is None else self.project_down(rows)
        return ((reduced - self.center) / self.scale).clamp(-1.0, 1.0)

    def _values(self, digits: torch.Tensor) -> torch.Tensor:
        """The rounded values, in [-1, 1], of per-dimension level indices (floats holding integers)."""
        return digits / self.half_steps - 1

    def _restored(self, values: torch.Tensor) -> torch.Tensor:
        reduced = torch.addcmul(self.center, values, self.scale)
        return reduced if self.project_up is None else self.project_up(reduced)

    def _codes(self, rows: torch.Tensor) -> torch.Tensor:
        return self._number(torch.round((self._bounded(rows) + 1) * self.half_steps))

    def _number(self, digits: torch.Tensor) -> torch.Tensor:
        return (digits.long() * self.places).sum(-1)

    def _lookup(self, codes: torch.Tensor) -> torch.Tensor:
        digits = codes[:, None] // self.places % self.radix
        return self._restored(self._values(digits.to(self.center.dtype)))

    def _quantize(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bounded = self._bounded(rows)
        digits = torch.round((bounded + 1) * self.half_steps)
        values = self._values(digits)
        if self.training:
            values = bounded + (values - bounded).detach()
        out = self._restored(values)
        return out, out, self._number(digits)

    def loss(self) -> torch.Tensor:
        latent = self.quantized().latent
        return torch.zeros((), dtype=latent.dtype, device=latent.device)

    def reset(self) -> None:
        """Projections as a new Linear draws them, each dimension's range [-1, 1]: FSQ before any data.

        >>> fsq = fxvae.FiniteScalarQuantize((5, 5), 2)
        >>> fsq.fit([10 * torch.randn(64, 2)]); fsq.reset()
        >>> fsq.scale.tolist()
        [1.0, 1.0]
        """
        with torch.no_grad():
            for projection in (self.project_down, self.project_up):
                if projection is not None:
                    projection.reset_parameters()
            self.center.zero_()
            self.scale.fill_(1.0)

    def fit(self, latents: Sequence[torch.Tensor]) -> None:
        """Projections onto the top ``len(levels)`` principal components of the codes of ``latents`` (where
        there are projections), and each dimension's range the codes' own, so that the levels cover them."""
        rows = torch.cat([self._rows(latent.detach()) for latent in latents]).double()
        if self.project_down is not None:
            mean = rows.mean(0)
            _, vectors = torch.linalg.eigh((rows - mean).T @ (rows - mean))
            components = vectors.flip(1)[:, : len(self.levels)]
            # More levels than features: the extra dimensions read nothing and write nothing.
            basis = F.pad(components, (0, len(self.levels) - components.shape[1]))
            rows = (rows - mean) @ basis
            with torch.no_grad():
                self.project_down.weight.copy_(basis.T)
                self.project_down.bias.copy_(-(basis.T @ mean))
                self.project_up.weight.copy_(basis)
                self.project_up.bias.copy_(mean)
        low, high = rows.min(0).values, rows.max(0).values
        with torch.no_grad():
            self.center.copy_((high + low) / 2)
            self.scale.copy_(((high - low) / 2).clamp_min(torch.finfo(self.scale.dtype).tiny))


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _summed_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks of the default process group (itself without one)."""
    if _distributed():
        dist.all_reduce(tensor)
    return tensor


def _gathered_over_ranks(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's ``rows``, in rank order (the ranks' batches may differ in length)."""
    if not _distributed():
        return rows
    lengths = [torch.zeros(1, dtype=torch.int64, device=rows.device) for _ in range(dist.get_world_size())]
    dist.all_gather(lengths, torch.tensor([len(rows)], device=rows.device))
    longest = int(max(lengths).item())
    padded = [rows.new_empty(longest, rows.shape[1]) for _ in lengths]
    dist.all_gather(padded, torch.cat([rows, rows.new_zeros(longest - len(rows), rows.shape[1])]))
    return torch.cat([part[: int(n.item())] for part, n in zip(padded, lengths, strict=True)])


def _broadcast_from_rank_0(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``tensor`` on every rank: one random draw that all ranks follow."""
    if _distributed():
        dist.broadcast(tensor, 0)
    return tensor


class QuantizerLoss(nn.Module):
    """The quantiser's training term of a discrete model's latest forward (``convert(..., latent=...)``'s loss).

    VQ: ``beta * ||z - sg(z_q)||^2`` (commitment), plus ``||sg(z) - z_q||^2`` when the codebook learns by
    gradient; FSQ: 0. It reads the quantiser's latest forward and does not own it, as
    :class:`fxvae.KLDivergence` reads the reparameterisation.

    >>> vq, loss = fxvae.convert(ae, x, latent=fxvae.VQ(codebook_size=8), calibration=torch.randn(64, 64))
    >>> total = F.mse_loss(vq.train()(x), x) + loss()
    >>> loss.source.quantized().codes.shape
    torch.Size([16])
    """

    def __init__(self, source: Quantizer) -> None:
        super().__init__()
        object.__setattr__(self, "source", source)

    def forward(self) -> torch.Tensor:
        return self.source.loss()


def quantizer_of(vae: nn.Module, what: str) -> Quantizer:
    """The quantiser of a discrete model; ``what`` names the call that needs it, for another latent."""
    recipe = conversion(vae)
    if recipe.quantizer is None:
        raise FxvaeError(
            f"{what} needs a discrete latent, and {type(vae).__name__} has latent={recipe.options.latent.family!r}: "
            "convert with latent='vq' or latent='fsq' (fxvae.VQ(...), fxvae.FSQ(...); fxvae.posterior reads a "
            "Gaussian VAE's latent)"
        )
    return inserted(vae, recipe.quantizer.module, Quantizer)


def quantized(vae: nn.Module) -> Quantized:
    """The quantised latent of a discrete model's latest forward: ``.latent``, ``.codes``, ``.perplexity``,
    ``.used`` (the fraction of the codebook used).

    >>> vq, loss = fxvae.convert(ae, x, latent=fxvae.FSQ(levels=(5, 5, 5)), calibration=torch.randn(64, 64))
    >>> _ = vq.eval()(x)
    >>> step = fxvae.quantized(vq)
    >>> step.codes.shape, step.latent.shape, 0 < step.used <= 1
    (torch.Size([16]), torch.Size([16, 8]), True)
    """
    return quantizer_of(vae, "fxvae.quantized").quantized()
