"""``rf.SLA``: what a flow's runs under ``rayflow serve`` promise (rayflow.serving.sla checks it).

- ``late_after``: a fire that has not started this long after its scheduled time is LATE;
- ``max_duration``: a run going this long is OVERDUE, and with ``cancel_overdue`` cancelled;
- ``notify``: the notifiers (``rf.notify.webhook``, ``slack``, ``email``) told of each, once.

A pydantic model: a bad value is refused where the flow is defined."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayflow.exceptions import SLAError


class SLA(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    late_after: float | None = Field(default=None, gt=0)  # seconds (a timedelta is taken)
    max_duration: float | None = Field(default=None, gt=0)
    notify: tuple[Any, ...] = ()
    cancel_overdue: bool = False

    def __init__(self, **values: Any) -> None:
        """``rf.SLA(...)`` called by hand: a bad value is one DefinitionError naming each problem."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'SLA'}={e.get('input')!r}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise SLAError(f"invalid rf.SLA: {problems}") from None

    @field_validator("late_after", "max_duration", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        return value.total_seconds() if isinstance(value, timedelta) else value

    @field_validator("notify", mode="before")
    @classmethod
    def _notifiers(cls, value: Any) -> Any:
        notifiers = value if isinstance(value, (list, tuple)) else (value,)
        bad = [n for n in notifiers if not callable(getattr(n, "notify", None))]
        if bad:
            raise ValueError(f"must be notifiers (rf.notify.webhook, slack, email), got {bad!r}")
        return tuple(notifiers)

    @model_validator(mode="after")
    def _something(self) -> SLA:
        if self.late_after is None and self.max_duration is None:
            raise ValueError("an SLA needs late_after, max_duration or both")
        if self.cancel_overdue and self.max_duration is None:
            raise ValueError("cancel_overdue needs max_duration")
        return self
