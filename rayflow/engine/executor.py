"""The executor interface the orchestrator drives, and the events it reports.

An executor runs units of work somewhere and reports them back; it decides
nothing.  Five methods: ``submit`` a Work with its input handles, ``wait``
for events (works that started, for tasks with a timeout, and works that
finished), ``cancel`` a work, ``put`` a value, ``fetch`` values.  Values stay
with the executor as opaque *handles* (a Ray ObjectRef, or a box in this
process); the orchestrator only passes handles along.  Every work runs
``engine.worker.execute.execute`` on the worker side.  Implementations:
``engine.driver.local_executor.LocalExecutor`` (threads of this process) and
``runtime.actor.executor.RayExecutor``.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Protocol

from rayflow.engine.plan import TaskSpec
from rayflow.engine.protocol import AttemptResult, Work
from rayflow.states import ErrorInfo, StateType


@dataclass(frozen=True)
class Completion:
    """A finished work: its report (AttemptResult / ChunkSummary) and its value's handle.

    ``system_error`` is set instead of a report when the work itself was lost
    (its worker died, it was cancelled, its value could not be stored).
    """

    work: Work
    report: Any
    handle: Any
    system_error: ErrorInfo | None = None


@dataclass(frozen=True)
class Started:
    """Work ``work_id`` began running at ``at`` (a timeout counts from here)."""

    work_id: int
    at: float


Event = Completion | Started


class Executor(Protocol):
    def submit(self, spec: TaskSpec, work: Work, handles: list[Any], stages: tuple[TaskSpec, ...] = ()) -> None:
        """Start a work; ``handles`` are its flat inputs (see engine.protocol); ``stages``: the
        specs of a fused work's stages (``Work.fused``), whose payloads it adds."""

    def wait(self, timeout: float | None) -> list[Event]:
        """Events since the last call; waits up to ``timeout`` for a completion."""

    def cancel(self, work_id: int) -> None:
        """Stop the work if it is still running."""

    def put(self, value: Any) -> Any:
        """A handle for a value made by the orchestrator itself."""

    def fetch(self, handles: list[Any]) -> list[Any]:
        """The values behind ``handles``."""

    # Optional: ``shares_values = True`` when downstream works get the very objects a work
    # returned (the in-process executor): persisted values are then written before the report,
    # since a write behind could store a downstream task's edits.


class QueuedStarts:
    """What both executors share: ``Started`` events queued from any thread, and ``wait``.

    ``wait`` hands over the queued starts, then the works that finished: subclasses say
    whether any work is in flight (``_in_flight``) and collect finished ones, waiting up to
    a timeout for the first (``_collect``).  With starts to report it does not block.
    """

    def __init__(self) -> None:
        self._started: collections.deque[Started] = collections.deque()

    def notify_started(self, work_id: int, at: float) -> None:
        self._started.append(Started(work_id, at))

    def wait(self, timeout: float | None) -> list[Event]:
        events: list[Event] = []
        while self._started:
            events.append(self._started.popleft())
        if not self._in_flight():
            if timeout and not events:
                time.sleep(min(timeout, 0.01))  # nothing to wait for: do not spin
            return events
        return events + self._collect(0 if events else timeout)

    def _in_flight(self) -> bool:
        raise NotImplementedError

    def _collect(self, timeout: float | None) -> list[Completion]:
        raise NotImplementedError


def fused_completions(work: Work, handles: list[Any], reports: list[Any]) -> list[Completion]:
    """A fused work's completions: the head's, then each stage's that ran (core.fusion)."""
    out = [Completion(work, reports[0], handles[0])]
    for stage, report, handle in zip(work.fused, reports[1:], handles[1:]):
        if report is not None:
            out.append(Completion(stage.work, report, handle))
    return out


def system_failure(
    task_key: str, attempt: int, error: ErrorInfo, started_at: float, finished_at: float | None = None
) -> AttemptResult:
    """An AttemptResult for a plain task whose work was lost (not the user's error)."""
    return AttemptResult(
        task_key=task_key,
        attempt=attempt,
        type=StateType.FAILED,
        started_at=started_at,
        finished_at=time.time() if finished_at is None else finished_at,
        message=f"task '{task_key}': {error.message}" if not error.system else f"system error: {error}",
        error=error,
    )
