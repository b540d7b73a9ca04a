"""Whether a flow pauses for a person: a task with ``triggers.manual_only``, or one whose code
calls ``rf.pause``.  Such a flow persists its tasks' results unless it says ``persist=False``,
so that an approval made after its driver is gone resumes it without running them again
(runs.approval)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def pauses(nodes: Iterable[Any]) -> bool:
    """True if a task among ``nodes`` (graph nodes) is manual_only or names ``pause`` in its code."""
    for node in nodes:
        task = getattr(node, "task", None)
        if task is None:
            continue
        if getattr(task.options.trigger, "manual", False):
            return True
        code = getattr(getattr(task, "fn", None), "__code__", None)
        if code is not None and "pause" in code.co_names:
            return True
    return False


def persists(options: Any, nodes: Iterable[Any]) -> bool:
    """A flow's persist: its own ``persist=``, else True when it pauses."""
    if options is None:
        return False
    if options.persist or "persist" in options.model_fields_set:
        return bool(options.persist)
    return pauses(nodes)


def runner_name(flow: Any) -> str | None:
    """The run's runner by name, recorded with its driver: an approval that resumes the run
    after its driver is gone uses it again (runs.approval)."""
    runner = flow.options.runner if flow is not None else None
    return runner if isinstance(runner, str) else None
