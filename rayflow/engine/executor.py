"""The executor interface, and the in-process executor.

An executor runs task attempts somewhere and reports them back; it decides
nothing.  Four methods: ``submit`` an attempt, ``wait`` for events (attempts
that started, for tasks with a timeout, and attempts that finished),
``cancel`` a running one, ``fetch`` values.  Values stay with the executor as
opaque *handles* (a Ray ObjectRef, or a box in this process); the
orchestrator only passes handles along.

``LocalExecutor`` runs attempts on a thread pool in this process.  It is the
reference for the engine's semantics and makes the orchestrator testable
without Ray.  Task resource options are ignored by it.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from rayflow.engine.plan import TaskSpec
from rayflow.engine.task_run import AttemptResult, describe_error, run_attempt
from rayflow.states import StateType


@dataclass(frozen=True)
class Completion:
    """A finished attempt: its result and the handle of its value."""

    result: AttemptResult
    handle: Any


@dataclass(frozen=True)
class Started:
    """An attempt began running at ``at`` (its timeout counts from here)."""

    task_key: str
    attempt: int
    at: float


Event = Completion | Started


class Executor(Protocol):
    def submit(self, spec: TaskSpec, attempt: int, inputs: list[Any]) -> None:
        """Start an attempt; ``inputs`` are the handles of ``spec.upstream``, in order."""

    def wait(self, timeout: float | None) -> list[Event]:
        """Events since the last call; waits up to ``timeout`` for a completion.

        ``Started`` is reported at least for attempts of tasks with a timeout.
        """

    def cancel(self, task_key: str) -> None:
        """Stop the running attempt of ``task_key`` if there is one."""

    def fetch(self, handles: list[Any]) -> list[Any]:
        """The values behind ``handles``."""


def system_failure(task_key: str, attempt: int, exc: BaseException, started_at: float) -> AttemptResult:
    """An AttemptResult for an attempt that the executor lost (not the user's error)."""
    error = describe_error(exc, system=True)
    return AttemptResult(
        task_key=task_key,
        attempt=attempt,
        type=StateType.FAILED,
        started_at=started_at,
        finished_at=time.time(),
        message=f"system error: {error}",
        error=error,
    )


class LocalBox:
    """The handle of a value kept in this process."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class LocalExecutor:
    """Runs attempts on threads of this process."""

    def __init__(self, max_workers: int | None = None):
        self._pool = cf.ThreadPoolExecutor(max_workers=max_workers or max(4, os.cpu_count() or 1))
        self._futures: dict[cf.Future[Any], tuple[str, int, float]] = {}
        self._started: collections.deque[Started] = collections.deque()

    def _attempt(self, spec: TaskSpec, attempt: int, values: list[Any]) -> tuple[AttemptResult, Any]:
        self._started.append(Started(spec.key, attempt, time.time()))
        return run_attempt(spec.payload, spec.key, attempt, *values)

    def submit(self, spec: TaskSpec, attempt: int, inputs: list[Any]) -> None:
        values = [None if box is None else box.value for box in inputs]
        future = self._pool.submit(self._attempt, spec, attempt, values)
        self._futures[future] = (spec.key, attempt, time.time())

    def wait(self, timeout: float | None) -> list[Event]:
        events: list[Event] = []
        while self._started:
            events.append(self._started.popleft())
        if not self._futures:
            if timeout and not events:
                time.sleep(min(timeout, 0.01))
            return events
        done, _ = cf.wait(list(self._futures), timeout=0 if events else timeout, return_when=cf.FIRST_COMPLETED)
        completions: list[Event] = events
        for future in done:
            key, attempt, submitted = self._futures.pop(future)
            try:
                result, value = future.result()
            except BaseException as exc:  # noqa: BLE001 - a broken attempt, not the user's error
                result, value = system_failure(key, attempt, exc, submitted), None
            completions.append(Completion(result, LocalBox(value)))
        return completions

    def cancel(self, task_key: str) -> None:
        for future, (key, _, _) in list(self._futures.items()):
            if key == task_key and future.cancel():
                del self._futures[future]

    def fetch(self, handles: list[Any]) -> list[Any]:
        return [None if box is None else box.value for box in handles]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
