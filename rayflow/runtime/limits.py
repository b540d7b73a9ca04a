"""Named concurrency and rate limits shared by every run and driver of a Ray cluster.

One small detached actor per cluster (``rayflow-limits`` in the ``rayflow`` namespace,
``num_cpus=0``) holds them, so they outlive the drivers that set them.  Without Ray (the
in-process runner, a unit test) the same ``LimitsState`` lives in this process.

- A *concurrency* limit of N slots: ``rf.concurrency("db")`` holds ``occupy`` slots while
  its block runs, waiting for them first.  A slot is held by a lease that its holder renews;
  a lease not renewed for ``RAYFLOW_LEASE_SECONDS`` (default 30) is freed, so a holder that
  died (a killed worker) gives its slots back on its own.
- A *rate* limit (``per_second`` given): a token bucket of N tokens refilled at
  ``per_second``; ``rf.rate_limit("api")`` takes one token, waiting for it first.
- In an ``async def`` task: ``async with rf.concurrency("db")`` and ``await
  rf.rate_limit_async("api")`` wait with ``await``, so the task's other coroutines go on.

The actor lives on the head node and keeps the limits' definitions (not their leases) in the
run history there (store.limits), loading them whenever it starts: Ray restarts a dead actor
by running its ``__init__`` again, and a holder's renewal takes its slot again if it is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray

logger = logging.getLogger(__name__)

from rayflow.exceptions import LimitError
from rayflow.runs.local import LocalRunner
from rayflow.store.history import rayflow_home
from rayflow.store.limits import LimitKeeper

ACTOR_NAME = "rayflow-limits"
NAMESPACE = "rayflow"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")
POLL_SECONDS = 0.05  # first wait between tries for a slot; doubles up to MAX_POLL_SECONDS
MAX_POLL_SECONDS = 1.0
NAMES_SECONDS = 1.0  # a run's gate looks up which limits there are this often
WAITER_SECONDS = 5.0  # a queued holder that has not asked again for this long has given up
CALL_SECONDS = 60.0  # a call of the limits actor that takes longer fails
HEAD_RESOURCE = "node:__internal_head__"  # Ray's resource of the head node: the actor lives there


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
    tokens: float = 0.0
    refilled: float = field(default_factory=time.monotonic)


class LimitsState:
    """The limits and their leases (the actor's state; plain Python, so it also runs in-process).

    Slots are handed out first come, first served: a holder that found no slot free is queued
    on that limit (while it keeps asking: an entry lapses WAITER_SECONDS after its last ask),
    and a later one gets a slot only when enough are free for everyone queued before it.  So a
    map whose chunks ask again the moment one ends cannot starve a task that asked earlier."""

    def __init__(self) -> None:
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
        self.limits[name] = _Limit(slots, per_second, tokens)

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
                self.leases[lease] = (held[0], held[1], time.monotonic() + ttl)
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
        now = time.monotonic()
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
        self.leases[lease] = (name, occupy, time.monotonic() + ttl)
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
        self.leases[lease] = (name, int(occupy), time.monotonic() + ttl)
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
        now = time.monotonic()
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
        self.waiters.setdefault(name, {})[holder] = (slots, time.monotonic() + WAITER_SECONDS)

    def _expire(self) -> None:
        now = time.monotonic()
        self.leases = {k: v for k, v in self.leases.items() if v[2] > now}

    def _row(self, name: str, limit: _Limit) -> dict:
        return {"name": name, "slots": limit.slots, "per_second": limit.per_second, "in_use": self._in_use(name)}


class LimitsActor(LimitsState):
    """The cluster's limits actor: a LimitsState whose definitions are kept in the run history
    under ``home`` and loaded whenever it starts (Ray runs ``__init__`` again, with the same
    arguments, when it restarts a dead actor; a new actor loads them too).  Leases are not
    kept: a holder's next renewal takes its slots again.  A restored rate starts with an
    empty bucket, so a restart lets no burst through early."""

    def __init__(self, home: str | None = None):
        super().__init__()
        self.keeper = LimitKeeper(home)
        for name, (slots, per_second) in self.keeper.definitions.items():
            try:
                check_name(name)
                self.limits[name] = _Limit(*check_values(slots, per_second), tokens=0.0)
            except LimitError as exc:  # a row edited by hand
                logger.warning("rayflow: limit %r in the run history is not restored: %s", name, exc)

    def set(self, name: str, slots: int, per_second: float | None = None) -> None:
        """Kept in the history first: a limit the history cannot keep is refused (LimitError),
        and the limit stays as it was."""
        check_name(name)
        slots, per_second = check_values(slots, per_second)
        rate = f" ({per_second:g} per second)" if per_second is not None else ""
        self.keeper.keep(name, (slots, per_second), f"limit {name!r} is not set to {slots}{rate}")
        super().set(name, slots, per_second)

    def remove(self, name: str) -> bool:
        if name in self.limits:
            self.keeper.keep(name, None, f"limit {name!r} is not removed")
        return super().remove(name)


_LimitsActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(LimitsActor)
_local_state: LimitsState | None = None
_local_lock = threading.Lock()
_actor: Any = None  # this process's handle on the cluster's limits actor


class _Local:
    """LimitsState in this process, called like the actor (the in-process runner, no Ray)."""

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> Any:
            global _local_state
            with _local_lock:
                if _local_state is None:
                    _local_state = LimitsState()
                return getattr(_local_state, method)(*args)

        return call


def _on_ray() -> bool:
    return ray.is_initialized()


def _history_for_actor() -> str | None:
    """Where the actor keeps the limits: the head's run history, as for submitted runs (their
    drivers run on the head).  From a process on the head node, its own RAYFLOW_HOME (as a
    driver's run actor gets the driver's); from elsewhere, None: RAYFLOW_HOME as the actor's
    process on the head sees it."""
    try:
        here = ray.get_runtime_context().get_node_id()
        on_head = any(n.get("NodeID") == here and HEAD_RESOURCE in n.get("Resources", {}) for n in ray.nodes())
        return str(rayflow_home().resolve()) if on_head else None
    except Exception:  # noqa: BLE001 - the head's own
        return None


def _handle() -> Any:
    """This process's handle on the cluster's limits actor, found or made (on the head node)."""
    global _actor
    if _actor is None:
        try:
            _actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
        except ValueError:
            _actor = _LimitsActor.options(
                name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                resources={HEAD_RESOURCE: 0.001}, scheduling_strategy="DEFAULT",  # not the caller's placement group
            ).remote(_history_for_actor())
    return _actor


def _limit_error(exc: ray.exceptions.RayTaskError) -> LimitError | None:
    cause = getattr(exc, "cause", None)
    return LimitError(str(cause)) if isinstance(cause, LimitError) else None


@contextlib.contextmanager
def _actor_errors() -> Iterator[None]:
    """A call to the limits actor (``_call``, ``_acall``), after its one retry on a new actor: a
    LimitError it raised comes out as itself; a handle still dead is forgotten, so the next call
    makes the actor again."""
    global _actor
    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        if (error := _limit_error(exc)) is None:
            raise
        raise error from None
    except ray.exceptions.RayActorError:
        _actor = None
        raise


def _call(method: str, *args: Any) -> Any:
    """``method(*args)`` on the cluster's limits actor (made on first use), or in-process without
    Ray.  An actor gone for good (``ray.kill``) is made again, once: it loads the limits."""
    global _actor
    if not _on_ray():
        return getattr(_Local(), method)(*args)
    with _actor_errors():
        try:
            return ray.get(getattr(_handle(), method).remote(*args), timeout=CALL_SECONDS)
        except ray.exceptions.RayActorError:
            _actor = None
            return ray.get(getattr(_handle(), method).remote(*args), timeout=CALL_SECONDS)


async def _acall(method: str, *args: Any) -> Any:
    """``_call`` for a coroutine: the actor's answer is awaited, the loop never blocked on it."""
    global _actor
    if not _on_ray():
        return getattr(_Local(), method)(*args)  # in this process: no wait

    async def once() -> Any:
        handle = _actor if _actor is not None else await asyncio.to_thread(_handle)  # a lookup: off the loop
        return await asyncio.wait_for(getattr(handle, method).remote(*args), CALL_SECONDS)

    with _actor_errors():
        try:
            return await once()
        except ray.exceptions.RayActorError:
            _actor = None
            return await once()


# -- rf.limits: set, get, remove, list ------------------------------------------------------------


def set(name: str, slots: int, per_second: float | None = None) -> None:  # noqa: A001 - rf.limits.set
    """Create or change the limit ``name``: ``slots`` at once, and with ``per_second`` a rate."""
    check_name(name)
    slots, per_second = check_values(slots, per_second)
    _call("set", name, slots, per_second)


def get(name: str) -> dict | None:
    """The limit's ``{"name", "slots", "per_second", "in_use"}``, or None."""
    return _call("get", check_name(name))


def remove(name: str) -> bool:
    """Remove the limit (its holders keep running); False when there was none."""
    return _call("remove", check_name(name))


def list() -> list[dict]:  # noqa: A001 - rf.limits.list
    return _call("list")


# -- limits by tag, for the orchestrator ----------------------------------------------------------


class TagGate:
    """The orchestrator's gate (see engine.orchestrator's ``gate`` and engine.admission) for
    one run: a tagged task's attempt, or a tagged map's chunk, takes slots of each limit its
    tags name before it is submitted, and gives them back when it stops running.  Its leases
    are renewed while held.  With no limits (no limits actor on the cluster; none set in this
    process without Ray) nothing waits, and no actor is made."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.held: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self._warned = False
        self._names: frozenset[str] = frozenset()  # the limits there are, as last looked up
        self._names_until = 0.0

    def acquire(self, key: str, tags: frozenset[str], want: int = 1) -> tuple[int, str | None]:
        """(slots granted, None), or (0, the limit waited on)."""
        if not tags & self._limit_names():  # tags that are only labels: no call to the actor
            return want, None
        try:
            leases, granted, waiting_for = _call("acquire_tags", sorted(tags), f"{self.run_id}/{key}", lease_seconds(), want)
        except Exception as exc:  # noqa: BLE001 - limits unreachable: run rather than wait forever
            if not self._warned:
                self._warned = True
                logger.warning("rayflow: the limits actor did not answer (%s): tagged tasks run unlimited", exc)
            return want, None
        if waiting_for is None and leases:
            with self._lock:
                self.held[key] = leases
                if self._renewer is None:
                    self._renewer = threading.Thread(target=self._renew, name=f"rayflow-leases-{self.run_id}", daemon=True)
                    self._renewer.start()
        return granted, waiting_for

    def _limit_names(self) -> frozenset[str]:
        """The names of the limits there are, looked up at most every NAMES_SECONDS: a limit
        set while a run goes on counts for its tasks within that time."""
        now = time.monotonic()
        if now >= self._names_until:
            self._names_until = now + NAMES_SECONDS
            try:
                self._names = frozenset(_call("names")) if _limits_exist() else frozenset()
            except Exception as exc:  # noqa: BLE001 - limits unreachable: run rather than wait forever
                self._names = frozenset()
                if not self._warned:
                    self._warned = True
                    logger.warning("rayflow: the limits actor did not answer (%s): tagged tasks run unlimited", exc)
        return self._names

    def release(self, key: str) -> None:
        with self._lock:
            leases = self.held.pop(key, None)
        if not leases:
            return
        if _actor is None:
            if not ray.is_initialized():
                _call("release_all", leases)  # in-process
            return  # else the actor went away: its leases with it
        try:  # not waited for: the actor applies calls in order, so a later acquire sees it
            _actor.release_all.remote(leases)
        except Exception:  # noqa: BLE001 - not renewed any more: they lapse on their own
            pass

    def release_everything(self) -> None:
        """The run is over: every slot back, and no more renewals."""
        self._stop.set()
        for key in [*self.held]:  # (this module's `list` is rf.limits.list)
            self.release(key)

    def _renew(self) -> None:
        ttl = lease_seconds()
        while not self._stop.wait(ttl / 3):
            with self._lock:
                leases = [lease for held in self.held.values() for lease in held]
            if leases:
                try:
                    _call("renew", leases, ttl)
                except Exception:  # noqa: BLE001 - tried again next time
                    pass


LocalRunner.gate_factory = TagGate  # runner="local" honours limits by tag too (see runs.local)


def _limits_exist() -> bool:
    """Are there limits: a limits actor on this cluster (anyone ever set a limit), or without
    Ray, limits in this process?  The actor is looked up, never made."""
    global _actor
    if not ray.is_initialized():
        return _local_state is not None and bool(_local_state.limits)
    if _actor is not None:
        return True
    try:
        _actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return False
    return True
