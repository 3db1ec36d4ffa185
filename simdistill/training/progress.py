"""A rich progress bar for long loops that shows running values (losses, views/s, MB written)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """`with TrainProgress("teacher", total=N) as bar: bar.update(step, {"loss": 0.3})`.

    Disabled (no output) when `enabled=False`; on a non-terminal it prints a plain line every ~5 %.
    """

    def __init__(self, name: str, *, total: int, start: int = 0, enabled: bool = True, unit: str = "step") -> None:
        self.name = name
        self.total = total
        self.enabled = enabled
        self.unit = unit
        self._last_plain = start
        self._console = Console(stderr=True)
        self._live = enabled and self._console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        self._start = start

    def __enter__(self) -> "TrainProgress":
        if self._live:
            self._progress = Progress(
                TextColumn(f"[bold]{self.name}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self._console,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.name, total=self.total, completed=self._start, info="")
        return self

    def update(self, done: int, values: dict[str, float] | None = None) -> None:
        info = "  ".join(f"{k} {v:.4g}" for k, v in (values or {}).items())
        if self._progress is not None:
            self._progress.update(self._task, completed=done, info=info)
        elif self.enabled:
            every = max(1, self.total // 20)
            if done - self._last_plain >= every or done == self.total:
                self._last_plain = done
                print(f"[{self.name}] {self.unit} {done}/{self.total}  {info}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
