"""RayExecutor: each task attempt is one Ray task.

The Ray task runs ``engine.task_run.run_attempt`` and has two returns: the
value, which stays in the object store, and the small AttemptResult, which
the orchestrator fetches.  The value comes first on purpose: Ray stores
returns in order, so a value that cannot be serialised fails the
AttemptResult too and the failure is charged to the task that produced it.
The value and is handed to downstream tasks as an ObjectRef
(Ray resolves it into the argument on the worker).  The task's resource
options go to ``.options()``.  The orchestrator is the one retry authority, so Ray's own retries are off
(``max_retries=0``): a dead worker comes back as a system error, which the
orchestrator retries under the task's ``system_retries`` and records in the
history.  For a task with a timeout the worker tells the actor when the
attempt really starts (``attempt_started``), so time spent queued for
resources does not count; at the deadline the Ray task is force-cancelled,
which kills its worker process and frees its CPUs.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from rayflow.engine.executor import Completion, Event, Started, system_failure
from rayflow.engine.plan import TaskSpec
from rayflow.engine.task_run import AttemptResult, run_attempt

def _attempt_value_first(
    payload: bytes, task_key: str, attempt: int, notifier: Any, run_id: str, *inputs: Any
) -> tuple[Any, AttemptResult]:
    if notifier is not None:
        notifier.attempt_started.remote(run_id, task_key, attempt, time.time())
    result, value = run_attempt(payload, task_key, attempt, *inputs)
    return value, result


_remote_attempt = ray.remote(num_returns=2, max_retries=0, retry_exceptions=False)(_attempt_value_first)


def _serialisation_failure(key: str, attempt: int, exc: RayTaskError, submitted: float) -> AttemptResult:
    cause = getattr(exc, "cause", None) or exc
    result = system_failure(key, attempt, cause, submitted)
    message = (
        f"task '{key}': its arguments or its return value could not be (de)serialised by Ray: "
        f"{type(cause).__name__}: {cause}"
    )
    return dataclasses.replace(
        result, message=message, error=result.error.model_copy(update={"system": False, "message": message})
    )


class RayExecutor:
    def __init__(self, run_id: str = "", notifier: Any = None) -> None:
        self.run_id = run_id
        self.notifier = notifier  # the FlowRunActor's handle, told when timed attempts start
        # state ref -> (task key, attempt, value ref, submit time)
        self._pending: dict[ray.ObjectRef, tuple[str, int, ray.ObjectRef, float]] = {}
        self._started: collections.deque[Started] = collections.deque()

    def notify_started(self, task_key: str, attempt: int, at: float) -> None:
        self._started.append(Started(task_key, attempt, at))

    def submit(self, spec: TaskSpec, attempt: int, inputs: list[Any]) -> None:
        options = spec.options.ray_options()
        notifier = self.notifier if spec.options.timeout is not None else None
        value_ref, state_ref = _remote_attempt.options(name=spec.key, **options).remote(
            spec.payload, spec.key, attempt, notifier, self.run_id, *inputs
        )
        self._pending[state_ref] = (spec.key, attempt, value_ref, time.time())

    def wait(self, timeout: float | None) -> list[Event]:
        events: list[Event] = []
        while self._started:
            events.append(self._started.popleft())
        if not self._pending:
            if timeout and not events:
                time.sleep(min(timeout, 0.01))
            return events
        refs = list(self._pending)
        ready, rest = ray.wait(refs, num_returns=1, timeout=0 if events else timeout)
        if not ready:
            return events
        if rest:  # collect everything else that is already done in the same step
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return events + [self._complete(ref) for ref in ready]

    def _complete(self, ref: ray.ObjectRef) -> Completion:
        key, attempt, value_ref, submitted = self._pending.pop(ref)
        try:
            result: AttemptResult = ray.get(ref)
        except RayTaskError as exc:
            # The user's exceptions are caught inside run_attempt, so this is the Ray task
            # around it: an argument that would not deserialise here, or a return value that
            # would not serialise.  Retrying cannot help, so it is not a system error.
            return Completion(_serialisation_failure(key, attempt, exc, submitted), None)
        except RayError as exc:  # worker died for good, object lost, task cancelled
            return Completion(system_failure(key, attempt, exc, submitted), None)
        return Completion(result, value_ref)

    def cancel(self, task_key: str) -> None:
        """Force-cancel: a running attempt's worker process is killed, a queued one never starts."""
        for ref, (key, *_rest) in list(self._pending.items()):
            if key == task_key:
                del self._pending[ref]
                ray.cancel(ref, force=True)

    def fetch(self, handles: list[Any]) -> list[Any]:
        return ray.get(handles)

