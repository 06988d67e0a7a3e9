"""A comparison's data as indexable samples, so that every start sees the same batches in the same order.

Tensors (one, or a tuple of the data and its conditions) and ``TensorDataset``s are indexed directly, a batch
at a time; any other map-style Dataset, or the dataset under a DataLoader, goes through its collate function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from fxvae.capture.tracing import as_args
from fxvae.errors import InputError


class Samples:
    """``len(samples)`` samples; ``samples.batch(indices)`` gives the model's inputs for those samples.

    >>> data = fxvae.study.Samples(torch.arange(10.0).reshape(5, 2))
    >>> len(data), data.batch(torch.tensor([4, 0]))[0].tolist()
    (5, [[8.0, 9.0], [0.0, 1.0]])
    """

    def __init__(
        self,
        data: Any,
        count: int = 1,
        *,
        _tensors: tuple[torch.Tensor, ...] | None = None,
        _dataset: Dataset | None = None,
        _collate: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.count = count
        self.tensors, self.dataset, self.collate = _tensors, _dataset, _collate or default_collate
        if _tensors is not None or _dataset is not None:
            return
        if isinstance(data, DataLoader):
            self.collate = data.collate_fn or default_collate
            data = data.dataset
        if isinstance(data, torch.Tensor):
            self.tensors = (data,)
        elif isinstance(data, TensorDataset):
            self.tensors = tuple(data.tensors)
        elif isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
            if len({len(t) for t in data}) != 1:
                raise InputError(f"the data's tensors have different lengths {[len(t) for t in data]}: one per input")
            self.tensors = tuple(data)
        elif isinstance(data, Dataset) and hasattr(data, "__len__"):
            self.dataset = data
        else:
            raise InputError(
                f"compare takes a tensor, a tuple of tensors (data, conditions), a Dataset or a DataLoader over "
                f"one, got {type(data).__name__}: a stream without a length cannot be shuffled or split"
            )
        if len(self) == 0:
            raise InputError("the data is empty: pass at least one sample")

    def __len__(self) -> int:
        return len(self.tensors[0]) if self.tensors is not None else len(self.dataset)

    def batch(self, indices: torch.Tensor) -> tuple[Any, ...]:
        """The first ``count`` inputs of the samples at ``indices``, as a batch."""
        if self.tensors is not None:
            return tuple(t[indices] for t in self.tensors[: self.count])
        batch = self.collate([self.dataset[int(i)] for i in indices])
        return as_args(batch)[: self.count] if isinstance(batch, (tuple, list)) else (batch,)

    def subset(self, indices: torch.Tensor) -> Samples:
        if self.tensors is not None:
            return Samples(None, self.count, _tensors=tuple(t[indices] for t in self.tensors))
        subset = torch.utils.data.Subset(self.dataset, indices.tolist())
        return Samples(None, self.count, _dataset=subset, _collate=self.collate)

    def with_count(self, count: int) -> Samples:
        return Samples(None, count, _tensors=self.tensors, _dataset=self.dataset, _collate=self.collate)

    def batches(self, size: int = 256) -> Iterator[tuple[Any, ...]]:
        """Every sample once, in order, ``size`` at a time (what evaluation and calibration read)."""
        for start in range(0, len(self), size):
            yield self.batch(torch.arange(start, min(start + size, len(self))))

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self.batches()

    def row_hashes(self, like: Samples | None = None) -> set[bytes]:
        """A digest of each sample's data input (its first tensor: the conditions do not count), by its values
        as float64 so that one sample stored in float32 and float64 matches. ``like``: samples whose data
        inputs must have the same shape per sample (else no row could match, which is refused).

        >>> data = fxvae.study.Samples(torch.arange(6.0).reshape(3, 2))
        >>> len(data.row_hashes()), data.count_in(fxvae.study.Samples(torch.tensor([[2.0, 3.0]])).row_hashes())
        (3, 1)
        """
        if like is not None:
            mine, theirs = self._sample_shape(), like._sample_shape()
            if mine != theirs:
                raise InputError(
                    f"the AE's training data (ae_train) holds samples of shape {list(mine)}, the data of shape "
                    f"{list(theirs)}: no sample could match; pass the data the AE was trained on"
                )
        return {digest for batch in self.batches() for digest in _digests(batch[0])}

    def count_in(self, hashes: set[bytes]) -> int:
        """How many samples' data inputs are among ``hashes`` (:meth:`row_hashes`)."""
        return sum(digest in hashes for batch in self.batches() for digest in _digests(batch[0]))

    def split_unseen(self, seen: set[bytes], fraction: float, seed: int) -> tuple[Samples, Samples, int]:
        """(kept, held out, unseen): a seeded ``fraction`` of all the samples held out from those whose data
        input is not in ``seen`` (all of those where they are fewer), and how many there were."""
        unseen = torch.tensor(
            [i for i, d in enumerate(d for b in self.batches() for d in _digests(b[0])) if d not in seen],
            dtype=torch.long,
        )
        if len(unseen) == 0:
            raise InputError(
                f"every one of the {len(self)} samples of the data is in the AE's training data (ae_train), so "
                "none is left to hold out: pass held-out data the AE never saw as the test data (--test; test=)"
            )
        if len(self) < 2:
            raise InputError(f"holding out a fraction of {len(self)} sample leaves nothing to train on: pass test data")
        held = min(len(unseen), max(1, round(fraction * len(self))), len(self) - 1)
        order = torch.randperm(len(unseen), generator=torch.Generator().manual_seed(seed))
        test = unseen[order[:held]].sort().values
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[test] = False
        return self.subset(keep.nonzero().flatten()), self.subset(test), len(unseen)

    def _sample_shape(self) -> tuple[int, ...]:
        return tuple(self.batch(torch.arange(1))[0].shape[1:])

    def split(self, fraction: float, seed: int) -> tuple[Samples, Samples]:
        """(kept, held out): a seeded random ``fraction`` of the samples held out (at least one each side)."""
        n = len(self)
        held = min(n - 1, max(1, round(fraction * n)))
        if n < 2:
            raise InputError(f"holding out a fraction of {n} sample leaves nothing to train on: pass test data")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return self.subset(order[held:].sort().values), self.subset(order[:held].sort().values)


def _digests(x: Any) -> Iterator[bytes]:
    rows = torch.as_tensor(x).detach().to("cpu", torch.float64).flatten(1).contiguous().numpy()
    for row in rows:
        yield hashlib.blake2b(row.tobytes(), digest_size=16).digest()
