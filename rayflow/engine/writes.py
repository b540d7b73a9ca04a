"""Write-behind, on the orchestrator's side: a persisted value is written after its task ended.

A task (or chunk) that persists ends as soon as its value is made; its report names where the
value goes, and ``WriteBehind.write`` submits a write work with the value's handle while
downstream tasks go on.  The run ends only when every write has (``pending``): a write that
fails, after WRITE_RETRIES more tries, is an error that fails the run, naming the task.  A
cancelled run does not wait for its writes (``drop``: they finish on their own, atomically).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rayflow.engine.executor import Completion, Executor
from rayflow.engine.plan import Plan
from rayflow.engine.protocol import Work, WriteReport
from rayflow.states import State, StateType

WRITE_RETRIES = 2  # a write-behind that fails (or is lost with its worker) is tried this many more times


class WriteBehind:
    def __init__(self, plan: Plan, executor: Executor, run_id: str, next_work_id: Callable[[], int]):
        self.plan = plan
        self.executor = executor
        self.run_id = run_id
        self.next_work_id = next_work_id
        self.writes: dict[int, tuple[Work, Any, int]] = {}  # work id -> (write work, value handle, tries)
        self.errors: list[str] = []
        self.dropped = 0  # writes a cancel left unawaited

    @property
    def pending(self) -> bool:
        return bool(self.writes)

    def write(self, key: str, persist: tuple[str, str] | None, handle: Any, tries: int = 0) -> None:
        """Write ``key``'s value (``handle``) where ``persist`` says; nothing when it is not persisted."""
        if persist is None or handle is None:
            return
        work = Work(self.next_work_id(), key, 0, (("value", 0),), run_id=self.run_id, persist=persist)  # not traced
        self.writes[work.work_id] = (work, handle, tries)
        self.executor.submit(self.plan.by_key[key], work, [handle])

    def written(self, completion: Completion) -> None:
        """A write work ended: done, tried again, or an error once its tries are spent."""
        entry = self.writes.pop(completion.work.work_id, None)
        if entry is None:
            return  # the run was cancelled meanwhile
        work, handle, tries = entry
        report = completion.report
        error = report.error if isinstance(report, WriteReport) else str(completion.system_error)
        if error is None:
            return
        if tries < WRITE_RETRIES:
            self.write(work.task_key, work.persist, handle, tries + 1)
            return
        self.errors.append(f"task '{work.task_key}': its result could not be persisted to {work.persist[1]}: {error}")

    def drop(self) -> None:
        """The run is cancelled: writes under way finish on their own (atomically); nobody waits."""
        self.dropped += len(self.writes)
        self.writes.clear()

    def final(self, state: State) -> State:
        """The run's final state as its writes leave it: a SUCCESS whose results were not all
        kept is FAILED (naming the first), one cancelled while they were written CANCELLED."""
        if self.errors and state.type is StateType.SUCCESS:  # what the user asked to keep was not kept
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            state = state.model_copy(update={"type": StateType.FAILED, "message": self.errors[0] + more})
        if self.dropped and state.type is StateType.SUCCESS:  # cancelled while results were written
            message = f"run cancelled while {self.dropped} result(s) were being written"
            state = state.model_copy(update={"type": StateType.CANCELLED, "message": message})
        return state
