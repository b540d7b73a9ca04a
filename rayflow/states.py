"""Task and flow states, after Prefect 1.

A State is an immutable record of one transition.  It carries no behaviour
that reads global context: whoever creates a state passes everything it needs.

Successful states: SUCCESS, CACHED, MAPPED, SKIPPED.
Failed states: FAILED, TIMED_OUT, TRIGGER_FAILED, CANCELLED, CRASHED.
CRASHED is a run's state only: its driver or its orchestrating actor died before it could
record an end.  It is written once, by whoever detects the death (the runner that sees its
actor die, the server's reaper, or a reader that finds the run's driver process gone).
Unfinished states: PENDING, SCHEDULED, RUNNING, RETRYING, PAUSED, LOOPED.
PAUSED: a task waits for a person (``triggers.manual_only``, ``rf.pause``); it holds no worker.
LOOPED: one iteration of a task that raised ``rf.Loop`` ended; the task runs again.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The types and error_text live in state_types (no pydantic: what the history's readers import).
from rayflow.state_types import FAILED_TYPES, FINISHED_TYPES, SUCCESSFUL_TYPES, StateType, error_text

__all__ = ["FAILED_TYPES", "FINISHED_TYPES", "SUCCESSFUL_TYPES", "ErrorInfo", "State", "StateType", "error_text"]


class ErrorInfo(BaseModel):
    """What is kept of an exception even when the exception object cannot travel."""

    model_config = ConfigDict(frozen=True)

    type: str  # qualified name, e.g. "builtins.ValueError"
    message: str
    traceback: str = ""
    system: bool = False  # True for a dead worker or lost object, not the user's code

    @property
    def type_name(self) -> str:
        return self.type.rsplit(".", 1)[-1]

    def __str__(self) -> str:
        return error_text(self.type, self.message)


class State(BaseModel):
    """One state of a task or a flow run.

    ``timestamp`` is when the state was entered; ``started_at``/``finished_at``
    are the attempt's real start and end as measured where it ran.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    type: StateType
    message: str = ""
    attempt: int = Field(default=1, ge=1)
    timestamp: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    scheduled_for: float | None = None  # RETRYING / SCHEDULED: when the next attempt is due
    error: ErrorInfo | None = None
    exception: Any = Field(default=None, exclude=True, repr=False)

    def is_successful(self) -> bool:
        return self.type in SUCCESSFUL_TYPES

    def is_failed(self) -> bool:
        return self.type in FAILED_TYPES

    def is_finished(self) -> bool:
        return self.type in FINISHED_TYPES

    def is_skipped(self) -> bool:
        return self.type is StateType.SKIPPED

    def is_running(self) -> bool:
        return self.type is StateType.RUNNING

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def __str__(self) -> str:
        return f"{self.type.value}({self.message!r})" if self.message else self.type.value
