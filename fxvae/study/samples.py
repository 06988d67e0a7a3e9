"""A comparison's data as indexable samples, so that every start sees the same batches in the same order.

Tensors (one, or a tuple of the data and its conditions) and ``TensorDataset``s are indexed directly, a batch
at a time, in the training process. Any other map-style Dataset, or the dataset under a DataLoader, is read item
by item and collated: with ``workers`` > 0 by a ``torch.utils.data.DataLoader`` whose batch sampler replays the
batch order it is given (never the loader's shuffle), so the batches are the same with any number of workers.
Each item is read under seeds derived from (seed, epoch, sample index) (:class:`SeededItems`): a Dataset that
draws random augmentations gives every start of a seed the same augmented samples, with 0 workers or 8.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset, default_collate, get_worker_info

from fxvae.capture.tracing import as_args
from fxvae.errors import InputError
from fxvae.io.data import default_workers


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed a sample is read under: a digest of (seed, epoch, sample index), the same in every process.

    >>> item_seed(0, 1, 5) == item_seed(0, 1, 5) != item_seed(0, 2, 5)
    True
    """
    key = f"{seed}:{epoch}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


class SeededItems(Dataset):
    """``dataset``'s items read by key ``(seed, epoch, index)``, each under :func:`item_seed`: torch's CPU
    generator, Python's ``random`` and (where numpy is imported) numpy's global generator are seeded for the
    read (and, in the training process, restored after it). Augmentations drawn from those generators then
    depend on the sample and the epoch, never on the worker or the start; a Dataset drawing from its own
    ``Generator`` object is not seeded.

    >>> flips = SeededItems(torch.utils.data.TensorDataset(torch.arange(4.0)))
    >>> flips[(0, 1, 2)]
    (tensor(2.),)
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> Any:
        seed, epoch, index = key
        chosen = item_seed(seed, epoch, index)
        numpy = sys.modules.get("numpy")
        if get_worker_info() is not None:  # a loader worker's generators are the loader's own: nothing to restore
            _seed(chosen, numpy)
            return self.dataset[index]
        # In the training process, restoring costs about 0.15 ms a read (numpy's state is 624 words).
        saved = torch.default_generator.get_state(), random.getstate()
        saved_numpy = numpy.random.get_state() if numpy is not None else None
        try:
            _seed(chosen, numpy)
            return self.dataset[index]
        finally:
            torch.default_generator.set_state(saved[0])
            random.setstate(saved[1])
            if numpy is not None:
                numpy.random.set_state(saved_numpy)


def _seed(chosen: int, numpy: Any) -> None:
    # The CPU generator alone: torch.manual_seed also seeds every accelerator, at 0.1 ms a call.
    torch.default_generator.manual_seed(chosen)
    random.seed(chosen)
    if numpy is not None:
        numpy.random.seed(chosen % 2**32)


class _Replay(Sampler):
    """A batch sampler that yields the keys it was last given: one loader (and its persistent workers) reads
    every epoch of every start, each in the order the caller chose."""

    def __init__(self) -> None:
        self.keys: list[list[tuple[int, int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class Samples:
    """``len(samples)`` samples; ``samples.batch(indices)`` gives the model's inputs for those samples.

    ``workers``: DataLoader processes that read a Dataset (default: a DataLoader's ``num_workers`` where one is
    given, else :func:`default_workers`); tensors are always indexed in this process. ``pin_memory`` pins a
    Dataset's batches for a fast copy to CUDA.

    >>> data = fxvae.study.Samples(torch.arange(10.0).reshape(5, 2))
    >>> len(data), data.batch(torch.tensor([4, 0]))[0].tolist()
    (5, [[8.0, 9.0], [0.0, 1.0]])
    """

    def __init__(
        self,
        data: Any,
        count: int = 1,
        *,
        workers: int | None = None,
        pin_memory: bool = False,
        _tensors: tuple[torch.Tensor, ...] | None = None,
        _dataset: Dataset | None = None,
        _collate: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.count = count
        self.tensors, self.dataset, self.collate = _tensors, _dataset, _collate or default_collate
        self.workers, self.pin_memory = workers or 0, pin_memory
        self._loader: DataLoader | None = None
        if _tensors is not None or _dataset is not None:
            return
        if isinstance(data, DataLoader):
            self.collate = data.collate_fn or default_collate
            if workers is None:
                workers = data.num_workers
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
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
            raise InputError(f"workers={workers!r} must be a whole number of loader processes, 0 or more")
        self.workers = 0 if self.tensors is not None else default_workers() if workers is None else workers

    def __len__(self) -> int:
        return len(self.tensors[0]) if self.tensors is not None else len(self.dataset)

    def batch(self, indices: torch.Tensor) -> tuple[Any, ...]:
        """The first ``count`` inputs of the samples at ``indices``, as a batch."""
        if self.tensors is not None:
            return tuple(t[indices] for t in self.tensors[: self.count])
        items = SeededItems(self.dataset)
        return self._args(self.collate([items[(0, 0, int(i))] for i in indices]))

    def stream(self, batches: Sequence[torch.Tensor], *, seed: int = 0, epoch: int = 0) -> Iterator[tuple[Any, ...]]:
        """:meth:`batch` of each of ``batches`` in turn, a Dataset's items read under seeds of (``seed``,
        ``epoch``, index): by the loader's workers, ahead of the caller, where ``workers`` > 0.

        >>> data = fxvae.study.Samples(torch.utils.data.TensorDataset(torch.arange(6.0)), workers=0)
        >>> [b[0].tolist() for b in data.stream([torch.tensor([5, 1]), torch.tensor([0])])]
        [[5.0, 1.0], [0.0]]
        """
        if self.tensors is not None:
            yield from (self.batch(indices) for indices in batches)
            return
        keys = [[(seed, epoch, int(i)) for i in indices] for indices in batches]
        if self.workers == 0:
            items = SeededItems(self.dataset)
            yield from (self._args(self.collate([items[key] for key in batch])) for batch in keys)
            return
        loader = self._workers_loader()
        loader.batch_sampler.keys = keys
        read = iter(loader)
        while True:
            try:
                batch = next(read)
            except StopIteration:
                return
            except Exception as err:  # a worker's failure, said in one line
                self.close()
                raise InputError(_worker_failure(err, self.workers)) from err
            yield self._args(batch)

    def close(self) -> None:
        """End the loader's worker processes now, not when the loader is collected (a later read starts new
        ones)."""
        loader, self._loader = self._loader, None
        running = getattr(loader, "_iterator", None)
        if running is not None and hasattr(running, "_shutdown_workers"):
            running._shutdown_workers()

    def _workers_loader(self) -> DataLoader:
        if self._loader is None:
            self._loader = DataLoader(
                SeededItems(self.dataset),
                batch_sampler=_Replay(),
                num_workers=self.workers,
                collate_fn=self.collate,
                pin_memory=self.pin_memory,
                prefetch_factor=4,
                persistent_workers=True,
                # The loader's base seed comes from this generator, not the global one the training draws from.
                generator=torch.Generator().manual_seed(0),
            )
        return self._loader

    def _args(self, batch: Any) -> tuple[Any, ...]:
        return as_args(batch)[: self.count] if isinstance(batch, (tuple, list)) else (batch,)

    def _like(self, count: int, tensors: tuple[torch.Tensor, ...] | None, dataset: Dataset | None) -> Samples:
        return Samples(
            None,
            count,
            workers=self.workers,
            pin_memory=self.pin_memory,
            _tensors=tensors,
            _dataset=dataset,
            _collate=self.collate,
        )

    def subset(self, indices: torch.Tensor) -> Samples:
        if self.tensors is not None:
            return self._like(self.count, tuple(t[indices] for t in self.tensors), None)
        return self._like(self.count, None, torch.utils.data.Subset(self.dataset, indices.tolist()))

    def with_count(self, count: int) -> Samples:
        return self._like(count, self.tensors, self.dataset)

    def batches(self, size: int = 256) -> Iterator[tuple[Any, ...]]:
        """Every sample once, in order, ``size`` at a time (what evaluation and calibration read)."""
        yield from self.stream(list(torch.arange(len(self)).split(size)))

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


def _worker_failure(err: Exception, workers: int) -> str:
    """One line for a loader worker's failure: the Dataset's own error (the last line of the traceback the
    worker sent), or the process that died."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    said = lines[-1].strip() if lines else type(err).__name__
    return (
        f"reading the data with {workers} DataLoader worker(s) failed: {said}. Every finished epoch is kept: fix "
        "the Dataset and rerun with resume (--resume); workers=0 (--workers 0) reads it in this process, where "
        "the traceback is the Dataset's own"
    )


def _digests(x: Any) -> Iterator[bytes]:
    rows = torch.as_tensor(x).detach().to("cpu", torch.float64).flatten(1).contiguous().numpy()
    for row in rows:
        yield hashlib.blake2b(row.tobytes(), digest_size=16).digest()
