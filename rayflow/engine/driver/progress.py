"""A progress bar per map on the driver's terminal (rich): items done and failed, rate, ETA.

Shown when ``progress=True``, or by default when stderr is an interactive
terminal; never in captured output unless asked.  Fed with the per-map
counts the orchestrator keeps (per chunk, so its cost does not grow with N).
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from rayflow.presentation import FAILED


class _Rate(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} items/s" if speed else "", style="cyan")


class MapProgress:
    def __init__(self, enabled: bool | None, stream: Any = None):
        stream = stream or sys.stderr
        self.enabled = stream.isatty() if enabled is None else enabled
        self._bars: dict[str, Any] = {}
        self._progress: Progress | None = None
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("[red]{task.fields[failed]} failed"),
                _Rate(),
                TimeRemainingColumn(),
                console=Console(file=stream, force_terminal=enabled or None),
                transient=False,
            )
            self._progress.start()

    def update(self, maps: dict[str, dict[str, Any]]) -> None:
        if self._progress is None:
            return
        for key, info in maps.items():
            counts = info["counts"]
            done = sum(counts.values())
            failed = sum(n for state, n in counts.items() if state in FAILED)
            if key not in self._bars:
                self._bars[key] = self._progress.add_task(key, total=info["total"], failed=0)
            self._progress.update(self._bars[key], completed=done, total=info["total"] or None, failed=failed)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
