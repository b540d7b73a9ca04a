"""``rayflow serve``'s check of its flows' SLAs (``rf.SLA``), once per tick.

- LATE: a fire not started ``late_after`` seconds after its scheduled time (waiting for a slot,
  queued behind its previous run, or started that late);
- OVERDUE: a run still going ``max_duration`` seconds after it started; with ``cancel_overdue`` it
  is cancelled, as ``rayflow cancel`` would (its handle's cancel: the run's actor).

Each miss is recorded once in the history (store.sla: one row per run and kind, which a second
server or a restarted one finds there) with a WARNING in the run's logs, and notified once to the
SLA's notifiers, in the background (``notify`` of a flows.toml entry adds its notifiers to them,
and to the flow's ``on_failure``: rayflow.cli.serve)."""

from __future__ import annotations

import logging
import time
from typing import Any

from rayflow.notify.message import event
from rayflow.store import sla as misses

logger = logging.getLogger("rayflow.serve")


def _sla(fire: Any) -> Any:
    return getattr(getattr(fire.entry.flow, "options", None), "sla", None)


class SlaWatch:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()  # (run id, kind) dealt with by this server

    def check(self, server: Any, now: float) -> None:
        try:
            for fires in server.running.values():
                for fire in list(fires):
                    sla = _sla(fire)
                    if sla is None:
                        continue
                    if sla.late_after is not None and fire.started - fire.scheduled_for > sla.late_after:
                        self._miss(server, fire, "LATE", f"started {fire.started - fire.scheduled_for:.1f}s after its "
                                   f"scheduled time (late_after {sla.late_after:g}s)")
                    took = now - fire.started
                    if sla.max_duration is not None and took > sla.max_duration and not fire.handle.done():
                        cancel = " (cancelled: cancel_overdue)" if sla.cancel_overdue else ""
                        if self._miss(server, fire, "OVERDUE", f"still running {took:.1f}s after it started "
                                      f"(max_duration {sla.max_duration:g}s){cancel}") and sla.cancel_overdue:
                            logger.warning("run %s is OVERDUE: cancelling it (cancel_overdue)", fire.run_id)
                            server._cancel(fire)
            held = [*server.waiting, *(f for q in server.queued.values() for f in q)]
            for fire in held:
                sla = _sla(fire)
                if sla is not None and sla.late_after is not None and now - fire.scheduled_for > sla.late_after:
                    self._miss(server, fire, "LATE", f"not started {now - fire.scheduled_for:.1f}s after its "
                               f"scheduled time (late_after {sla.late_after:g}s)")
        except Exception:  # noqa: BLE001  (an SLA check never stops the server)
            logger.warning("rayflow serve: checking the SLAs failed", exc_info=True)

    def _miss(self, server: Any, fire: Any, kind: str, message: str) -> bool:
        """Record and notify a miss once; True if this server recorded it now."""
        if (fire.run_id, kind) in self.seen:
            return False
        self.seen.add((fire.run_id, kind))
        entry = fire.entry
        if not misses.record(server.store.runs, fire.run_id, kind, flow=entry.flow.name, schedule_id=entry.schedule_id,
                             scheduled_for=fire.scheduled_for, message=message):
            return False  # another server recorded (and notified) it
        logger.warning("run %s of %s is %s: %s", fire.run_id, entry.schedule_id, kind, message)
        self._notify(server, fire, _sla(fire).notify, kind, kind.lower(), message)
        return True

    def _notify(self, server: Any, fire: Any, notifiers: Any, state: str, kind: str, message: str) -> None:
        ev = event(kind=kind, flow=fire.entry.flow.name, run_id=fire.run_id, task=None, state=state, message=message, error=None)
        runs = server.store.runs

        def log(level: str, text: str, run_id: str = fire.run_id) -> None:
            runs.write([], [], [], logs=[(run_id, time.time(), level, text, None, None, None, None, 1)])

        for notifier in notifiers:
            try:
                notifier.notify(ev, log=log)
            except Exception:  # noqa: BLE001
                logger.warning("rayflow serve: %r could not queue a notification", notifier, exc_info=True)
