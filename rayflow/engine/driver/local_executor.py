"""``LocalExecutor``: runs works on a thread pool in this process.

It is the reference for the engine's semantics and makes the orchestrator
testable without Ray.  Task resource options are ignored by it, and since a
thread cannot be killed, a work that times out or is cancelled is abandoned:
its result is ignored but the thread runs on until the function returns.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from typing import Any

from rayflow.engine.executor import Completion, QueuedStarts, fused_completions
from rayflow.engine.plan import TaskSpec
from rayflow.engine.protocol import Work, describe_error, stage_arguments
from rayflow.engine.worker.execute import execute
from rayflow.engine.worker.fused import execute_fused


THREAD_PREFIX = "rayflow-local-task"  # its threads' names (Python joins them at exit, daemon or not)


class LocalBox:
    """The handle of a value kept in this process."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class LocalExecutor(QueuedStarts):
    """Runs works on threads of this process."""

    shares_values = True  # downstream tasks get the very objects: persisted values are written inline

    def __init__(self, max_workers: int | None = None):
        super().__init__()
        self._pool = cf.ThreadPoolExecutor(max_workers=max_workers or max(4, os.cpu_count() or 1), thread_name_prefix=THREAD_PREFIX)
        self._futures: dict[cf.Future[Any], Work] = {}

    def _run(self, spec: TaskSpec, work: Work, values: list[Any], stages: tuple[TaskSpec, ...] = ()) -> tuple[Any, Any]:
        self.notify_started(work.work_id, time.time())
        if work.fused:  # a map chunk with its fused stages (core.fusion)
            return execute_fused(spec.payload, work, *stage_arguments(work, values, [s.payload for s in stages]))
        if spec.options.timeout is None:
            return execute(spec.payload, work, *values)
        return execute(spec.payload, work, *values, started=lambda at: self.notify_started(work.work_id, at))  # rf.Loop

    def submit(self, spec: TaskSpec, work: Work, handles: list[Any], stages: tuple[TaskSpec, ...] = ()) -> None:
        values = [None if box is None else box.value for box in handles]
        self._futures[self._pool.submit(self._run, spec, work, values, stages)] = work

    def _in_flight(self) -> bool:
        return bool(self._futures)

    def _collect(self, timeout: float | None) -> list[Completion]:
        events: list[Completion] = []
        done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        for future in done:
            work = self._futures.pop(future)
            try:
                value, report = future.result()
            except BaseException as exc:  # noqa: BLE001 - a broken work, not the user's error
                events.append(Completion(work, None, None, describe_error(exc, system=True)))
                continue
            if work.fused:
                events += fused_completions(work, [LocalBox(v) for v in value], report)
            else:
                events.append(Completion(work, report, LocalBox(value)))
        return events

    def cancel(self, work_id: int) -> None:
        for future, work in list(self._futures.items()):
            if work.work_id == work_id:
                future.cancel()
                del self._futures[future]

    def put(self, value: Any) -> Any:
        return LocalBox(value)

    def fetch(self, handles: list[Any]) -> list[Any]:
        return [None if box is None else box.value for box in handles]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
