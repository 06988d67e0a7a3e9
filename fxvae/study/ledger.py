"""``metrics.jsonl``: a comparison's records, one JSON line each, appended and flushed to disk as they happen.

A line is ``{"type": ...}``: ``config`` (what was run, first), ``shown`` (the held-out samples the pictures
show), ``epoch`` (a run's held-out measurement after an epoch), ``final`` (its measurement at the final k and
its pictures; a Gaussian comparison's also holds the AE-against-VAE ``axes`` and their ``pictures``),
``throughput``, ``stopped`` (a budget ended it) and ``resumed``. Where a resumed comparison measures again, the
later line stands. A stopped comparison keeps every line it wrote; :func:`read`
rebuilds the :class:`~fxvae.study.Comparison` from them alone.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fxvae.errors import InputError
from fxvae.measure.evaluation import Evaluation
from fxvae.study.comparison import Comparison
from fxvae.study.records import Axes, Point, RunRecord

DECIMALS = 4
"""Decimals of the pictures' values in the records (far below what a picture shows)."""

FILE = "metrics.jsonl"
LOCK = ".lock"
"""The file a running comparison holds an exclusive lock on; it holds that process's id."""
_held: dict[Path, int] = {}
"""Folders this process holds, and how many nested holds each: the command line holds the folder before it checks
it, then calls :func:`fxvae.compare`, which holds it again."""
_lock_fds: dict[Path, int] = {}
"""The open lock file of each folder held. A forked child (a DataLoader worker) closes its copies, so that the
lock ends with this process, not with the last worker that outlives it."""


def _close_lock_fds() -> None:
    for fd in _lock_fds.values():
        os.close(fd)
    _lock_fds.clear()
    _held.clear()


os.register_at_fork(after_in_child=_close_lock_fds)


class Ledger:
    """Appends records to ``directory/metrics.jsonl`` (a fresh file, or the one a resumed comparison wrote)."""

    def __init__(self, directory: Path, *, resume: bool) -> None:
        self.path = directory / FILE
        if not resume or not self.path.exists():
            self.path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold ``directory`` (created if need be) for one comparison: an exclusive ``flock`` on its ``.lock`` file,
    which the operating system releases when the process ends, however it ends, so a killed comparison leaves
    nothing that blocks ``resume``. Another process holding it is an :class:`~fxvae.InputError` naming its
    process id. The lock file stays (deleting it would let two processes lock two different files). Where
    ``fcntl`` is missing (Windows), the folder is not locked.

    >>> import os
    >>> with fxvae.study.ledger.locked(tmp), fxvae.study.ledger.locked(tmp):  # this process may nest its holds
    ...     (tmp / ".lock").read_text().strip() == str(os.getpid())
    True
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise InputError(
            f"{str(directory)!r} is in use by another comparison (process {holder}): wait for it to end, or write "
            "to another folder"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key], _lock_fds[key] = 1, fd
    try:
        yield
    finally:
        del _held[key], _lock_fds[key]
        os.close(fd)  # releases the lock


def records(path: Path) -> list[dict[str, Any]]:
    """The file's records; a last line cut short by a kill is dropped."""
    lines = path.read_text().splitlines()
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise InputError(f"{str(path)!r} line {number} is not JSON ({err}); the file is damaged") from err
    return out


def read(source: str | os.PathLike[str]) -> Comparison:
    """The comparison a ``metrics.jsonl`` (or the folder holding one) records.

    >>> result = fxvae.compare(ae, torch.randn(120, 64), epochs=1, k=1, final_k=2, out=tmp, progress=False)
    >>> fxvae.study.read(tmp).starts == result.starts
    True
    """
    path = Path(source)
    path = path / FILE if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist: pass the folder a comparison wrote (out=...)")
    return comparison_of(records(path), str(path))


def comparison_of(lines: list[dict[str, Any]], where: str = "the records") -> Comparison:
    """The comparison that a list of records describes (see the module docstring)."""
    config: dict[str, Any] = {}
    runs: dict[tuple[str, int], RunRecord] = {}
    comparison = Comparison(config={}, runs=[])
    for record in lines:
        kind = record.get("type")
        if kind == "config":
            config = record
            runs.clear()
        elif kind == "shown":
            comparison.shown = record["data"]
        elif kind in ("epoch", "final"):
            key = (record["start"], record["seed"])
            run = runs.setdefault(key, RunRecord(*key))
            evaluation = Evaluation.from_dict(record["eval"])
            if kind == "epoch":
                point = Point(record["epoch"], record["step"], record["train_loss"], record["seconds"], evaluation)
                # A resumed run may measure an epoch again: the latest line stands.
                run.points = [p for p in run.points if p.epoch < point.epoch] + [point]
            else:
                run.final = evaluation
                run.steps_per_s = record.get("steps_per_s")
                run.reconstructions = record.get("reconstructions")
                run.samples = record.get("samples")
                run.samples_from = record.get("samples_from")
                run.mse = record.get("mse")
                run.model_file = record.get("model_file")
                run.axes = Axes.from_dict(record["axes"]) if record.get("axes") else None
                run.pictures = record.get("pictures")
        elif kind == "throughput":
            comparison.throughput = {k: v for k, v in record.items() if k != "type"}
        elif kind == "stopped":
            comparison.stopped = record["reason"]
        elif kind == "resumed":
            comparison.stopped = None
    if not config:
        raise InputError(f"{where} hold no comparison (no config line): they were not written by fxvae.compare")
    comparison.config = config
    order = {name: i for i, name in enumerate(config.get("options", {}).get("starts", ()))}
    comparison.runs = sorted(runs.values(), key=lambda r: (order.get(r.start, len(order)), r.seed))
    return comparison


def rounded(values: torch.Tensor) -> list[Any]:
    """A tensor of picture values as the records keep it: nested lists of floats, :data:`DECIMALS` decimals."""
    return values.detach().float().cpu().round(decimals=DECIMALS).tolist()
