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
    index: int | None = None  # an item of a map (None: the task)


Entry = tuple[str, int | None]  # (task key, map index or None)


class PauseBook(Protocol):
    def opened(self, task_key: str, index: int | None, message: str, schema: dict | None, timeout: float | None) -> None: ...

    def decisions(self) -> list[Decision]: ...


def is_manual(trigger: Any) -> bool:
    return bool(getattr(trigger, "manual", False))


class PauseDesk:
    def __init__(self, book: PauseBook | None, clock: Callable[[], float], *, resumed: bool = False):
        self.book = book
        self.clock = clock
        self.waiting: dict[Entry, tuple[float, float] | None] = {}  # paused task or item -> (deadline, timeout)
        self.decided: dict[Entry, Decision] = {}
        self.items: dict[Entry, tuple[str, Any]] = {}  # items released: ("approved", input) / ("rejected", why)
        self._next_poll = 0.0
        if resumed:
            self._read(None)

    def _read(self, only: Any) -> None:
        if self.book is None:
            return
        for d in self.book.decisions():
            entry = (d.task_key, d.index)
            if only is None or entry in only:
                self.decided[entry] = d if only is not None else self.decided.get(entry, d)

    def before_run(self, key: str, trigger: Any) -> State | None:
        """A ready task's state instead of running: rejected before (a resumed run), or PAUSED
        for a manual_only one not yet approved; None: it runs."""
        decision = self.decided.get((key, None))
        if decision is not None and not decision.approved:
            return State(type=StateType.FAILED, message=_why(decision))
        if is_manual(trigger) and decision is None:
            return self.pause(key, "waiting for approval (manual_only)", None, None, {})
        return None

    def approval(self, key: str) -> tuple | None:
        decision = self.decided.get((key, None))
        return (decision.value,) if decision is not None and decision.approved else None

    def item_approvals(self, key: str, start: int, indices: Any, size: int) -> tuple | None:
        """A chunk's items' decisions, ((map index, (kind, value)), ...), for rf.pause in them."""
        if not self.items:
            return None
        chosen = range(size) if indices is None else indices
        found = tuple((start + i, self.items[(key, start + i)]) for i in chosen if (key, start + i) in self.items)
        return found or None

    def pause(
        self, key: str, message: str, schema: dict | None, timeout: float | None, timing: dict, index: int | None = None
    ) -> State:
        """Open the pause of a task (or item) and the PAUSED state to move a task to."""
        now = self.clock()
        entry = (key, index)
        if index is not None and entry in self.decided and entry not in self.items:  # decided while no driver ran
            self.waiting[entry] = None  # (a resumed run): released with it on the next step
            return State(type=StateType.PAUSED, message=message, **timing)
        self.decided.pop(entry, None)  # paused again: an earlier approval is spent
        self.items.pop(entry, None)
        self.waiting[entry] = None if timeout is None else (now + timeout, timeout)
        if self.book is not None:
            self.book.opened(key, index, message, schema, timeout)
        self._next_poll = min(self._next_poll, now + POLL_SECONDS) if len(self.waiting) > 1 else now + POLL_SECONDS
        return State(type=StateType.PAUSED, message=message, **timing)

    def due(self, now: float, states: Mapping[str, State]) -> list[tuple[Entry, State | None]]:
        """Paused tasks and items with an outcome now: (entry, None) to run again (approved; an
        item is run again rejected too, to fail saying why), or (entry, the FAILED state) for a
        task rejected or not approved in time.  A task ended meanwhile (cancelled) is forgotten."""
        if not self.waiting:
            return []
        if now >= self._next_poll:
            self._next_poll = now + POLL_SECONDS
            self._read(self.waiting)
        out: list[tuple[Entry, State | None]] = []
        for entry, deadline in list(self.waiting.items()):
            key, index = entry
            state = states[key]
            if state.is_finished() or (index is None and state.type is not StateType.PAUSED):
                del self.waiting[entry]
                continue
            decision = self.decided.get(entry)
            why = None
            if decision is None and deadline is not None and now >= deadline[0]:
                why = f"not approved within {deadline[1]:g}s"
            elif decision is not None and not decision.approved:
                why = _why(decision)
            elif decision is None:
                continue
            del self.waiting[entry]
            if index is not None:
                self.items[entry] = ("rejected", why) if why else ("approved", decision.value)
            out.append((entry, State(type=StateType.FAILED, message=why) if why and index is None else None))
        return out

    def settle(self, now: float, run: Any) -> None:
        """Act on the decisions due; ``run``: the Orchestrator (its submit, follow, transition, maps)."""
        for (key, index), failed in self.due(now, run.states):
            if index is not None:
                release_item(run.maps, key, index, now)
            elif failed is None:
                run.submit(key)
            else:
                run.follow(key, run.transition(key, failed))

    def next_due(self) -> float | None:
        if not self.waiting:
            return None
        deadlines = [d[0] for d in self.waiting.values() if d is not None]
        return min([self._next_poll, *deadlines]) if self.book is not None else min(deadlines, default=None)


def release_item(maps: Any, key: str, index: int, now: float) -> None:
    """Make a paused item of map ``key`` due now (it waits in its chunk for ever until decided)."""
    run = getattr(maps, "maps", {}).get(key)
    for chunk in getattr(run, "chunks", ()):
        if chunk.start <= index < chunk.stop and (index - chunk.start) in chunk.waiting:
            chunk.waiting[index - chunk.start] = (now, chunk.waiting[index - chunk.start][1])


def _why(decision: Decision) -> str:
    reason = f": {decision.reason}" if decision.reason else ""
    return f"rejected by {decision.by}{reason}"
