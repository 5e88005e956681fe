"""Terminal feedback of training (rich): data-path decision, ETA, one bar over the epochs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class Reporter:
    """Receives training events; prints them when enabled, ignores them otherwise."""

    def __init__(self, progress: Progress | None, console: Console | None) -> None:
        self._progress, self._console, self._task = progress, console, None

    def eta(self, seconds: float, epochs: int) -> None:
        """Announce the estimated wall time of ``epochs`` epochs (an upper bound: early stop)."""
        if self._console is not None:
            self._console.print(f"Estimated training time: up to {_fmt(seconds)} "
                                f"({epochs} epochs at most; early stopping may end sooner)")
        if self._progress is not None:
            self._task = self._progress.add_task("training", total=epochs, stats="")

    def epoch(self, epoch: int, total: int, row: dict[str, float]) -> None:
        """Advance the bar and show the epoch's loss and inner-validation C-index."""
        if self._progress is None or self._task is None:
            return
        stats = f"loss {row['loss']:.4f}  inner C {row['inner_cindex']:.3f}"
        self._progress.update(self._task, completed=epoch, stats=stats)


def _fmt(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


@contextlib.contextmanager
def reporter(enabled: bool, message: str = "") -> Iterator[Reporter]:
    """Yield a :class:`Reporter` printing to stderr when ``enabled``."""
    if not enabled:
        yield Reporter(None, None)
        return
    console = Console(stderr=True)
    if message:
        console.print(message)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[stats]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        yield Reporter(progress, console)
