"""Progress bars on stderr for long work (evaluation, comparison): rich, imported when a bar is shown."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


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


@contextlib.contextmanager
def bar(description: str, total: float | None, *, enabled: bool = True) -> Iterator[Bar]:
    """A transient bar on stderr while the block runs, where stderr is a terminal; ``total=None`` shows
    activity without an end.

    >>> with fxvae.progress.bar("batches", 3, enabled=False) as shown:
    ...     shown.advance()
    """
    if not enabled:
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        # A bar cannot redraw in a file or a pipe; rich would leave an empty line there.
        yield Bar()
        return
    columns: list[Callable[..., Any] | Any] = [TextColumn("{task.description}"), BarColumn()]
    columns += [MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        yield Bar(progress, progress.add_task(description, total=total))
