"""The driver's handles on FlowRunActors: this driver's own (made on first use, pinged when
idle), and any live one on the cluster, found by a run id to read its status or cancel it.
Runs in the driver (or any process joined to the cluster: ``rayflow cancel``, ``show``)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayflow.engine.protocol import LiveStatus, RunSummary
from rayflow.exceptions import UnknownRunError
from rayflow.runtime.actor.flow_run_actor import NAME_PREFIX, NAMESPACE, FlowRunActor
from rayflow.runtime.driver.cluster import connect_existing
from rayflow.runtime.driver.warm import start_worker

_actor: tuple[str, Any] | None = None
_actor_lock = threading.Lock()
_last_reply = 0.0  # monotonic time of this driver's last run ended by its actor
IDLE_CHECK_SECONDS = 2.0  # an actor idle longer than this is pinged before it gets a run
PING_SECONDS = 30.0


def driver_actor() -> Any:
    """This driver's FlowRunActor, created on first use in the current Ray session.

    An actor that has been idle a while may have died meanwhile (killed, out of memory): it is
    pinged first and replaced if dead, so a run is only ever sent to an actor believed alive.
    A run whose actor dies once it was sent is crashed, never started again elsewhere: it may
    have run tasks already."""
    global _actor, _last_reply
    job = ray.get_runtime_context().get_job_id()
    with _actor_lock:
        if _actor is not None and _actor[0] == job and time.monotonic() - _last_reply > IDLE_CHECK_SECONDS:
            try:
                ray.get(_actor[1].ping.remote(), timeout=PING_SECONDS)
            except ray.exceptions.RayActorError:
                _actor = None
            except ray.exceptions.GetTimeoutError:
                pass  # alive but busy: its runs' calls will tell
        if _actor is None or _actor[0] != job:
            node_id = ray.get_runtime_context().get_node_id()
            handle = FlowRunActor.options(
                name=f"{NAME_PREFIX}{uuid.uuid4().hex[:12]}",
                namespace=NAMESPACE,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            ).remote()
            start_worker(node_id)  # the first task's worker starts beside the actor, not after it
            _actor = (job, handle)
            _last_reply = time.monotonic()  # made just now: not pinged before its first run (warm.start_actor)
        return _actor[1]


def actor_replied() -> None:
    """A run of this driver just ended through its actor: it is alive, no ping needed soon."""
    global _last_reply
    _last_reply = time.monotonic()


def forget_actor(handle: Any) -> None:
    """This driver's actor died: the next run creates a new one instead of calling the dead one."""
    global _actor
    with _actor_lock:
        if _actor is not None and _actor[1] is handle:
            _actor = None


def driver_actors() -> list[Any]:
    """Handles of every live FlowRunActor on the cluster."""
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a.get("namespace") == NAMESPACE and a["name"].startswith(NAME_PREFIX)
    ]
    handles = []
    for name in names:
        try:
            handles.append(ray.get_actor(name, namespace=NAMESPACE))
        except ValueError:  # it ended between listing and lookup
            continue
    return handles


def find_run(run_id: str, timeout: float = 10.0) -> tuple[Any, RunSummary]:
    """The actor hosting ``run_id`` and the run's status; UnknownRunError if no live driver has it."""
    handles = driver_actors()
    refs = [h.status.remote(run_id) for h in handles]
    for handle, ref in zip(handles, refs):
        try:
            summary = ray.get(ref, timeout=timeout)
        except ray.exceptions.RayError:
            continue
        if summary is not None:
            return handle, summary
    raise UnknownRunError(f"no live rayflow driver on this cluster has run {run_id!r}", run_id=run_id)


def cancel_run(run_id: str, *, address: str | None = None, wait: float = 30.0) -> Any:
    """Cancel a live run from any process joined to its cluster; returns its state afterwards."""
    connect_existing(address)
    handle, summary = find_run(run_id)
    ray.get(handle.cancel_run.remote(run_id))
    deadline = time.monotonic() + wait
    while not summary.state.is_finished() and time.monotonic() < deadline:
        time.sleep(0.1)
        summary = ray.get(handle.status.remote(run_id))
    return summary.state


def live_status(run_id: str, *, address: str | None = None, connect_timeout: float = 10.0) -> LiveStatus | None:
    """A live run's status read from its driver's actor; None if no live driver has it."""
    try:
        connect_existing(address, connect_timeout=connect_timeout)
        handle, summary = find_run(run_id)
        maps = ray.get(handle.progress.remote(run_id), timeout=connect_timeout) or {}
    except Exception:  # noqa: BLE001 - no cluster, or no live run: the caller falls back to the history
        return None
    return LiveStatus.of(summary, maps)
