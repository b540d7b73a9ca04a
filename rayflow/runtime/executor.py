"""RayExecutor: each unit of work (a task attempt, a map chunk) is one Ray task.

Each Work runs ``engine.worker.execute.execute`` with two returns: the value, which
stays in the object store and reaches downstream tasks as an ObjectRef (Ray
resolves it into the argument on the worker), and the small report
(AttemptResult or ChunkSummary), which the orchestrator fetches.  The value
comes first on purpose: Ray stores returns in order, so a value that cannot
be serialised fails the report too and is charged to the work that made it.

The task's resource options go to ``.options()``.  The orchestrator is the
one retry authority, so Ray's own retries are off (``max_retries=0``): a dead
worker comes back as a system error, which the orchestrator retries under
the task's ``system_retries`` and records in the history.  For a task with a
timeout the worker tells the actor when the attempt really starts
(``attempt_started``), so time queued for resources does not count; at the
deadline the Ray task is force-cancelled, which kills its worker process and
frees its CPUs.  A map's payload (its function and unmapped arguments) is put
in the object store once and shared by all its chunks.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from rayflow.engine.worker.execute import execute
from rayflow.engine.executor import Completion, QueuedStarts
from rayflow.engine.plan import TaskSpec
from rayflow.engine.protocol import Work, describe_error
from rayflow.telemetry import worker_context

BIG_PAYLOAD = 64 * 1024  # bytes; larger payloads (and every map's) are put in the object store once


def _execute_remote(payload: bytes, work: Work, notifier: Any, run_id: str, *values: Any) -> tuple[Any, Any]:
    if notifier is not None:
        notifier.attempt_started.remote(run_id, work.work_id, time.time())
    with worker_context(work.trace):  # the user's own spans nest under this work's span
        return execute(payload, work, *values)


_remote_execute = ray.remote(num_returns=2, max_retries=0, retry_exceptions=False)(_execute_remote)
# A persisted value written behind its task: not the task's resources (a GPU task's write needs no
# GPU); Ray's locality-aware scheduling runs it where the value is, when it can.
_remote_write = _remote_execute.options(name="rayflow write-behind")


def _lost(exc: BaseException) -> Any:
    if isinstance(exc, RayTaskError):
        # The user's exceptions are caught inside execute(), so this is the Ray task around
        # it: an argument that would not deserialise here, or a value that would not
        # serialise.  Retrying cannot help, so it is not a system error.
        cause = getattr(exc, "cause", None) or exc
        error = describe_error(cause)
        message = (
            "its arguments or its return value could not be (de)serialised by Ray: "
            f"{type(cause).__name__}: {cause}"
        )
        return error.model_copy(update={"message": message, "system": False})
    return describe_error(exc, system=True)  # worker died for good, object lost, cancelled


def _consume(value_ref: ray.ObjectRef) -> None:
    """The value of a work whose worker died holds the same error as its report: read it, so
    that Ray does not print it again as an "Unhandled error" when the reference goes."""
    try:
        ray.get(value_ref, timeout=0)
    except (RayError, TimeoutError):
        pass


class RayExecutor(QueuedStarts):
    def __init__(self, run_id: str = "", notifier: Any = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.notifier = notifier  # the FlowRunActor's handle, told when timed works start
        self._pending: dict[ray.ObjectRef, tuple[Work, ray.ObjectRef]] = {}  # report ref -> (work, value ref)
        self._payloads: dict[str, Any] = {}
        self._remotes: dict[str, Any] = {}  # task key -> _remote_execute.options(...) (made once)

    def _payload(self, spec: TaskSpec) -> Any:
        if spec.kind != "map" and len(spec.payload) < BIG_PAYLOAD:
            return spec.payload
        if spec.key not in self._payloads:
            self._payloads[spec.key] = ray.put(spec.payload)
        return self._payloads[spec.key]

    def _remote(self, spec: TaskSpec) -> Any:
        remote = self._remotes.get(spec.key)
        if remote is None:
            remote = self._remotes[spec.key] = _remote_execute.options(name=spec.key, **spec.options.ray_options())
        return remote

    def submit(self, spec: TaskSpec, work: Work, handles: list[Any]) -> None:
        if work.persist is not None:  # a write-behind: default resources, wherever Ray puts it
            value_ref, report_ref = _remote_write.remote(b"", work, None, self.run_id, *handles)
            self._pending[report_ref] = (work, value_ref)
            return
        timed = spec.options.timeout is not None and work.job is None
        value_ref, report_ref = self._remote(spec).remote(
            self._payload(spec), work, self.notifier if timed else None, self.run_id, *handles
        )
        self._pending[report_ref] = (work, value_ref)

    def _in_flight(self) -> bool:
        return bool(self._pending)

    def _collect(self, timeout: float | None) -> list[Completion]:
        refs = list(self._pending)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            return []
        if rest:  # collect everything else that is already done in the same step
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        try:
            reports = ray.get(ready)  # one call for every ready report
        except RayError:
            return [self._complete(ref) for ref in ready]  # find the broken ones
        out = []
        for ref, report in zip(ready, reports):
            work, value_ref = self._pending.pop(ref)
            out.append(Completion(work, report, value_ref))
        return out

    def _complete(self, ref: ray.ObjectRef) -> Completion:
        work, value_ref = self._pending.pop(ref)
        try:
            report = ray.get(ref)
        except RayError as exc:
            if not isinstance(exc, RayTaskError):  # the worker died, or an object was lost
                _consume(value_ref)
            return Completion(work, None, None, _lost(exc))
        return Completion(work, report, value_ref)

    def cancel(self, work_id: int) -> None:
        """Force-cancel: a running work's worker process is killed, a queued one never starts."""
        for ref, (work, _) in list(self._pending.items()):
            if work.work_id == work_id:
                del self._pending[ref]
                ray.cancel(ref, force=True)

    def put(self, value: Any) -> Any:
        return value if isinstance(value, ray.ObjectRef) else ray.put(value)

    def fetch(self, handles: list[Any]) -> list[Any]:
        return ray.get(list(handles))
