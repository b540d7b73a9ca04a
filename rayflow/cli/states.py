"""``rayflow run --log-states``: each task's state change printed as the history records it;
without it, ``rayflow run`` prints only a task's wait for a limit (``LimitWaits``).

What ``rayflow submit --follow`` shows of a run on a cluster, where the job's output is all
the submitting machine sees.  It reads the run history the run writes (every
``FLUSH_SECONDS``), so it costs the run nothing; a history that cannot be read prints
nothing (the run reports its own history problems).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from rayflow.engine.admission import WAITING_FOR_LIMIT
from rayflow.presentation import clock
from rayflow.store import RunStore

POLL_SECONDS = 0.5
MESSAGE_CHARS = 300
WAIT_NOTICE_SECONDS = 1.0  # a wait for a limit shorter than this is not worth a line


def state_line(row: dict[str, Any]) -> str:
    """``HH:MM:SS.mmm STATE     task`` with the attempt past the first and the message, one line."""
    stamp = clock(row["at"] or 0)
    line = f"{stamp} {row['state']:<9} {row['task_key']}"
    if (row.get("attempt") or 1) > 1:
        line += f" (attempt {row['attempt']})"
    message = " ".join((row.get("message") or "").split())
    if message:
        line += f": {message[:MESSAGE_CHARS]}"
    return line


class LimitWaits:
    """The lines of a task's waits for a limit's slot, from its transitions: one when a task
    (a plain task's attempt, or a map none of whose chunks runs) has waited
    ``WAIT_NOTICE_SECONDS``, and one when it goes on.  A map's waiting chunks are its own
    business while another of its chunks runs, so the lines are per task, never per chunk;
    a wait shorter than the notice (a map whose next chunk waits a moment) prints nothing."""

    def __init__(self, notice: float = WAIT_NOTICE_SECONDS):
        self.notice = notice
        self.waiting: dict[str, list[Any]] = {}  # task key -> [limit, since, told]

    def feed(self, row: dict[str, Any]) -> list[str]:
        key, message, at = row["task_key"], row.get("message") or "", row["at"] or time.time()
        if row["state"] == "PENDING" and message.startswith(WAITING_FOR_LIMIT):
            self.waiting.setdefault(key, [message[len(WAITING_FOR_LIMIT) :].strip(), at, False])
            return self.tick(time.time())
        wait = self.waiting.pop(key, None)
        if wait is None or not wait[2]:
            return self.tick(time.time())
        limit, since, _ = wait
        went = "goes on" if row["state"] in ("RUNNING", "SUCCESS", "CACHED") else f"stopped waiting ({row['state']})"
        return [f"{clock(at)} {key}: {went} after {at - since:.1f} s waiting for limit {limit}", *self.tick(time.time())]

    def tick(self, now: float) -> list[str]:
        out = []
        for key, wait in self.waiting.items():
            limit, since, told = wait
            if not told and now - since >= self.notice:
                wait[2] = True
                out.append(f"{clock(since)} {key}: waiting for limit {limit} (no slot free; it holds no worker meanwhile)")
        return out


class StatePrinter:
    """Prints the run's new task transitions every ``interval`` seconds while in its ``with``:
    each as ``state_line`` does, or what ``waits`` (a ``LimitWaits``) makes of them."""

    def __init__(self, run_id: str, out: TextIO | None = None, interval: float = POLL_SECONDS, waits: LimitWaits | None = None):
        self.waits = waits
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
            for line in [state_line(row)] if self.waits is None else self.waits.feed(row):
                out.write(line + "\n")
        if self.waits is not None:
            for line in self.waits.tick(time.time()):
                out.write(line + "\n")
        out.flush()
