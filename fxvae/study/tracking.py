"""Tracking: each measured epoch's record, the line ``metrics.jsonl`` gets, also goes to TensorBoard event files
and to the user's callbacks (W&B, MLflow, anything that takes a dict).

```
out/tensorboard/<start>/seed<N>/events.out.tfevents.*     one TensorBoard run per start and seed
    tags: train_loss, seconds, eval/neg_elbo, eval/nll, eval/recon, eval/kl, ...   (global step: the epoch)
callbacks: each called as callback(record), after the line is on disk
```
TensorBoard is optional (``pip install 'fxvae[tensorboard]'``) and imported only when a comparison writes to
``out``: ``import fxvae`` never loads it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fxvae.errors import CallbackError, InputError, first_line

FOLDER = "tensorboard"
"""The folder under ``out`` that holds the event files: ``tensorboard --logdir <out>/tensorboard``."""
INSTALL = "pip install 'fxvae[tensorboard]'"
MEASURED = ("neg_elbo", "nll", "recon", "kl", "mutual_info", "active_units", "perplexity", "codes_used")
"""The evaluation's values that become curves: each estimate's value (its stderr stays in ``metrics.jsonl``) and
what is counted per measurement. The rest of ``"eval"`` (k, n, the likelihood, the seed) is a setting."""

Callback = Callable[[dict[str, Any]], Any]


def run_name(record: dict[str, Any]) -> str:
    """The run an epoch record belongs to, as TensorBoard names it: ``<start>/seed<N>``.

    >>> fxvae.study.tracking.run_name({"type": "epoch", "start": "warm", "seed": 1, "epoch": 3})
    'warm/seed1'
    """
    return f"{record['start']}/seed{record['seed']}"


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers an epoch record measures, as one flat dict keyed ``<start>/seed<N>/<tag>``: the curves that
    TensorBoard shows, for a tracker that takes flat dicts of numbers (``mlflow.log_metrics``, ``wandb.log``).

    Tags: ``train_loss`` (none at epoch 0, before any step), ``seconds`` (training time so far), and
    ``eval/<name>`` for each of :data:`MEASURED` that the evaluation holds.

    >>> record = {"type": "epoch", "start": "warm", "seed": 0, "epoch": 1, "step": 6, "train_loss": 30.5,
    ...           "seconds": 0.2, "eval": {"kind": "vae", "k": 8, "neg_elbo": {"value": 29.1, "stderr": 0.4},
    ...           "kl": {"value": 4.2, "stderr": 0.1}, "nll": None, "active_units": 6}}
    >>> fxvae.study.scalars(record)  # doctest: +NORMALIZE_WHITESPACE
    {'warm/seed0/train_loss': 30.5, 'warm/seed0/seconds': 0.2, 'warm/seed0/eval/neg_elbo': 29.1,
     'warm/seed0/eval/kl': 4.2, 'warm/seed0/eval/active_units': 6.0}
    """
    run = run_name(record)
    return {f"{run}/{tag}": value for tag, value in _tags(record).items()}


def _tags(record: dict[str, Any]) -> dict[str, float]:
    tags = {name: float(record[name]) for name in ("train_loss", "seconds") if record.get(name) is not None}
    evaluation = record.get("eval") or {}
    for name in MEASURED:
        value = evaluation.get(name)
        if isinstance(value, dict):  # an Estimate: its value
            value = value.get("value")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            tags[f"eval/{name}"] = float(value)
    return tags


def checked_callbacks(callbacks: Iterable[Callback] | None) -> tuple[Callback, ...]:
    """``callbacks`` as a tuple of callables; anything else is refused before any work.

    >>> fxvae.study.tracking.checked_callbacks(print)
    Traceback (most recent call last):
    fxvae.errors.InputError: callbacks=<built-in function print> must be a list of callables: callbacks=[print]
    """
    if callbacks is None:
        return ()
    if callable(callbacks) or isinstance(callbacks, (str, bytes, dict)):
        name = getattr(callbacks, "__name__", "f")
        raise InputError(f"callbacks={callbacks!r} must be a list of callables: callbacks=[{name}]")
    given = tuple(callbacks)
    wrong = [f"callbacks[{i}]={c!r}" for i, c in enumerate(given) if not callable(c)]
    if wrong:
        raise InputError(f"{', '.join(wrong)} is not callable: pass functions that take the record, f(record)")
    return given


class Tracker:
    """Sends each epoch record to TensorBoard (one ``SummaryWriter`` per run, under ``out/tensorboard``) and to
    the callbacks; a context manager that closes the writers however the comparison ends.

    ``tensorboard``: True writes event files (an :class:`~fxvae.InputError` where ``out`` is None or tensorboard
    does not import, before any work); False writes none; None writes them where ``out`` is given and
    tensorboard imports, and otherwise warns once how to install it. ``writes``: whether this process writes
    (rank 0 under DDP); the other ranks only check the arguments alike.

    >>> with fxvae.study.tracking.Tracker(None, tensorboard=False, callbacks=[print]) as tracker:
    ...     tracker.epoch({"type": "epoch", "start": "warm", "seed": 0, "epoch": 0})
    {'type': 'epoch', 'start': 'warm', 'seed': 0, 'epoch': 0}
    """

    def __init__(
        self,
        out: Path | None,
        *,
        tensorboard: bool | None = None,
        callbacks: Iterable[Callback] | None = None,
        writes: bool = True,
    ) -> None:
        if tensorboard not in (None, True, False):
            raise InputError(f"tensorboard={tensorboard!r} must be True, False or None (where it is installed)")
        given = checked_callbacks(callbacks)
        self.callbacks = given if writes else ()
        self.out = out
        self.writers: dict[str, Any] = {}
        self.summary_writer: Any = None
        if tensorboard is True and out is None:
            raise InputError("tensorboard=True writes event files under out=<folder>: pass out")
        if out is None or tensorboard is False:
            return
        try:
            self.summary_writer = _summary_writer()
        except ImportError as err:
            if tensorboard:
                raise InputError(
                    f"tensorboard=True needs TensorBoard ({first_line(err)}): {INSTALL}, or pass tensorboard=False"
                ) from err
            if writes:
                warnings.warn(
                    f"no TensorBoard curves: tensorboard is not installed ({INSTALL}); the curves are in "
                    "metrics.jsonl. Pass tensorboard=False (--no-tensorboard) to silence this",
                    UserWarning,
                    stacklevel=4,
                )
        if not writes:
            self.summary_writer = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def epoch(self, record: dict[str, Any]) -> None:
        """One measured epoch: its scalars to the run's event file (flushed: a kill loses at most this one), then
        each callback gets the record as ``metrics.jsonl`` holds it (a fresh copy for each)."""
        if self.summary_writer is not None:
            name = run_name(record)
            writer = self.writers.get(name)
            if writer is None:
                writer = self.writers[name] = self.summary_writer(str(Path(self.out, FOLDER, name)))
            for tag, value in _tags(record).items():
                writer.add_scalar(tag, value, global_step=record["epoch"])
            writer.flush()
        line = json.dumps(record)
        for index, callback in enumerate(self.callbacks):
            try:
                callback(json.loads(line))
            except Exception as err:
                raise CallbackError(
                    f"callbacks[{index}] ({_describe(callback)}) raised {type(err).__name__}: {first_line(err)} (on "
                    f"the record of {record['start']} seed {record['seed']} epoch {record['epoch']}). {self._kept()}"
                ) from err

    def _kept(self) -> str:
        if self.out is None:
            return "Fix the callback and run the comparison again"
        return (
            f"Every finished epoch is kept in {str(self.out / 'metrics.jsonl')!r} and the checkpoints: fix the "
            "callback and continue with resume=True"
        )

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def installed() -> bool:
    """Whether ``torch.utils.tensorboard`` imports here (it needs the ``tensorboard`` package).

    >>> isinstance(fxvae.study.tracking.installed(), bool)
    True
    """
    try:
        _summary_writer()
    except ImportError:
        return False
    return True


def _summary_writer() -> type:
    """``torch.utils.tensorboard.SummaryWriter``: imported here, as a comparison with ``out`` starts."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


def _describe(callback: Callback) -> str:
    """A callable as a message names it: its qualified name, and where a function is defined."""
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    code = getattr(callback, "__code__", None)
    return f"{name} at {code.co_filename}:{code.co_firstlineno}" if code is not None else name
