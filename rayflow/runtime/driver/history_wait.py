"""The history of a run the driver was answered for before it was on disk.

A run's actor answers the driver as soon as the run ends and writes the run's last rows to the
history after that (``FlowRunActor._drive``): the answer does not wait for the disk.  This
module keeps the ids of such runs (``noted``) and waits for their rows (``settle``, one actor
call for all of them, bounded in time) before anything of this process could miss them:

- before this process opens the history (``store.history.BEFORE_OPEN``): ``rayflow run``'s
  task table, ``RunStore(...).run(id)`` right after ``flow.run()``, ``rayflow show``;
- before ``ray.shutdown()`` (which takes the driver's actor along) and when the process exits
  (atexit, run before Ray's own shutdown hook), so that a run that ended is in the history
  before its driver is gone.

Runs in the driver.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

import ray

from rayflow.store import history

logger = logging.getLogger(__name__)
SETTLE_SECONDS = history.CLOSE_SECONDS + 2.0  # the actor's close waits CLOSE_SECONDS at most, then keeps the rows in a file

_pending: dict[str, Any] = {}  # run id -> the actor writing its last rows
_lock = threading.Lock()
_installed = False


def noted(actor: Any, run_id: str) -> None:
    """The driver has the answer of ``run_id``; its last rows may still be on their way."""
    with _lock:
        _pending[run_id] = actor
    _install()


def pending() -> list[str]:
    with _lock:
        return list(_pending)


def settle(timeout: float = SETTLE_SECONDS) -> None:
    """Wait until the last rows of every noted run are written (or given up by their writer,
    which keeps them in a file: store.recovery); never raises."""
    with _lock:
        if not _pending:
            return
        by_actor: dict[int, tuple[Any, list[str]]] = {}
        for run_id, actor in _pending.items():
            by_actor.setdefault(id(actor), (actor, []))[1].append(run_id)
    if not ray.is_initialized():  # Ray is gone, and the actors with it: nothing to wait for
        with _lock:
            _pending.clear()
        return
    calls = [(actor.history_written.remote(run_ids, timeout), run_ids) for actor, run_ids in by_actor.values()]
    for ref, run_ids in calls:
        try:
            unwritten = ray.get(ref, timeout=timeout + 1)
        except Exception as exc:  # noqa: BLE001 - a dead actor took its rows along; the history says CRASHED
            unwritten = run_ids
            logger.debug("rayflow: cannot wait for the history of runs %s: %s", run_ids, exc)
        if unwritten:  # their writer keeps them in a file, or goes on in the background: asked once only
            logger.debug("rayflow: the history of runs %s is not written yet", unwritten)
        with _lock:
            for run_id in run_ids:
                _pending.pop(run_id, None)


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    history.BEFORE_OPEN.append(settle)
    atexit.register(settle)  # registered after `import ray`'s own atexit shutdown: runs before it
    shutdown = ray.shutdown

    def shutdown_after_history(*args: Any, **kwargs: Any) -> Any:
        settle()
        return shutdown(*args, **kwargs)

    shutdown_after_history.__wrapped__ = shutdown  # type: ignore[attr-defined]
    shutdown_after_history.__doc__ = shutdown.__doc__
    ray.shutdown = shutdown_after_history
