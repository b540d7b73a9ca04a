"""RayRunner: ``runner="ray"``, the default.

Compiles the plan in the driver (no Ray calls), joins or starts Ray, hands
the plan to this driver's FlowRunActor and waits for the summary in short
polls so Ctrl-C stays responsive: an interrupt cancels the run's Ray tasks
before it propagates.  Only the values asked for through the FlowRun are
ever fetched to the driver.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
from collections.abc import Mapping
from typing import Any

import ray

from rayflow.engine.driver.flow_run import FlowRun
from rayflow.paths import new_run_id, resolved
from rayflow.engine.columns import next_items
from rayflow.engine.plan import Plan, compile_plan
from rayflow.engine.driver.progress import MapProgress
from rayflow.exceptions import RunCrashedError, Terminated
from rayflow.runtime.driver.actors import actor_replied, driver_actor, forget_actor
from rayflow.runs.assembly import run_graph
from rayflow.runtime.driver import history_wait
from rayflow.runtime.driver.cluster import connect
from rayflow.runtime.driver.resources import check_resources
from rayflow.store import rayflow_home
from rayflow.store.history import RunStore, refuse_taken_run_id
from rayflow.telemetry import settings_from_env

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.5
EXIT_FLUSH_SECONDS = 2.0
CANCEL_GRACE_SECONDS = 10.0
TERMINATE_GRACE_SECONDS = 2.0


class RayRunner:
    def run_flow(self, flow: Any, graph: Any) -> FlowRun:
        refuse_taken_run_id(flow.options)
        plan = compile_plan(graph, flow)
        connect(flow.options.address)
        plan = check_resources(plan)  # a task no node can ever fit: refused before anything runs
        actor = driver_actor()
        run_id = flow.options.run_id or new_run_id()
        telemetry = settings_from_env()
        traced = telemetry if telemetry.enabled else None
        home = resolved(str(rayflow_home()))  # as the actor opens it
        has_maps = any(spec.kind == "map" for spec in plan.specs)
        progress = MapProgress(flow.options.progress if has_maps else False)
        # A run that feeds generators or draws progress needs the driver at once; any other
        # waits inside start_run, so a short run costs one round trip to the actor.
        wait = 0.0 if plan.streams or progress.enabled else POLL_SECONDS
        objects = _objects_put(plan)
        feeder = None
        try:
            trace_id, summary = ray.get(actor.start_run.remote(run_id, objects, traced, home, wait))
            if traced is not None:
                _flush_at_exit(actor)
            feeder = _start_feeder(actor, run_id, plan.streams)
            while summary is None:
                summary = ray.get(actor.wait_run.remote(run_id, POLL_SECONDS))
                if progress.enabled:
                    progress.update(ray.get(actor.progress.remote(run_id)) or {})
        except KeyboardInterrupt as exc:
            # The actor may not have the run yet (Ctrl-C during start_run): cancel_run then
            # cancels it as it arrives.  Either way, give it a bounded moment to end CANCELLED.
            # SIGTERM to a process group stops a local Ray with the driver: then the driver
            # records the run CANCELLED itself, within a shorter grace.
            grace = TERMINATE_GRACE_SECONDS if isinstance(exc, Terminated) else CANCEL_GRACE_SECONDS
            summary = None
            try:
                actor.cancel_run.remote(run_id)
                summary = ray.get(actor.wait_run.remote(run_id, grace), timeout=grace + 1)
                history_wait.noted(actor, run_id)  # written before this process exits
            except BaseException:  # noqa: BLE001 - a second interrupt ends the wait, not the record below
                pass
            finally:
                progress.close()
            if summary is None or not summary.state.is_finished():
                _record_end(plan, run_id, home, "CANCELLED", "cancelled: interrupted, and its actor did not confirm")
            raise
        except ray.exceptions.RayActorError as exc:
            progress.close()
            forget_actor(actor)
            raise _crashed(plan, run_id, home, exc) from None
        actor_replied()
        history_wait.noted(actor, run_id)  # its last rows may still be on their way to the disk
        progress.close()
        if feeder is not None:
            feeder.join(5)
        flow_run = FlowRun(summary, plan.result, ray.get, tuple(s.key for s in plan.specs))
        flow_run.trace_id = trace_id
        return flow_run


def _record_end(plan: Plan, run_id: str, home: str, state: str, message: str) -> None:
    """The run's actor cannot record its end: the driver does, bounded in time."""
    try:
        RunStore(home, repair=True).mark_ended(
            run_id, state, flow=plan.flow_name, params=plan.params, tasks=[s.key for s in plan.specs],
            attempt=plan.attempt, message=message, graph=run_graph(plan),
        )
    except Exception as err:  # noqa: BLE001 - the caller's error still tells the user
        logger.warning("rayflow: cannot record run %s as %s in the history: %s", run_id, state, err)


def _crashed(plan: Plan, run_id: str, home: str, exc: BaseException) -> RunCrashedError:
    """The run's orchestrating actor died: record the run CRASHED (no one else will) and say so."""
    lines = [line.strip() for line in (getattr(exc, "error_msg", None) or str(exc)).splitlines()]
    causes = [line for line in lines if line and ":" not in line[:20]] or ["it died"]
    cause = causes[-1][:300]
    message = f"the actor orchestrating the run died: {cause}"
    _record_end(plan, run_id, home, "CRASHED", message)
    return RunCrashedError(
        f"run {run_id} of flow {plan.flow_name!r} crashed: {message}; the history records it CRASHED "
        f"and `rayflow resume {run_id}` runs what had not finished",
        run_id=run_id,
    )


_exit_hooked: set[str] = set()


def _flush_at_exit(actor: Any) -> None:
    """When the driver exits, give the actor a bounded moment to export the last spans."""
    name = actor._ray_actor_id.hex() if hasattr(actor, "_ray_actor_id") else "actor"
    if name in _exit_hooked:
        return
    _exit_hooked.add(name)

    def flush() -> None:
        if not ray.is_initialized():  # Ray was shut down first: its actor is gone already
            return
        try:
            ray.get(actor.flush.remote(EXIT_FLUSH_SECONDS), timeout=EXIT_FLUSH_SECONDS + 1)
        except Exception:  # noqa: BLE001 - exiting: a collector that is down costs nothing more
            pass

    atexit.register(flush)


def _objects_put(plan: Plan) -> Plan:
    """Put a map's constant inputs in the object store once, from the driver, not via the actor."""
    if not any(spec.objects for spec in plan.specs):
        return plan
    specs = tuple(
        dataclasses.replace(spec, objects=tuple(ray.put(o) for o in spec.objects)) if spec.objects else spec
        for spec in plan.specs
    )
    return plan.with_specs(specs)


def _start_feeder(actor: Any, run_id: str, streams: Mapping[int, Any]) -> threading.Thread | None:
    """Generator inputs stay in the driver; this thread sends their items as the maps ask."""
    if not streams:
        return None

    def feed() -> None:
        exhausted: set[int] = set()
        while True:
            try:
                requests = ray.get(actor.stream_requests.remote(run_id, 0.5))
            except ray.exceptions.RayError:
                return
            if requests is None:
                return
            for stream_id, count in requests.items():
                if stream_id in exhausted:
                    continue
                column, n, done = next_items(streams[stream_id], count)
                refs = [ray.put(column)] if column is not None else []
                actor.stream_push.remote(run_id, stream_id, refs, n, done)
                if done:
                    exhausted.add(stream_id)

    thread = threading.Thread(target=feed, name=f"rayflow-feed-{run_id}", daemon=True)
    thread.start()
    return thread
