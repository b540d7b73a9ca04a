"""The client of the named limits, in any process: the cluster's limits actor when Ray is
initialised (made on first use), else this process's limits (engine.limits_state).

``call`` / ``acall`` ask it (``acall`` awaits the actor's answer, so a coroutine's loop never
blocks); ``RayLimits`` is the client a run's TagGate (engine.admission) asks for slots by tag.
An actor gone for good (``ray.kill``) is looked up or made again, once: it loads the limits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import ray

from rayflow.engine.limits_state import in_process_limits
from rayflow.exceptions import LimitError
from rayflow.runtime.limits import actor as limits_actor

CALL_SECONDS = 60.0  # a call of the limits actor that takes longer fails
_actor: Any = None  # this process's handle on the cluster's limits actor


def _handle() -> Any:
    """This process's handle on the cluster's limits actor, found or made (on the head node)."""
    global _actor
    if _actor is None:
        _actor = limits_actor.make_or_find()
    return _actor


def _on_ray() -> bool:
    return ray.is_initialized()


def _limit_error(exc: ray.exceptions.RayTaskError) -> LimitError | None:
    cause = getattr(exc, "cause", None)
    return LimitError(str(cause)) if isinstance(cause, LimitError) else None


@contextlib.contextmanager
def _actor_errors() -> Iterator[None]:
    """A call to the limits actor (``call``, ``acall``), after its one retry on a new actor: a
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


def call(method: str, *args: Any) -> Any:
    """``method(*args)`` on the cluster's limits actor (made on first use), or in-process without
    Ray.  An actor gone for good (``ray.kill``) is made again, once: it loads the limits."""
    global _actor
    if not _on_ray():
        return in_process_limits().call(method, *args)
    with _actor_errors():
        try:
            return ray.get(getattr(_handle(), method).remote(*args), timeout=CALL_SECONDS)
        except ray.exceptions.RayActorError:
            _actor = None
            return ray.get(getattr(_handle(), method).remote(*args), timeout=CALL_SECONDS)


async def acall(method: str, *args: Any) -> Any:
    """``call`` for a coroutine: the actor's answer is awaited, the loop never blocked on it."""
    global _actor
    if not _on_ray():
        return in_process_limits().call(method, *args)  # in this process: no wait

    async def once() -> Any:
        handle = _actor if _actor is not None else await asyncio.to_thread(_handle)  # a lookup: off the loop
        return await asyncio.wait_for(getattr(handle, method).remote(*args), CALL_SECONDS)

    with _actor_errors():
        try:
            return await once()
        except ray.exceptions.RayActorError:
            _actor = None
            return await once()


class RayLimits:
    """The limits a run's TagGate asks (engine.admission's ``LimitsClient``): the cluster's actor
    when Ray is initialised, else this process's.  ``exists`` looks the actor up, never makes it."""

    def call(self, method: str, *args: Any) -> Any:
        return call(method, *args)

    def release_nowait(self, leases: list[str]) -> None:
        """Not waited for: the actor applies calls in order, so a later acquire sees it."""
        if not _on_ray():
            in_process_limits().release_nowait(leases)
        elif _actor is not None:  # else the actor went away: its leases with it
            _actor.release_all.remote(leases)

    def exists(self) -> bool:
        global _actor
        if not _on_ray():
            return in_process_limits().exists()
        if _actor is None:
            _actor = limits_actor.find()
        return _actor is not None
