"""The serve loop: fires schedules as normal runs, by its policies, through restarts.

``Server.tick`` does one pass, at the injected clock's ``now``:

1. the server's heartbeat is renewed (``servers``: how other servers know it
   is alive), runs that ended are reaped (their outcome logged and recorded),
   then fires held back are started where they may be now: a schedule's
   queue (``overlap="queue"``), then those waiting for a free slot
   (``max_concurrent``);
2. for each schedule: the fires a dead server held and never started
   (claimed, starting, queued, waiting) are taken over, one conditional
   UPDATE each, so two servers never both take one; then every fire in
   ``(evaluated_until, now]``.  *Missed* fires are those taken over, those
   that came due while no server served the schedule (before this server
   started, when no live server had been serving it), and those more than
   ``late_after`` seconds late (this server stalled: a running server's own
   lateness is a grace).  Missed fires follow the schedule's ``catchup``:
   ``skip`` runs none, ``latest`` the most recent, ``all`` the most recent
   ``max_catchup``; each one not run is recorded ``skipped (missed, ...)``.
   The missed fires to run go first, oldest first, then the fires on time.
   Each fire to run is *claimed* in the history (``scheduled_runs``' primary
   key: a fire another server claimed is left to it), then follows the
   schedule's ``overlap`` when its previous run is still going (skip / queue
   / allow / cancel_running), and waits for a slot when ``max_concurrent``
   runs are going;
3. ``evaluated_until`` moves to ``now``, persisted: a restarted server picks
   up from there.

Every fire reaches a final recorded state: started (then its run's own
record), ended, skipped with its reason, dropped by a server that stopped
cleanly, or failed to start.  A fire held by a server that dies is taken up
by the next server serving its schedule.

A ``Launcher`` starts runs and gives back handles (``done``, ``state``,
``cancel``): ``launcher.ThreadLauncher`` runs the flow on Ray in a thread;
tests inject their own, and a fake clock.  A run that fails, or a launch that
raises, is logged and recorded; it never stops the server.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rayflow.core.parameters import validate_parameters
from rayflow.exceptions import ScheduleError
from rayflow.paths import new_run_id
from rayflow.schedules import UTC, Schedule
from rayflow.serving.sla import SlaWatch
from rayflow.presentation import STATE_NAMES  # what a handle of a run that recorded its end reads
from rayflow.store.schedules import ScheduleStore, server_alive
from rayflow.states import error_text


logger = logging.getLogger("rayflow.serve")

LATE_AFTER = 60.0  # seconds: a running server's grace; a fire later than this was missed (it stalled)
LEASE = 30.0  # seconds without a heartbeat after which a server is dead (on this host: its pid, at once)
HEARTBEAT_EVERY = 1.0  # seconds
SERVED_ALONG_WITHIN = 5 * HEARTBEAT_EVERY  # a server starting counts another's schedules served along only if it beat this recently
RECORDED_ONE_BY_ONE = 1000  # missed fires not run recorded a row each; more are summed up in one row


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


def catch_up(policy: str, max_catchup: int) -> int:
    """How many missed fires (the most recent) a catch-up policy runs."""
    return 0 if policy == "skip" else 1 if policy == "latest" else max_catchup


@dataclass
class Due:
    """A schedule's fires at one tick, sorted out by ``sort_due``."""

    missed: list[tuple[float, bool]]  # (time, taken over), oldest first: every one taken over, the latest of the gap
    on_time: list[float]
    gap: int = 0  # fires missed in the gap, all of them
    dropped: int = 0  # of those, the oldest ones left out of ``missed`` (summed up in one row)
    first_gap: float | None = None
    last_dropped: float | None = None


def sort_due(times: Iterable[float], taken: list[float], missed_before: float, keep: int) -> Due:
    """Sort a schedule's fire ``times`` (in order, read lazily: after an outage of a year there
    are millions) into missed (before ``missed_before``; at most the ``keep`` latest of them are
    kept) and on time; the fires ``taken`` over from a dead server are missed whatever their time."""
    adopted = set(taken)
    kept: collections.deque = collections.deque(maxlen=keep)
    due = Due([], [])
    for t in times:
        if t in adopted:  # a server that died mid-tick may hold fires past its evaluated_until
            continue
        if t >= missed_before:
            due.on_time.append(t)
            continue
        due.gap += 1
        if due.first_gap is None:
            due.first_gap = t
        if len(kept) == kept.maxlen:
            due.last_dropped = kept[0]
        kept.append(t)
    due.dropped = due.gap - len(kept)
    due.missed = sorted([*((t, True) for t in adopted), *((t, False) for t in kept)])
    return due


@dataclass
class Server:
    entries: list[Served]
    store: ScheduleStore
    launcher: Launcher
    clock: Callable[[], float] = time.time
    max_concurrent: int = 4
    late_after: float = LATE_AFTER
    lease: float = LEASE
    new_run_id: Callable[[], str] = new_run_id  # rayflow.paths': the one maker of run ids
    running: dict[str, list[_Fire]] = field(default_factory=dict)  # schedule id -> its runs going
    queued: dict[str, collections.deque] = field(default_factory=dict)  # overlap="queue": fires held
    waiting: collections.deque = field(default_factory=collections.deque)  # fires waiting for a slot
    evaluated: dict[str, float] = field(default_factory=dict)
    ended: list[_Fire] = field(default_factory=list)  # reaped runs, for --once's outcome
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    sla: SlaWatch = field(default_factory=SlaWatch)  # the flows' SLAs (serving.sla)

    def __post_init__(self) -> None:
        if not isinstance(self.max_concurrent, int) or self.max_concurrent < 1:
            raise ScheduleError(f"max_concurrent must be a positive int, got {self.max_concurrent!r}")
        ids = [e.schedule_id for e in self.entries]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ScheduleError(f"schedule {dup} is served twice (the same flow, schedule and parameters)")
        self.server_id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.started_at = 0.0
        self.missed_before: dict[str, float] = {}  # fires due before this were missed (no server ran)
        self._beat = -math.inf

    def start(self) -> None:
        """Register every schedule; one never served before starts from now (nothing missed).  The
        fires of one served before that came due since its last server stopped were missed, unless
        a live server was serving it all along: one whose heartbeat is fresh (SERVED_ALONG_WITHIN),
        not merely within its lease (a server killed on another host 20 s ago is within its lease)."""
        now = self.started_at = self.clock()
        others = [s for s in self.store.servers().values() if s["server_id"] != self.server_id
                  and server_alive(s, now, self.lease) and now - (s["heartbeat_at"] or 0.0) <= SERVED_ALONG_WITHIN]
        self._heartbeat(now)
        for entry in self.entries:
            sid = entry.schedule_id
            self.evaluated[sid] = self.store.register(sid, entry.flow.name, entry.target, entry.schedule.spec(), now)
            served_along = any(sid in s["schedules"] and s["started_at"] <= self.evaluated[sid] for s in others)
            self.missed_before[sid] = -math.inf if served_along else now
            self.running.setdefault(sid, [])
            self.queued.setdefault(sid, collections.deque())

    def _heartbeat(self, now: float) -> None:
        if now - self._beat >= HEARTBEAT_EVERY:
            self._beat = now
            ids = [e.schedule_id for e in self.entries]
            self.store.heartbeat(self.server_id, self.host, self.pid, self.started_at, ids, now)

    def retire(self) -> None:
        """Say this server stopped: what it still held (nothing, after ``stop``) is the next one's."""
        self.store.retire(self.server_id, self.clock())

    # -- one pass ---------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        self.reap()
        for entry in self.entries:
            self._fire_due(entry, now)
        self.sla.check(self, self.clock())

    def _fire_due(self, entry: Served, now: float) -> None:
        sid, policy, limit = entry.schedule_id, entry.schedule.catchup, entry.schedule.max_catchup
        taken = self._take_over(entry, now)
        since = dt.datetime.fromtimestamp(self.evaluated[sid], UTC)
        until = dt.datetime.fromtimestamp(now, UTC)
        missed_before = max(self.missed_before.get(sid, -math.inf), now - self.late_after)
        runnable = catch_up(policy, limit)
        due = sort_due((t.timestamp() for t in entry.schedule.fires(since, until)), taken, missed_before, RECORDED_ONE_BY_ONE + runnable)
        if due.missed:
            caught = due.missed[len(due.missed) - min(runnable, len(due.missed)):]
            recorded = self._skip_missed(entry, due.missed[: len(due.missed) - len(caught)], due)
            done = collections.Counter(self._fire(entry, t, adopted=adopted) for t, adopted in caught)
            logger.info(
                "schedule %s: %d missed fire(s) (catchup=%s%s): %d recorded skipped, %d taken up%s%s", sid,
                len(taken) + due.gap, policy, f", max_catchup {limit}" if policy == "all" else "", recorded, len(caught),
                f" ({', '.join(f'{n} {what}' for what, n in done.items())})" if done else "",
                f"; {len(taken)} of them taken over from a server that died" if taken else "",
            )
        for t in due.on_time:
            self._fire(entry, t)
        self.evaluated[sid] = now
        upcoming = entry.schedule.next_after(until)
        self.store.advance(sid, now, upcoming.timestamp() if upcoming is not None else None)

    def _take_over(self, entry: Served, now: float) -> list[float]:
        """The fires of ``entry`` that a dead server held and never started, now this server's."""
        sid = entry.schedule_id
        held = self.store.held_by_others(sid, self.server_id)
        if not held:
            return []
        servers = self.store.servers()
        taken = []
        for row in held:
            owner = row["server"]
            if owner is None:  # held by a rayflow that recorded no server: dead once quiet for a lease
                dead = time.time() - (row["at"] or 0.0) > self.lease
            else:
                dead = not server_alive(servers.get(owner), now, self.lease)
            if dead and self.store.adopt(sid, row["scheduled_for"], owner, self.server_id):
                taken.append(row["scheduled_for"])
        if taken:
            logger.warning(
                "schedule %s: %d fire(s) (from %s) taken over from a server that died before starting them",
                sid, len(taken), _stamp(min(taken)),
            )
        return taken

    def _skip_missed(self, entry: Served, skipped: list[tuple[float, bool]], due: Due) -> int:
        """Record each missed fire not run as skipped, with the catch-up rule's reason; a burst of
        more than RECORDED_ONE_BY_ONE is summed up in the row of its first fire.  How many were recorded."""
        sid, policy, limit = entry.schedule_id, entry.schedule.catchup, entry.schedule.max_catchup
        rule = f"catchup={policy}" + (f", over max_catchup {limit}" if policy == "all" else "")
        recorded = sum(self.store.hold(sid, t, f"skipped (missed: its server died, {rule})", self.server_id)
                       for t, adopted in skipped if adopted)
        recorded += self.store.claim_many(sid, [t for t, adopted in skipped if not adopted], f"skipped (missed, {rule})", self.server_id)
        if due.dropped:
            summary = (f"skipped (missed, {rule}; with the {due.dropped - 1} missed fire(s) after it until "
                       f"{_stamp(due.last_dropped)}, not recorded one by one)")
            recorded += due.dropped if self.store.claim(sid, due.first_gap, None, summary, self.server_id) else 0
        return recorded

    def _fire(self, entry: Served, scheduled_for: float, *, adopted: bool = False) -> str:
        """Claim the fire (an adopted one is this server's already) and follow the policies; what became of it."""
        sid = entry.schedule_id
        fire = _Fire(entry, scheduled_for, self.new_run_id())
        if not adopted and not self.store.claim(sid, scheduled_for, None, "claimed", self.server_id):
            logger.info("schedule %s at %s: claimed by another server", sid, _stamp(scheduled_for))
            return "claimed by another server"
        overlap = entry.schedule.overlap
        busy = bool(self.running[sid]) or bool(self.queued[sid]) or any(f.entry.schedule_id == sid for f in self.waiting)
        if busy and overlap == "skip":
            self._hold(fire, "skipped (overlap)")
            logger.info("schedule %s at %s: skipped, its previous run is still going", sid, _stamp(scheduled_for))
            return "skipped (overlap)"
        if busy and overlap == "queue":
            if not self._hold(fire, "queued"):
                return "taken over"
            _in_order(self.queued[sid], fire)  # a fire taken over from a dead server goes before later ones
            return "queued"
        if busy and overlap == "cancel_running":
            for earlier in self.running[sid]:
                logger.info("schedule %s: cancelling run %s for the fire at %s", sid, earlier.run_id, _stamp(scheduled_for))
                self._cancel(earlier)
            for held in [*self.queued[sid], *[f for f in self.waiting if f.entry.schedule_id == sid]]:
                self._hold(held, "dropped (cancel_running)")
            self.queued[sid].clear()
            self.waiting = collections.deque(f for f in self.waiting if f.entry.schedule_id != sid)
        return self._start_or_wait(fire)

    def _hold(self, fire: _Fire, outcome: str, run_id: str | None = None) -> bool:
        """Record ``outcome`` for a fire this server holds; False when another server took it over
        (this one was thought dead: it stalled longer than the lease), which it then leaves alone."""
        if self.store.hold(fire.entry.schedule_id, fire.scheduled_for, outcome, self.server_id, run_id):
            return True
        logger.warning("schedule %s at %s: taken over by another server; not started here",
                       fire.entry.schedule_id, _stamp(fire.scheduled_for))
        return False

    def _start_or_wait(self, fire: _Fire) -> str:
        if self.active() >= self.max_concurrent:
            if not self._hold(fire, "waiting (max_concurrent)"):
                return "taken over"
            _in_order(self.waiting, fire)
            return "waiting (max_concurrent)"
        return self._launch(fire)

    def _launch(self, fire: _Fire) -> str:
        sid = fire.entry.schedule_id
        if not self._hold(fire, "starting", fire.run_id):
            return "taken over"
        fire.started = self.clock()
        try:
            fire.handle = self.launcher.launch(fire.entry, fire.scheduled_for, fire.run_id)
        except Exception as exc:  # noqa: BLE001 - a launch that fails is that fire's outcome
            self.store.settle(sid, fire.scheduled_for, f"failed to start: {error_text(type(exc).__name__, str(exc))}"[:500], self.server_id)
            logger.error("schedule %s at %s: the run could not start: %s", sid, _stamp(fire.scheduled_for), exc)
            return "failed to start"
        self.running[sid].append(fire)
        if not self.store.settle(sid, fire.scheduled_for, "started", self.server_id, fire.run_id):
            logger.warning("schedule %s at %s: run %s started here after another server took the fire over",
                           sid, _stamp(fire.scheduled_for), fire.run_id)
        logger.info("fired %s (scheduled %s): run %s", sid, _stamp(fire.scheduled_for), fire.run_id)
        return "started"

    def _cancel(self, fire: _Fire) -> None:
        try:
            fire.handle.cancel()
        except Exception as exc:  # noqa: BLE001 - a run that cannot be cancelled ends by itself
            logger.warning("run %s could not be cancelled: %s", fire.run_id, exc)

    # -- runs that ended, and what they free --------------------------------------------

    def reap(self) -> None:
        self._heartbeat(self.clock())
        for sid, fires in self.running.items():
            for fire in [f for f in fires if f.handle.done()]:
                fires.remove(fire)
                state = fire.handle.state()
                if state not in STATE_NAMES:  # its thread ended, the run did not record an end: write CRASHED once
                    self._crashed(fire.run_id, state)
                self.store.settle(sid, fire.scheduled_for, f"ended {state}", self.server_id)
                took = self.clock() - fire.started
                log = logger.info if state == "SUCCESS" else logger.warning
                log("run %s of %s (scheduled %s) ended %s after %.1fs", fire.run_id, sid, _stamp(fire.scheduled_for), state, took)
                self.ended.append(fire)
        for sid, held in self.queued.items():  # overlap="queue": the next one, once the previous ended
            while held and not self.running[sid] and self._start_or_wait(held.popleft()) == "taken over":
                pass
        while self.waiting and self.active() < self.max_concurrent:
            self._launch(self.waiting.popleft())

    def _crashed(self, run_id: str, outcome: str) -> None:
        try:
            self.store.runs.mark_crashed(run_id, f"the server's run of it ended without recording its end: {outcome}")
        except Exception as exc:  # noqa: BLE001 - the history's readers detect it later
            logger.warning("run %s: cannot record it CRASHED: %s", run_id, exc)

    def active(self) -> int:
        return sum(len(f) for f in self.running.values())

    # -- stopping ------------------------------------------------------------------------

    def stop(self, grace: float, *, sleep: Callable[[float], None] = time.sleep, cancel_wait: float = 15.0) -> None:
        """Fire nothing more; let runs going finish within ``grace`` seconds, then cancel them
        (and wait up to ``cancel_wait`` for them to end)."""
        for fire in [*self.waiting, *(f for q in self.queued.values() for f in q)]:
            self._hold(fire, "dropped (server stopped)")
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


def _in_order(fires: collections.deque, fire: Any) -> None:
    """``fire`` into ``fires`` (a queue, oldest first) before the first later one."""
    at = next((i for i, f in enumerate(fires) if f.scheduled_for > fire.scheduled_for), len(fires))
    fires.insert(at, fire)
