"""Runs a fire as a normal run: ``flow.run`` in a thread of the serving process.

The serving process joins (or starts) Ray once; every run goes through the
flow's runner like any other, so it is traced and recorded as usual, under
the run id the server chose (claimed with the fire).  Cancelling asks the
run's actor (``rayflow.runtime.cancel_run``).
"""

from __future__ import annotations

import threading
from typing import Any

from rayflow.serving.server import Served


class ThreadHandle:
    def __init__(self, entry: Served, run_id: str):
        self.run_id = run_id
        self.local = entry.flow.options.runner == "local"
        self._state: str | None = None
        self._flow = entry.flow.with_options(run_id=run_id, progress=False)
        self._parameters = dict(entry.parameters)
        self._thread = threading.Thread(target=self._run, name=f"rayflow-serve-{run_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            run = self._flow.run(**self._parameters)
            self._state = run.state.type.value
        except BaseException as exc:  # noqa: BLE001 - a run that raises is its outcome, never the server's end
            self._state = f"ERROR ({type(exc).__name__}: {str(exc)[:200]})"

    def done(self) -> bool:
        return not self._thread.is_alive()

    def state(self) -> str:
        return self._state or "UNKNOWN"

    def cancel(self) -> None:
        if self.local:  # the in-process runner: its orchestrator is in this process
            from rayflow.runs.local import cancel_local

            if not cancel_local(self.run_id) and not self.done():
                raise RuntimeError(f"run {self.run_id} has not started yet")
            return
        from rayflow.runtime import cancel_run

        cancel_run(self.run_id, wait=0)


class ThreadLauncher:
    def launch(self, entry: Served, scheduled_for: float, run_id: str) -> Any:
        return ThreadHandle(entry, run_id)
