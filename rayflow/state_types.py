"""The state types and how errors read, without the State model: what every reader of the run
history needs (``rayflow runs``, ``show``, ``logs``, the store's queries), importing nothing but
``enum``.  ``rayflow.states`` (the pydantic models) re-exports these names; see it for what each
state means."""

from __future__ import annotations

import enum


class StateType(str, enum.Enum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    PAUSED = "PAUSED"
    LOOPED = "LOOPED"
    SUCCESS = "SUCCESS"
    CACHED = "CACHED"
    MAPPED = "MAPPED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    TRIGGER_FAILED = "TRIGGER_FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"

    def __str__(self) -> str:
        return self.value


SUCCESSFUL_TYPES = frozenset({StateType.SUCCESS, StateType.CACHED, StateType.MAPPED, StateType.SKIPPED})
FAILED_TYPES = frozenset(
    {StateType.FAILED, StateType.TIMED_OUT, StateType.TRIGGER_FAILED, StateType.CANCELLED, StateType.CRASHED}
)
FINISHED_TYPES = SUCCESSFUL_TYPES | FAILED_TYPES


def error_text(kind: str, message: str) -> str:
    """An error as every message, log line and table shows it: "Type: message" (the type's
    short name, from a qualified one such as "builtins.ValueError"), or "Type" without a message."""
    name = kind.rsplit(".", 1)[-1]
    return f"{name}: {message}" if message else name
