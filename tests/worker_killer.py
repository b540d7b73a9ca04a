"""A killer of a run's busy Ray workers, for tests/test_fault_load.py (case 1 of the fault suite)."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import threading


def process_title(pid: int) -> str:
    """What a process calls itself (Ray names a worker ``ray::<task>`` while it runs one, ``ray::IDLE`` between)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")[0].decode(errors="replace").strip()
    except OSError:
        return ""


class WorkerKiller(threading.Thread):
    """SIGKILLs the run's busy workers, one every ``interval`` seconds, ``max_kills`` at most.

    In the manner of Ray's ``WorkerKillerActor`` (a bounded number of kills, spaced out, of
    workers that are running the chosen tasks), but as a thread of the test: the candidates are
    the processes the run's tasks recorded in ``pid_dir`` (never another test's Ray) whose title
    says they are running one of the run's tasks right now (``ray::<prefix>...``); the actor
    orchestrating the run (``ray::FlowRunActor``) runs no task of the run, and is refused anyway.
    """

    def __init__(self, pid_dir: pathlib.Path, prefix: str, *, max_kills: int, interval: float):
        super().__init__(daemon=True)
        self.pid_dir, self.prefix = pid_dir, prefix
        self.max_kills, self.interval = max_kills, interval
        self.killed: list[int] = []
        self.stopped = threading.Event()

    def busy_workers(self) -> list[int]:
        pids = [int(p.stem) for p in self.pid_dir.glob("*.pid")]
        return [pid for pid in pids if process_title(pid).startswith(f"ray::{self.prefix}")]

    def run(self) -> None:
        while len(self.killed) < self.max_kills and not self.stopped.wait(self.interval):
            busy = self.busy_workers()
            if not busy:
                continue
            pid = random.choice(busy)
            assert "FlowRunActor" not in process_title(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.killed.append(pid)

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)
