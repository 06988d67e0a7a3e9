"""Progress on stderr for long work (evaluation, comparison): a rich bar on a terminal, imported when one is shown;
plain lines in a file or a pipe, so that a redirected run's log shows how far it is."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any


class Bar:
    """A live bar's handle: ``advance()`` one step, ``describe(text)`` replaces its label; a no-op when off."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress, self._task = progress, task

    def advance(self, steps: float = 1.0) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def restart(self, text: str, total: float | None) -> None:
        """Back to 0 of a new ``total`` under a new label (the next pass over the data)."""
        if self._progress is not None:
            self._progress.reset(self._task, total=total, description=text)


class Lines(Bar):
    """Progress where a bar cannot redraw (a log file, a pipe): each new label is one line,
    ``<what>: <label> [<done>/<total>, <elapsed>]``; advancing alone writes nothing.

    >>> import io
    >>> stream = io.StringIO()
    >>> shown = fxvae.progress.Lines("comparing", 4, stream)
    >>> shown.advance(2); shown.describe("warm seed 0 epoch 1/2: held-out -ELBO 3.10")
    >>> stream.getvalue()
    'comparing: warm seed 0 epoch 1/2: held-out -ELBO 3.10 [2/4, 0:00:00]\\n'
    """

    def __init__(self, what: str, total: float | None, stream: IO[str]) -> None:
        super().__init__()
        self.what, self.total, self.stream = what, total, stream
        self.done = 0.0
        self.began = time.monotonic()

    def advance(self, steps: float = 1.0) -> None:
        self.done += steps

    def describe(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.began)
        hours, rest = divmod(elapsed, 3600)
        count = f"{self.done:g}/{self.total:g}" if self.total is not None else f"{self.done:g}"
        self.stream.write(f"{self.what}: {text} [{count}, {hours}:{rest // 60:02d}:{rest % 60:02d}]\n")
        self.stream.flush()

    def restart(self, text: str, total: float | None) -> None:
        self.what, self.total, self.done = text, total, 0.0


@contextlib.contextmanager
def bar(description: str, total: float | None, *, enabled: bool = True, stream: IO[str] | None = None) -> Iterator[Bar]:
    """A transient bar on ``stream`` (default: stderr) while the block runs where it is a terminal, else
    :class:`Lines`; ``total=None`` shows activity without an end.

    >>> with fxvae.progress.bar("batches", 3, enabled=False) as shown:
    ...     shown.advance()
    """
    if not enabled:
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=stream is None, file=stream)
    if not console.is_terminal:
        # A bar cannot redraw in a file or a pipe (rich would leave an empty line there): plain lines instead.
        yield Lines(description, total, stream if stream is not None else sys.stderr)
        return
    columns: list[Callable[..., Any] | Any] = [TextColumn("{task.description}"), BarColumn()]
    columns += [MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        yield Bar(progress, progress.add_task(description, total=total))
