"""Progress bars (rich, on stderr), one module for every verb: counters for evaluation, calibration and frames, and
the training epoch bar. On a terminal they redraw in place; a log file gets no counter bar (rich would leave blank
lines) and the epoch bar's final state once.

    with progress_bar("calibrating", 300) as bar:   bar(8)                    # advance by 8
                                                    bar.update(done, total)   # or set the position
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


class _Bar:
    def __init__(self, progress: Progress | None, task=None):
        self._progress, self._task = progress, task

    def __call__(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, done: int, total: int | None = None, note: str | None = None) -> None:
        """Set the position (and total); note: text shown after the bar, e.g. "12.5 frames/s"."""
        if self._progress is not None:
            fields = {} if note is None else {"note": note}
            self._progress.update(self._task, completed=done, total=total, **fields)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None, enabled: bool = True) -> Iterator[_Bar]:
    """A transient counter bar with elapsed and remaining time and a free-text note (bar.update(..., note=...))."""
    out = console()
    if not enabled or not out.is_terminal:
        yield _Bar(None)
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[note]}")]
    with Progress(*columns, console=out, transient=True) as progress:
        task = progress.add_task(description, total=total, note="")
        yield _Bar(progress, task)


class EpochProgress:
    """with EpochProgress(enabled, total, "epoch 3/70") as bar: bar.update(done, loss, images_per_s)"""

    def __init__(self, enabled: bool, total: int, description: str, completed: int = 0):
        self.enabled = enabled
        self._progress = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4g}"), TextColumn("{task.fields[ips]:.1f} img/s"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=console(), transient=False,
            )
            self._task = self._progress.add_task(description, total=total, completed=completed, loss=float("nan"),
                                                 ips=0.0)

    def __enter__(self) -> "EpochProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, completed: int, loss: float, images_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, loss=loss, ips=images_per_s)
