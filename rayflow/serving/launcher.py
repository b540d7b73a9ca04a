"""Runs a fire as a normal run: ``flow.run`` in a thread of the serving process.

The serving process joins (or starts) Ray once; every run goes through the
flow's runner like any other, so it is traced and recorded as usual, under
the run id the server chose (claimed with the fire).  ``cancel_here``
cancels a run going in this process: an in-process one through its
orchestrator, one on Ray through its actor (``rayflow.runtime.cancel_run``).
The UI's actions (``rayflow serve --ui``) start and cancel runs the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rayflow.serving.server import Served
from rayflow.states import error_text


def cancel_here(run_id: str, *, on_ray: bool) -> None:
    """Cancel ``run_id``: an in-process run of this process, else (``on_ray``) one on Ray."""
    from rayflow.runs.local import cancel_local

    if cancel_local(run_id):
        return
    if not on_ray:
        raise LookupError(f"run {run_id} is not going in this process")
    from rayflow.runtime import cancel_run

    cancel_run(run_id, wait=0)


class ThreadHandle:
    """``body()`` (a run: it returns a FlowRun) in a thread of its own, under ``run_id``."""

    def __init__(self, run_id: str, body: Callable[[], Any], *, on_ray: bool):
        self.run_id = run_id
        self.on_ray = on_ray
        self._body = body
        self._state: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"rayflow-serve-{run_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._state = self._body().state.type.value
        except BaseException as exc:  # noqa: BLE001 - a run that raises is its outcome, never the server's end
            self._state = f"ERROR ({error_text(type(exc).__name__, str(exc)[:200])})"

    def done(self) -> bool:
        return not self._thread.is_alive()

    def state(self) -> str:
        return self._state or "UNKNOWN"

    def cancel(self) -> None:
        if not self.done():
            cancel_here(self.run_id, on_ray=self.on_ray)


def run_in_thread(flow: Any, parameters: dict[str, Any], run_id: str) -> ThreadHandle:
    """A run of ``flow`` under ``run_id`` with ``parameters``, in a thread."""
    chosen = flow.with_options(run_id=run_id, progress=False)
    return ThreadHandle(run_id, lambda: chosen.run(**parameters), on_ray=flow.options.runner != "local")


class ThreadLauncher:
    def launch(self, entry: Served, scheduled_for: float, run_id: str) -> Any:
        return run_in_thread(entry.flow, dict(entry.parameters), run_id)
