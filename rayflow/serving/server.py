"""The serve loop: fires schedules as normal runs, by its policies, through restarts.

``Server.tick`` does one pass, at the injected clock's ``now``:

1. runs that ended are reaped (their outcome logged and recorded), then fires
   held back are started where they may be now: a schedule's queue
   (``overlap="queue"``), then those waiting for a free slot
   (``max_concurrent``);
2. for each schedule, every fire in ``(evaluated_until, now]``: fires more than
   ``late_after`` seconds late were missed (the server was down, or stalled)
   and follow the schedule's ``catchup`` (skip / the latest / all, at most
   ``max_catchup``); the others are on time.  Each fire to run is *claimed*
   in the history (``scheduled_runs``' primary key: a fire another server
   claimed is left to it), then follows the schedule's ``overlap`` when its
   previous run is still going (skip / queue / allow / cancel_running), and
   waits for a slot when ``max_concurrent`` runs are going;
3. ``evaluated_until`` moves to ``now``, persisted: a restarted server picks
   up from there.

A ``Launcher`` starts runs and gives back handles (``done``, ``state``,
``cancel``): ``launcher.ThreadLauncher`` runs the flow on Ray in a thread;
tests inject their own, and a fake clock.  A run that fails, or a launch that
raises, is logged and recorded; it never stops the server.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rayflow.core.parameters import validate_parameters
from rayflow.exceptions import ScheduleError
from rayflow.schedules import UTC, Schedule
from rayflow.store.schedules import ScheduleStore

logger = logging.getLogger("rayflow.serve")

LATE_AFTER = 60.0  # seconds: a fire later than this was missed, and follows the catch-up policy


@dataclass(frozen=True)
class Served:
    """One schedule of one flow, as a server runs it."""

    flow: Any
    schedule: Schedule  # a single schedule (a Union's members are served one by one)
    parameters: Mapping[str, Any]
    schedule_id: str
    target: str | None = None


def served(flow: Any, schedule: Schedule, parameters: Mapping[str, Any] | None = None, target: str | None = None) -> list[Served]:
    """The entries for ``flow`` on ``schedule``, parameters checked now (a ParameterError names
    the bad one before anything runs)."""
    if not isinstance(schedule, Schedule):
        raise ScheduleError(f"schedule must be an rf.schedules.Interval, Cron or Union, got {type(schedule).__name__}")
    out = []
    for member in schedule.members():
        values = {**dict(parameters or {}), **member.parameters}
        validate_parameters(flow.parameters_model, flow.name, values)
        where = target or f"{getattr(flow.fn, '__module__', '?')}:{getattr(flow.fn, '__qualname__', flow.name)}"
        schedule_id = f"{flow.name}/{member.key(values, where)}"  # its rule, parameters and flow: not its policies
        out.append(Served(flow, member, values, schedule_id, target))
    return out


class Handle(Protocol):
    run_id: str

    def done(self) -> bool: ...

    def state(self) -> str: ...

    def cancel(self) -> None: ...


class Launcher(Protocol):
    def launch(self, entry: Served, scheduled_for: float, run_id: str) -> Handle: ...


@dataclass
class _Fire:
    entry: Served
    scheduled_for: float
    run_id: str
    handle: Any = None
    started: float = 0.0


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Server:
    entries: list[Served]
    store: ScheduleStore
    launcher: Launcher
    clock: Callable[[], float] = time.time
    max_concurrent: int = 4
    late_after: float = LATE_AFTER
    new_run_id: Callable[[], str] = field(default=lambda: uuid.uuid4().hex[:12])
    running: dict[str, list[_Fire]] = field(default_factory=dict)  # schedule id -> its runs going
    queued: dict[str, collections.deque] = field(default_factory=dict)  # overlap="queue": fires held
    waiting: collections.deque = field(default_factory=collections.deque)  # fires waiting for a slot
    evaluated: dict[str, float] = field(default_factory=dict)
    ended: list[_Fire] = field(default_factory=list)  # reaped runs, for --once's outcome

    def __post_init__(self) -> None:
        if not isinstance(self.max_concurrent, int) or self.max_concurrent < 1:
            raise ScheduleError(f"max_concurrent must be a positive int, got {self.max_concurrent!r}")
        ids = [e.schedule_id for e in self.entries]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ScheduleError(f"schedule {dup} is served twice (the same flow, schedule and parameters)")

    def start(self) -> None:
        """Register every schedule; one never served before starts from now (nothing missed)."""
        now = self.clock()
        for entry in self.entries:
            self.evaluated[entry.schedule_id] = self.store.register(
                entry.schedule_id, entry.flow.name, entry.target, entry.schedule.spec(), now
            )
            self.running.setdefault(entry.schedule_id, [])
            self.queued.setdefault(entry.schedule_id, collections.deque())

    # -- one pass ---------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        self.reap()
        for entry in self.entries:
            self._fire_due(entry, now)

    def _fire_due(self, entry: Served, now: float) -> None:
        sid = entry.schedule_id
        since = dt.datetime.fromtimestamp(self.evaluated[sid], UTC)
        until = dt.datetime.fromtimestamp(now, UTC)
        due = [t.timestamp() for t in entry.schedule.fires(since, until)]
        late = [t for t in due if t < now - self.late_after]
        on_time = due[len(late):]
        policy = entry.schedule.catchup
        caught = [] if policy == "skip" or not late else late[-1:] if policy == "latest" else late[-entry.schedule.max_catchup:]
        if len(late) > len(caught):
            logger.info("schedule %s: %d missed fire(s) not run (catchup=%s)", sid, len(late) - len(caught), policy)
        for t in caught + on_time:
            self._fire(entry, t)
        self.evaluated[sid] = now
        upcoming = entry.schedule.next_after(until)
        self.store.advance(sid, now, upcoming.timestamp() if upcoming is not None else None)

    def _fire(self, entry: Served, scheduled_for: float) -> None:
        sid = entry.schedule_id
        fire = _Fire(entry, scheduled_for, self.new_run_id())
        if not self.store.claim(sid, scheduled_for, None, "claimed"):
            logger.info("schedule %s at %s: claimed by another server", sid, _stamp(scheduled_for))
            return
        overlap = entry.schedule.overlap
        busy = bool(self.running[sid]) or bool(self.queued[sid]) or any(f.entry.schedule_id == sid for f in self.waiting)
        if busy and overlap == "skip":
            self.store.settle(sid, scheduled_for, "skipped (overlap)")
            logger.info("schedule %s at %s: skipped, its previous run is still going", sid, _stamp(scheduled_for))
            return
        if busy and overlap == "queue":
            self.queued[sid].append(fire)
            self.store.settle(sid, scheduled_for, "queued")
            return
        if busy and overlap == "cancel_running":
            for earlier in self.running[sid]:
                logger.info("schedule %s: cancelling run %s for the fire at %s", sid, earlier.run_id, _stamp(scheduled_for))
                self._cancel(earlier)
            for held in [*self.queued[sid], *[f for f in self.waiting if f.entry.schedule_id == sid]]:
                self.store.settle(sid, held.scheduled_for, "dropped (cancel_running)")
            self.queued[sid].clear()
            self.waiting = collections.deque(f for f in self.waiting if f.entry.schedule_id != sid)
        self._start_or_wait(fire)

    def _start_or_wait(self, fire: _Fire) -> None:
        if self.active() >= self.max_concurrent:
            self.waiting.append(fire)
            self.store.settle(fire.entry.schedule_id, fire.scheduled_for, "waiting (max_concurrent)")
            return
        self._launch(fire)

    def _launch(self, fire: _Fire) -> None:
        sid = fire.entry.schedule_id
        fire.started = self.clock()
        try:
            fire.handle = self.launcher.launch(fire.entry, fire.scheduled_for, fire.run_id)
        except Exception as exc:  # noqa: BLE001 - a launch that fails is that fire's outcome
            self.store.settle(sid, fire.scheduled_for, f"failed to start: {type(exc).__name__}: {exc}"[:500])
            logger.error("schedule %s at %s: the run could not start: %s", sid, _stamp(fire.scheduled_for), exc)
            return
        self.running[sid].append(fire)
        self.store.settle(sid, fire.scheduled_for, "started", fire.run_id)
        logger.info("fired %s (scheduled %s): run %s", sid, _stamp(fire.scheduled_for), fire.run_id)

    def _cancel(self, fire: _Fire) -> None:
        try:
            fire.handle.cancel()
        except Exception as exc:  # noqa: BLE001 - a run that cannot be cancelled ends by itself
            logger.warning("run %s could not be cancelled: %s", fire.run_id, exc)

    # -- runs that ended, and what they free --------------------------------------------

    def reap(self) -> None:
        for sid, fires in self.running.items():
            for fire in [f for f in fires if f.handle.done()]:
                fires.remove(fire)
                state = fire.handle.state()
                self.store.settle(sid, fire.scheduled_for, f"ended {state}")
                took = self.clock() - fire.started
                log = logger.info if state == "SUCCESS" else logger.warning
                log("run %s of %s (scheduled %s) ended %s after %.1fs", fire.run_id, sid, _stamp(fire.scheduled_for), state, took)
                self.ended.append(fire)
        for sid, held in self.queued.items():  # overlap="queue": the next one, once the previous ended
            if held and not self.running[sid]:
                self._start_or_wait(held.popleft())
        while self.waiting and self.active() < self.max_concurrent:
            self._launch(self.waiting.popleft())

    def active(self) -> int:
        return sum(len(f) for f in self.running.values())

    # -- stopping ------------------------------------------------------------------------

    def stop(self, grace: float, *, sleep: Callable[[float], None] = time.sleep, cancel_wait: float = 15.0) -> None:
        """Fire nothing more; let runs going finish within ``grace`` seconds, then cancel them
        (and wait up to ``cancel_wait`` for them to end)."""
        for fire in [*self.waiting, *(f for q in self.queued.values() for f in q)]:
            self.store.settle(fire.entry.schedule_id, fire.scheduled_for, "dropped (server stopped)")
        self.waiting.clear()
        for held in self.queued.values():
            held.clear()
        deadline = self.clock() + grace
        while self.active() and self.clock() < deadline:
            sleep(0.1)
            self.reap()
        if not self.active():
            return
        logger.warning("grace period over: cancelling %d run(s)", self.active())
        for fires in self.running.values():
            for fire in fires:
                self._cancel(fire)
        deadline = self.clock() + cancel_wait
        while self.active() and self.clock() < deadline:
            sleep(0.1)
            self.reap()
