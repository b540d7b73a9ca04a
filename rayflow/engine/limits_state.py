"""The named limits' state: slots, leases that lapse when not renewed, token buckets.

Plain Python on an injected clock (``time.monotonic`` by default; a test's fake clock), no
Ray: the limits actor (runtime.limits.actor) is this state plus its history, and without Ray
(the in-process runner, a unit test) ``in_process_limits()`` is this process's own state,
called like the actor.

- A *concurrency* limit of N slots: a holder takes ``occupy`` slots through a lease that it
  renews; a lease not renewed for ``RAYFLOW_LEASE_SECONDS`` (default 30) is freed, so a holder
  that died (a killed worker) gives its slots back on its own.
- A *rate* limit (``per_second`` given): a token bucket of N tokens refilled at ``per_second``.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rayflow.exceptions import LimitError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
POLL_SECONDS = 0.05  # first wait between tries for a slot; doubles up to MAX_POLL_SECONDS
MAX_POLL_SECONDS = 1.0
NAMES_SECONDS = 1.0  # a run's gate looks up which limits there are this often
WAITER_SECONDS = 5.0  # a queued holder that has not asked again for this long has given up
CALL_SECONDS = 60.0  # a call of the limits actor that takes longer fails


def lease_seconds() -> float:
    return float(os.environ.get("RAYFLOW_LEASE_SECONDS", "30"))


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise LimitError(f"a limit's name is letters, digits, '.', '_', ':' and '-' (at most 100), not {name!r}")
    return name


MAX_SLOTS = 2**63 - 1  # what the history's INTEGER column holds (SQLite's 64-bit signed integer)
MAX_PER_SECOND = sys.float_info.max  # what its REAL column holds: any finite float


def check_values(slots: Any, per_second: Any) -> tuple[int, float | None]:
    """A limit's values, or LimitError.  Bounded by what the run history keeps (a limit lives
    there first), so a limit that is accepted can always be kept."""
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
        raise LimitError(f"a limit is a whole number of slots >= 0, not {slots!r}")
    if slots > MAX_SLOTS:
        raise LimitError(f"a limit is at most {MAX_SLOTS} slots (2**63 - 1, what the run history keeps), not {slots}")
    if per_second is not None:
        if isinstance(per_second, bool) or not isinstance(per_second, (int, float)) or not 0 < per_second:
            raise LimitError(f"per_second is a number of tokens per second > 0, not {per_second!r}")
        if not per_second <= MAX_PER_SECOND:
            given = f"{per_second:g}" if isinstance(per_second, float) else f"a whole number of {len(str(per_second))} digits"
            raise LimitError(f"per_second is at most {MAX_PER_SECOND:g} (a finite float, what the run history keeps), not {given}")
        per_second = float(per_second)
    return slots, per_second


@dataclass
class _Limit:
    slots: int
    per_second: float | None
    tokens: float
    refilled: float  # on the state's clock


class LimitsState:
    """The limits and their leases (the actor's state; plain Python, so it also runs in-process).

    Slots are handed out first come, first served: a holder that found no slot free is queued
    on that limit (while it keeps asking: an entry lapses WAITER_SECONDS after its last ask),
    and a later one gets a slot only when enough are free for everyone queued before it.  So a
    map whose chunks ask again the moment one ends cannot starve a task that asked earlier."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.limits: dict[str, _Limit] = {}
        self.leases: dict[str, tuple[str, int, float]] = {}  # lease id -> (limit, slots, expires)
        self.waiters: dict[str, dict[str, tuple[int, float]]] = {}  # limit -> holder -> (slots, lapses), in order
        # Lease ids carry it: a renewal re-takes only a lease an earlier state (an actor
        # before its restart) gave, never one this state saw given back.
        self.incarnation = uuid.uuid4().hex[:8]

    def set(self, name: str, slots: int, per_second: float | None = None) -> None:
        check_name(name)
        slots, per_second = check_values(slots, per_second)
        old = self.limits.get(name)
        tokens = min(old.tokens, slots) if old is not None and old.per_second else float(slots)
        self.limits[name] = _Limit(slots, per_second, tokens, self.clock())

    def remove(self, name: str) -> bool:
        self.leases = {k: v for k, v in self.leases.items() if v[0] != name}
        self.waiters.pop(name, None)
        return self.limits.pop(name, None) is not None

    def get(self, name: str) -> dict | None:
        self._expire()
        limit = self.limits.get(name)
        return None if limit is None else self._row(name, limit)

    def list(self) -> list[dict]:
        self._expire()
        return [self._row(name, limit) for name, limit in sorted(self.limits.items())]

    def acquire(self, name: str, occupy: int, holder: str, ttl: float) -> str | None:
        """A lease on ``occupy`` slots, or None while they are taken."""
        limit = self._known(name)
        if occupy > limit.slots:
            raise LimitError(f"limit {name!r} has {limit.slots} slot(s): {occupy} can never be held at once")
        self._expire()
        if self._in_use(name) + self._ahead(name, holder) + occupy > limit.slots:
            self._queue(name, holder, occupy)
            return None
        self.waiters.get(name, {}).pop(holder, None)
        return self._lease(name, occupy, holder, ttl)

    def acquire_tags(self, tags: list[str], holder: str, ttl: float, want: int = 1) -> tuple[list[str], int, str | None]:
        """Up to ``want`` slots of every limit among ``tags`` (other tags are no limits), the
        same number of each, at least one or none: (the leases, how many, None), or
        ([], 0, the first limit with no slot free)."""
        self._expire()
        known = [t for t in sorted(tags) if t in self.limits]
        granted = want
        for name in known:
            free = self.limits[name].slots - self._in_use(name) - self._ahead(name, holder)
            if free < 1:
                self._queue(name, holder, 1)
                return [], 0, name
            granted = min(granted, free)
        for name in known:
            self.waiters.get(name, {}).pop(holder, None)
        return [self._lease(name, granted, holder, ttl) for name in known], granted, None

    def names(self) -> list[str]:
        return sorted(self.limits)

    def release_all(self, leases: list[str]) -> None:
        for lease in leases:
            self.leases.pop(lease, None)

    def renew(self, leases: list[str], ttl: float) -> list[str]:
        """Renew the leases.  One this state does not hold (it lapsed, or the actor restarted
        and lost its leases) takes its slots again if they are free; those it cannot take
        (held by others now, or their limit is gone) are returned: their holders lost them."""
        self._expire()
        lost = []
        for lease in leases:
            held = self.leases.get(lease)
            if held is not None:
                self.leases[lease] = (held[0], held[1], self.clock() + ttl)
            elif not self._retake(lease, ttl):
                lost.append(lease)
        return lost

    def release(self, lease: str) -> None:
        self.leases.pop(lease, None)

    def take_token(self, name: str) -> float:
        """0.0 when a token was taken, else the seconds until one is due."""
        limit = self._known(name)
        if limit.per_second is None:
            raise LimitError(f"limit {name!r} has no rate: set one with `rayflow limit set {name} N --per-second R`")
        now = self.clock()
        limit.tokens = min(float(limit.slots), limit.tokens + (now - limit.refilled) * limit.per_second)
        limit.refilled = now
        if limit.tokens >= 1.0:
            limit.tokens -= 1.0
            return 0.0
        if limit.slots == 0:
            return MAX_POLL_SECONDS  # a limit of 0 holds everything back until it is raised
        return (1.0 - limit.tokens) / limit.per_second

    def _lease(self, name: str, occupy: int, holder: str, ttl: float) -> str:
        # names have no '|': see _retake
        lease = f"{name}|{occupy}|{self.incarnation}|{holder}:{uuid.uuid4().hex[:12]}"
        self.leases[lease] = (name, occupy, self.clock() + ttl)
        return lease

    def _retake(self, lease: str, ttl: float) -> bool:
        """Hold ``lease`` again (its id names its limit and slots) if an earlier state gave it
        (the actor restarted since) and its slots are free.  One this state gave was released
        or lapsed: a renewal that crossed its release must not bring it back."""
        name, occupy, incarnation, _ = (lease.split("|", 3) + ["", "", ""])[:4]
        limit = self.limits.get(name)
        if incarnation == self.incarnation or limit is None or not occupy.isdigit():
            return False
        if self._in_use(name) + int(occupy) > limit.slots:
            return False
        self.leases[lease] = (name, int(occupy), self.clock() + ttl)
        return True

    def _known(self, name: str) -> _Limit:
        limit = self.limits.get(name)
        if limit is None:
            raise LimitError(f"no limit named {name!r}: create it with `rayflow limit set {name} N` or rf.limits.set({name!r}, N)")
        return limit

    def _in_use(self, name: str) -> int:
        return sum(n for limit, n, _ in self.leases.values() if limit == name)

    def _ahead(self, name: str, holder: str) -> int:
        """Slots wanted by the holders queued on ``name`` before ``holder`` (all, if it is not queued)."""
        queue = self.waiters.get(name)
        if not queue:
            return 0
        now = self.clock()
        for lapsed in [h for h, (_, until) in queue.items() if until <= now]:
            del queue[lapsed]
        ahead = 0
        for waiting, (slots, _) in queue.items():
            if waiting == holder:
                break
            ahead += slots
        return ahead

    def _queue(self, name: str, holder: str, slots: int) -> None:
        """``holder`` waits for ``name``: queued at the end, or its place kept while it keeps asking."""
        self.waiters.setdefault(name, {})[holder] = (slots, self.clock() + WAITER_SECONDS)

    def _expire(self) -> None:
        now = self.clock()
        self.leases = {k: v for k, v in self.leases.items() if v[2] > now}

    def _row(self, name: str, limit: _Limit) -> dict:
        return {"name": name, "slots": limit.slots, "per_second": limit.per_second, "in_use": self._in_use(name)}


class InProcessLimits:
    """A LimitsState in this process, called like the limits actor (``call(method, *args)``):
    the limits of a process without Ray.  One per process (``in_process_limits``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state: LimitsState | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> LimitsState:
        with self._lock:
            if self._state is None:
                self._state = LimitsState(self._clock)
            return self._state

    def call(self, method: str, *args: Any) -> Any:
        state = self.state
        with self._lock:
            return getattr(state, method)(*args)

    def release_nowait(self, leases: list[str]) -> None:
        self.call("release_all", leases)

    def exists(self) -> bool:
        """Are there limits (so a run's gate must ask)?"""
        with self._lock:
            return self._state is not None and bool(self._state.limits)


_PROCESS_LIMITS = InProcessLimits()


def in_process_limits() -> InProcessLimits:
    """This process's limits (without Ray): rf.limits sets them, a local run's gate reads them."""
    return _PROCESS_LIMITS
