"""The orchestrator's side of pauses: tasks that wait for a person (``triggers.manual_only``,
``rf.pause``), holding no worker while they wait.

A paused task is in state PAUSED: not finished, so what is downstream of it waits, while
the rest of the run goes on.  Its pause is opened in the ``PauseBook`` (the run history,
runs.approval) with its message, input schema and timeout; while any task is paused the
``PauseDesk`` reads the book's decisions every ``poll`` seconds.  ``due`` gives the loop
what to do: run an approved task again (its approval in ``Work.approval``), end a
rejected one FAILED with the reason, or one not approved in time FAILED "not approved
within ...".  A resumed run (its next attempt) reads the decisions once at its start: an
approval made while no driver was there lets its task run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rayflow.states import State, StateType

POLL_SECONDS = 0.2  # how often the decisions are read while a task is paused


@dataclass(frozen=True)
class Decision:
    task_key: str
    approved: bool
    value: Any = None  # the approved input (JSON)
    reason: str | None = None
    by: str = ""


class PauseBook(Protocol):
    def opened(self, task_key: str, message: str, schema: dict | None, timeout: float | None) -> None: ...

    def decisions(self) -> list[Decision]: ...


def is_manual(trigger: Any) -> bool:
    return bool(getattr(trigger, "manual", False))


class PauseDesk:
    def __init__(self, book: PauseBook | None, clock: Callable[[], float], *, resumed: bool = False):
        self.book = book
        self.clock = clock
        self.waiting: dict[str, tuple[float, float] | None] = {}  # paused task key -> (deadline, timeout)
        self.decided: dict[str, Decision] = {}
        self.done: set[str] = set()  # keys whose decision the loop acted on
        self._next_poll = 0.0
        if resumed:
            self._read()

    def _read(self) -> None:
        if self.book is None:
            return
        for decision in self.book.decisions():
            self.decided.setdefault(decision.task_key, decision)

    def before_run(self, key: str, trigger: Any) -> State | None:
        """A ready task's state instead of running: rejected before (a resumed run), or PAUSED
        for a manual_only one not yet approved; None: it runs."""
        decision = self.decided.get(key)
        if decision is not None and not decision.approved:
            self.done.add(key)
            return self.rejected(decision)
        if is_manual(trigger) and decision is None:
            return self.pause(key, "waiting for approval (manual_only)", None, None, {})
        return None

    def approval(self, key: str) -> tuple | None:
        decision = self.decided.get(key)
        if decision is not None and decision.approved:
            self.done.add(key)
            return (decision.value,)
        return None

    def pause(self, key: str, message: str, schema: dict | None, timeout: float | None, timing: dict) -> State:
        """Open the pause and the PAUSED state to move ``key`` to."""
        now = self.clock()
        self.decided.pop(key, None)  # paused again: an earlier approval is spent
        self.waiting[key] = None if timeout is None else (now + timeout, timeout)
        if self.book is not None:
            self.book.opened(key, message, schema, timeout)
        self._next_poll = now + POLL_SECONDS
        return State(type=StateType.PAUSED, message=message, **timing)

    def rejected(self, decision: Decision) -> State:
        reason = f": {decision.reason}" if decision.reason else ""
        return State(type=StateType.FAILED, message=f"rejected by {decision.by}{reason}")

    def due(self, now: float, states: Mapping[str, State]) -> list[tuple[str, State | None]]:
        """Paused tasks with an outcome now: (key, None) to run again (approved), or (key, the
        FAILED state) rejected or timed out.  A task no longer PAUSED (cancelled) is forgotten."""
        if not self.waiting:
            return []
        if now >= self._next_poll:
            self._next_poll = now + POLL_SECONDS
            self._read_new()
        out: list[tuple[str, State | None]] = []
        for key, deadline in list(self.waiting.items()):
            if states[key].type is not StateType.PAUSED:
                del self.waiting[key]
                continue
            decision = self.decided.get(key)
            if decision is not None:
                del self.waiting[key]
                out.append((key, None if decision.approved else self.rejected(decision)))
                if not decision.approved:
                    self.done.add(key)
            elif deadline is not None and now >= deadline[0]:
                del self.waiting[key]
                out.append((key, State(type=StateType.FAILED, message=f"not approved within {deadline[1]:g}s")))
        return out

    def _read_new(self) -> None:
        if self.book is None:
            return
        for decision in self.book.decisions():
            if decision.task_key in self.waiting:
                self.decided[decision.task_key] = decision

    def next_due(self) -> float | None:
        if not self.waiting:
            return None
        deadlines = [d[0] for d in self.waiting.values() if d is not None]
        return min([self._next_poll, *deadlines]) if self.book is not None else min(deadlines, default=None)

