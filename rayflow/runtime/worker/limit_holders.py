"""The holder's side of the named limits, run inside tasks: ``rf.concurrency`` (``with`` or
``async with``), ``rf.rate_limit`` and ``rf.rate_limit_async``.

A holder asks the limits actor (runtime.limits.client) for a slot or a token and, while none is
free, asks again after a pause: doubling from POLL_SECONDS to MAX_POLL_SECONDS for a slot,
the time until the next token is due for a rate.  The async forms pause with ``await
asyncio.sleep`` and await the actor's answers, so an ``async def`` task's other coroutines
run while one waits.  One thread per process renews every lease the process holds, sync or
async, so a holder whose event loop is busy keeps its slots, and one that died loses them
within RAYFLOW_LEASE_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from typing import Any

from rayflow.exceptions import LimitError
from rayflow.engine.limits_state import MAX_POLL_SECONDS, POLL_SECONDS, check_name, lease_seconds
from rayflow.runtime.limits.client import acall as _acall, call as _call

logger = logging.getLogger(__name__)


class Concurrency:
    """``occupy`` slots of the limit ``name``, held while a ``with`` or ``async with`` block
    runs (what ``rf.concurrency`` returns).  One object holds its slots once at a time."""

    def __init__(self, name: str, occupy: int = 1, timeout: float | None = None):
        self.name = check_name(name)
        if isinstance(occupy, bool) or not isinstance(occupy, int) or occupy < 1:
            raise LimitError(f"occupy is a whole number of slots >= 1, not {occupy!r}")
        self.occupy = occupy
        self.timeout = timeout
        self._lease: str | None = None
        self._who = f"{_holder()}:{uuid.uuid4().hex[:8]}"  # its place in the limit's queue while it waits

    def __enter__(self) -> None:
        ttl, deadline, pause = self._start()
        while (lease := _call("acquire", self.name, self.occupy, self._who, ttl)) is None:
            time.sleep(deadline.pause(pause))
            pause = min(pause * 2, MAX_POLL_SECONDS)
        self._hold(lease)

    def __exit__(self, *exc_info: Any) -> None:
        lease = self._drop()
        try:
            _call("release", lease)
        except Exception as exc:  # noqa: BLE001 - not renewed any more: it lapses on its own
            logger.warning("rayflow: the slot(s) of limit %r were not given back (%s): they lapse on their own", self.name, exc)

    async def __aenter__(self) -> None:
        ttl, deadline, pause = self._start()
        while (lease := await _acall("acquire", self.name, self.occupy, self._who, ttl)) is None:
            await asyncio.sleep(deadline.pause(pause))
            pause = min(pause * 2, MAX_POLL_SECONDS)
        self._hold(lease)

    async def __aexit__(self, *exc_info: Any) -> None:
        lease = self._drop()
        try:
            await _acall("release", lease)
        except Exception as exc:  # noqa: BLE001 - not renewed any more: it lapses on its own
            logger.warning("rayflow: the slot(s) of limit %r were not given back (%s): they lapse on their own", self.name, exc)

    def _start(self) -> tuple[float, _Deadline, float]:
        if self._lease is not None:
            raise LimitError(f"this rf.concurrency({self.name!r}) holds its slots already: use one per block")
        what = f"no {self.occupy} slot(s) of limit {self.name!r} came free"
        return lease_seconds(), _Deadline(self.timeout, what), POLL_SECONDS

    def _hold(self, lease: str) -> None:
        self._lease = lease
        _renewer.hold(lease, self.name)

    def _drop(self) -> str:
        lease, self._lease = self._lease, None
        _renewer.drop(lease)
        return lease


def concurrency(name: str, occupy: int = 1, timeout: float | None = None) -> Concurrency:
    """Hold ``occupy`` slots of the limit ``name`` while the block runs, waiting for them first
    (at most ``timeout`` seconds, then TimeoutError): ``with rf.concurrency("db"):``, or in an
    ``async def`` task ``async with rf.concurrency("db"):``, which waits without blocking the
    task's event loop.  The slots are leased and renewed while held, so a holder that dies
    gives them back within RAYFLOW_LEASE_SECONDS."""
    return Concurrency(name, occupy, timeout)


def rate_limit(name: str, timeout: float | None = None) -> None:
    """Take one token of the rate limit ``name``, waiting until one is due (at most
    ``timeout`` seconds, then TimeoutError).  In an ``async def`` task: rate_limit_async."""
    deadline = _Deadline(timeout, f"no token of rate limit {check_name(name)!r} came due")
    while (wait := _call("take_token", name)) > 0:
        time.sleep(deadline.pause(wait))


async def rate_limit_async(name: str, timeout: float | None = None) -> None:
    """``await rf.rate_limit_async("api")``: rate_limit for an ``async def`` task, waiting
    without blocking its event loop."""
    deadline = _Deadline(timeout, f"no token of rate limit {check_name(name)!r} came due")
    while (wait := await _acall("take_token", name)) > 0:
        await asyncio.sleep(deadline.pause(wait))


class _Deadline:
    """A wait's ``timeout``: the pause before the next try, or TimeoutError where waiting
    ``wait`` more seconds would pass it."""

    def __init__(self, timeout: float | None, what: str):
        self.timeout = timeout
        self.at = None if timeout is None else time.monotonic() + timeout
        self.what = what

    def pause(self, wait: float) -> float:
        if self.at is not None and time.monotonic() + wait > self.at:
            raise TimeoutError(f"{self.what} within {self.timeout:g}s")
        return min(wait, MAX_POLL_SECONDS)


def _holder() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


class _Renewer:
    """Renews every lease this process holds, in one call every third of RAYFLOW_LEASE_SECONDS,
    from a thread of its own.  A lease the actor no longer has (it lapsed, or the actor was
    restarted and lost its leases) is taken again there if its slots are free; one that cannot
    be is warned about once, and asked for again at each renewal."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}  # lease -> its limit's name
        self.warned: dict[str, None] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, lease: str, name: str) -> None:
        with self._lock:
            self.held[lease] = name
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rayflow-leases", daemon=True)
                self._thread.start()

    def drop(self, lease: str | None) -> None:
        with self._lock:
            self.held.pop(lease, None)
            self.warned.pop(lease, None)

    def _run(self) -> None:
        while True:
            ttl = lease_seconds()
            time.sleep(ttl / 3)
            with self._lock:
                leases = [*self.held]
            if not leases:
                continue
            try:
                lost = _call("renew", leases, ttl)
            except Exception:  # noqa: BLE001 - the actor restarting: tried again next time
                continue
            with self._lock:
                for lease in lost:
                    if lease in self.held and lease not in self.warned:
                        self.warned[lease] = None
                        logger.warning(
                            "rayflow: a slot of limit %r held here was lost (its lease lapsed, or the limits actor "
                            "restarted and others took every slot): the block goes on; the slot is taken again once "
                            "one is free", self.held[lease],
                        )


_renewer = _Renewer()
