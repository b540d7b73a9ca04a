"""FlowRunActor: the thin Ray shell around engine.Orchestrator.

One actor per driver process (``num_cpus=0``, pinned to the driver's node,
fate-sharing with the driver) hosts every run that driver starts, each in
its own thread.  Creating it costs a worker process once; after that a run
costs two actor calls.  The actor is named ``rayflow-driver-<id>`` in the
``rayflow`` namespace, so any process joined to the cluster can find a live
run by its id (``find_run``) and read its status or cancel it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayflow.engine.orchestrator import RunSummary
from rayflow.engine.plan import Plan
from rayflow.exceptions import UnknownRunError
from rayflow.runtime.cluster import connect_existing
from rayflow.runtime.executor import RayExecutor
from rayflow.runs import ObservedRun, assemble_run
from rayflow.runtime.limits import TagGate
from rayflow.telemetry import TelemetrySettings, flush_all

logger = logging.getLogger(__name__)
NAMESPACE = "rayflow"
NAME_PREFIX = "rayflow-driver-"
KEEP_FINISHED = 200  # finished runs whose status stays queryable from other processes


class _DriverFeeder:
    """Generator inputs live in the driver: their requests wait here until it polls."""

    def __init__(self) -> None:
        self._requests: dict[int, int] = {}
        self._changed = threading.Condition()

    def request(self, stream_id: int, count: int) -> None:
        with self._changed:
            self._requests[stream_id] = count
            self._changed.notify_all()

    def wait(self, timeout: float) -> dict[int, int]:
        with self._changed:
            if not self._requests:
                self._changed.wait(timeout)
            out, self._requests = self._requests, {}
        return out


class _Slot:
    def __init__(self, observed: ObservedRun, executor: RayExecutor):
        self.observed = observed
        self.executor = executor  # told when an attempt with a timeout starts
        self.orchestrator = observed.orchestrator
        self.done = threading.Event()
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None


@ray.remote(num_cpus=0, max_concurrency=256)
class FlowRunActor:
    def __init__(self) -> None:
        self._runs: OrderedDict[str, _Slot] = OrderedDict()
        self._cancel_on_arrival: set[str] = set()  # cancel_run came before its start_run
        self._lock = threading.Lock()
        self._cpus: tuple[float, int] = (0.0, 1)  # (when read, cluster CPUs): a GCS call, so cached

    def _cluster_cpus(self) -> int:
        read_at, cpus = self._cpus
        if time.monotonic() - read_at > 30:
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            self._cpus = (time.monotonic(), cpus)
        return cpus

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def start_run(
        self,
        run_id: str,
        plan: Plan,
        telemetry: TelemetrySettings | None = None,
        home: str | None = None,
        wait: float = 0.0,
    ) -> tuple[str | None, RunSummary | None]:
        """Start the run in a thread of its own; returns its trace id (when it is traced) and,
        if it ends within ``wait`` seconds, its summary as ``wait_run`` gives it: a short run
        costs the driver one round trip to the actor, not two."""
        with self._lock:
            earlier = self._runs.get(run_id)
            if earlier is not None and (not earlier.done.is_set() or plan.attempt <= earlier.orchestrator.plan.attempt):
                # only an ended run's resume (a later attempt) reuses its id
                raise ValueError(f"a run with id {run_id!r} already exists in this driver")
            executor = RayExecutor(run_id, ray.get_runtime_context().current_actor)
            observed = assemble_run(plan, executor, run_id, cpus=self._cluster_cpus(), telemetry=telemetry, home=home)
            orchestrator = observed.orchestrator
            if any(spec.options.tags for spec in plan.specs):
                orchestrator.gate = TagGate(run_id)  # limits by tag: see runtime.limits
            orchestrator.feeder = _DriverFeeder() if plan.specs and any(
                src.kind == "stream" for spec in plan.specs for src in spec.sources
            ) else None
            slot = _Slot(observed, executor)
            self._runs[run_id] = slot
            self._trim()
            if run_id in self._cancel_on_arrival:
                self._cancel_on_arrival.discard(run_id)
                orchestrator.request_cancel()
        observed.start()
        threading.Thread(target=self._drive, args=(slot,), name=f"run-{run_id}", daemon=True).start()
        return observed.trace_id, (self.wait_run(run_id, wait) if wait > 0 else None)

    def _drive(self, slot: _Slot) -> None:
        try:
            slot.summary = slot.orchestrator.run()
        except BaseException as exc:  # noqa: BLE001 - an engine bug must reach the driver, not hang it
            slot.error = exc
        finally:
            if slot.orchestrator.gate is not None:
                slot.orchestrator.gate.release_everything()  # slots of attempts the run did not see end
            try:
                # The history is complete before the driver hears of the end; close() is
                # bounded in time and gives up (logging what was lost) on a failing store.
                slot.observed.close()
            finally:
                slot.done.set()

    def _trim(self) -> None:
        finished = [k for k, s in self._runs.items() if s.done.is_set()]
        for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._runs[key]

    def _slot(self, run_id: str) -> _Slot:
        try:
            return self._runs[run_id]
        except KeyError:
            raise UnknownRunError(f"no run {run_id!r} in this driver", run_id=run_id) from None

    def wait_run(self, run_id: str, timeout: float) -> RunSummary | None:
        """The final summary, value handles included, or None if still running after ``timeout``."""
        slot = self._slot(run_id)
        if not slot.done.wait(timeout):
            return None
        if slot.error is not None:
            raise slot.error
        return slot.summary

    def release(self, run_id: str) -> None:
        """The driver holds the value handles now; keep only the states."""
        slot = self._runs.get(run_id)
        if slot is not None and slot.summary is not None:
            slot.summary.handles = {}
            slot.orchestrator.release_values()

    def status(self, run_id: str) -> RunSummary | None:
        """A snapshot of the run's states without value handles; None if not here."""
        slot = self._runs.get(run_id)
        if slot is None:
            return None
        summary = slot.summary or slot.orchestrator.summary()
        return RunSummary(summary.run_id, summary.flow_name, summary.state, summary.task_states, summary.history)

    def attempt_started(self, run_id: str, work_id: int, at: float) -> None:
        """Called by a worker when an attempt of a task with a timeout begins."""
        slot = self._runs.get(run_id)
        if slot is not None:
            slot.executor.notify_started(work_id, at)

    def stream_requests(self, run_id: str, timeout: float) -> dict[int, int] | None:
        """Items each generator input should send now; None once the run is over."""
        slot = self._slot(run_id)
        feeder = slot.orchestrator.feeder
        if slot.done.is_set() or feeder is None:
            return None
        return feeder.wait(timeout)

    def stream_push(self, run_id: str, stream_id: int, refs: list, count: int, exhausted: bool) -> None:
        """Items of a generator input, put in the object store by the driver."""
        slot = self._slot(run_id)
        slot.orchestrator.push_stream(stream_id, refs[0] if refs else None, count, exhausted)

    def progress(self, run_id: str) -> dict | None:
        slot = self._runs.get(run_id)
        return None if slot is None else slot.orchestrator.progress()

    def flush(self, timeout: float) -> None:
        """Export queued spans, waiting ``timeout`` seconds at most."""
        flush_all(timeout)

    def cancel_run(self, run_id: str) -> None:
        """Cancel the run; a run not here yet is cancelled as it starts (calls to this threaded
        actor may run out of order: a driver's Ctrl-C during start_run can overtake it)."""
        with self._lock:
            slot = self._runs.get(run_id)
            if slot is None:
                self._cancel_on_arrival.add(run_id)
                return
        slot.orchestrator.request_cancel()

    def run_ids(self) -> list[str]:
        return list(self._runs)


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
    global _actor
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
            _actor = (job, handle)
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


def live_status(run_id: str, *, address: str | None = None, connect_timeout: float = 10.0) -> dict | None:
    """A live run's status read from its driver's actor, as plain data; None if no live driver has it."""
    try:
        connect_existing(address, connect_timeout=connect_timeout)
        handle, summary = find_run(run_id)
        maps = ray.get(handle.progress.remote(run_id), timeout=connect_timeout) or {}
    except Exception:  # noqa: BLE001 - no cluster, or no live run: the caller falls back to the history
        return None
    tasks = {
        key: {
            "state": state.type.value,
            "attempt": state.attempt,
            "started_at": state.started_at,
            "finished_at": state.finished_at,
            "message": state.message,
        }
        for key, state in summary.task_states.items()
    }
    return {"run_id": run_id, "flow": summary.flow_name, "state": summary.state.type.value, "tasks": tasks, "maps": maps}
