"""A progress bar for one epoch (rich): iterations done, mean loss, images per second, time left.

Only rank 0 draws it. On a terminal it redraws in place; in a log file rich prints the final state once.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


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
