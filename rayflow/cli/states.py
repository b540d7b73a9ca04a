"""``rayflow run --log-states``: each task's state change printed as the history records it.

What ``rayflow submit --follow`` shows of a run on a cluster, where the job's output is all
the submitting machine sees.  It reads the run history the run writes (every
``FLUSH_SECONDS``), so it costs the run nothing; a history that cannot be read prints
nothing (the run reports its own history problems).
"""

from __future__ import annotations

import datetime
import sys
import threading
from typing import Any, TextIO

from rayflow.store import RunStore

POLL_SECONDS = 0.5
MESSAGE_CHARS = 300


def state_line(row: dict[str, Any]) -> str:
    """``HH:MM:SS.mmm STATE     task`` with the attempt past the first and the message, one line."""
    stamp = datetime.datetime.fromtimestamp(row["at"] or 0).strftime("%H:%M:%S.%f")[:-3]
    line = f"{stamp} {row['state']:<9} {row['task_key']}"
    if (row.get("attempt") or 1) > 1:
        line += f" (attempt {row['attempt']})"
    message = " ".join((row.get("message") or "").split())
    if message:
        line += f": {message[:MESSAGE_CHARS]}"
    return line


class StatePrinter:
    """Prints the run's new task transitions every ``interval`` seconds while in its ``with``."""

    def __init__(self, run_id: str, out: TextIO | None = None, interval: float = POLL_SECONDS):
        self.run_id = run_id
        self.out = out
        self.interval = interval
        self._after = 0
        self._store: RunStore | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the last poll, from __exit__, may meet the thread's
        self._thread = threading.Thread(target=self._loop, name="rayflow-states", daemon=True)

    def __enter__(self) -> StatePrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2 * self.interval + 5)
        self.poll()  # the last changes land with the run's end

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        try:
            if self._store is None:
                self._store = RunStore()
            rows = self._store.transitions_after(self.run_id, self._after)
        except Exception:  # noqa: BLE001 - a history not there yet, locked or broken: the run says so itself
            return
        out = self.out or sys.stderr
        for row in rows:
            self._after = row["row"]
            out.write(state_line(row) + "\n")
        out.flush()
