"""Progress bars on stderr for long work (ticks of a run, clips of feature extraction)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

err_console = Console(stderr=True)


class ProgressBar:
    """A rich progress bar over `unit`s on stderr; does nothing unless enabled."""

    def __init__(self, label: str, unit: str = "ticks", enabled: bool = True):
        self.label, self.unit, self.enabled, self.bar, self.task = label, unit, enabled, None, None

    def start(self, total: int):
        if not self.enabled:
            return
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn(self.unit), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=err_console, transient=False)
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total)

    def advance(self, n: int = 1):
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def stop(self):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
