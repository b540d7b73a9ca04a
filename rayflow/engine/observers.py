"""The one way to watch a run: ``RunObserver``, whose hooks the orchestrator calls.

Every hook takes keyword arguments only and does nothing by default, so an
observer overrides just what it needs and the orchestrator calls only hooks
that are overridden (an unused hook costs nothing per chunk or transition).
In the order a run meets them:

- ``amend(task_key, old, new) -> State``: may replace a new state
  before it is recorded; the state handlers (``engine.handlers``) are this.
- ``on_transition(run_id, task_key, old, new)``: a task (``task_key=None``:
  the flow) changed state; history, tracing and progress bars listen here.
- ``on_work(work) -> Work``: may amend a work before it is submitted
  (tracing gives it a trace context).
- ``on_report(work, report)``: every finished work's report, with its logs.
- ``on_chunk(task_key, work, summary, error, facts)``: a chunk of a map finished
  (``summary``) or was lost (``error``); ``facts`` (a ``WorkFacts``) is what the map
  made of it: its items final by state, those to run again, a row per item that did not
  succeed or was run again (the history records them).
- ``on_log(run_id, records)``: records the orchestrator's side adds to the run's logs (a
  notifier's warning), ``(at, level, message, task_key, map_index, trace_id, span_id)`` each;
  may come from another thread.

Observers run in the orchestrator's loop: a slow hook slows the run.  Apart
from ``amend`` (whose failure fails the state, as a handler's does), a hook
must not raise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rayflow.engine.protocol import Work
from rayflow.states import State

HOOKS = ("amend", "on_transition", "on_work", "on_report", "on_chunk", "on_log")


class RunObserver:
    def amend(self, *, task_key: str | None, old: State, new: State) -> State:
        return new

    def on_transition(self, *, run_id: str, task_key: str | None, old: State, new: State) -> None:
        return None

    def on_work(self, *, work: Work) -> Work:
        return work

    def on_report(self, *, work: Work, report: Any) -> None:
        return None

    def on_chunk(self, *, task_key: str, work: Work, summary: Any, error: Any, facts: Any = None) -> None:
        return None

    def on_log(self, *, run_id: str, records: list[tuple]) -> None:
        return None


def overridden(observers: Sequence[RunObserver], hook: str) -> tuple[Callable[..., Any], ...]:
    """The bound ``hook`` of each observer that overrides it, in order."""
    default = getattr(RunObserver, hook)
    return tuple(getattr(o, hook) for o in observers if getattr(type(o), hook, default) is not default)


class Callback(RunObserver):
    """An observer from a plain callable called on every transition (``on_transition``'s keywords)."""

    def __init__(self, fn: Callable[..., None]):
        self.fn = fn

    def on_transition(self, *, run_id: str, task_key: str | None, old: State, new: State) -> None:
        self.fn(run_id=run_id, task_key=task_key, old=old, new=new)
