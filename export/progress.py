"""A progress bar for the long export steps (calibration, sensitivity, engine builds), silent when disabled."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """with progress_bar("calibrating", 300) as advance: ... advance(8) ...  (rich, on stderr, removed when done)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:  # a log file gets no bar (rich would leave blank lines)
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
