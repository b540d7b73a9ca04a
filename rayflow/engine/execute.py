"""The entry point every executor runs in its worker: one Work, its flat input values.

Returns ``(value, report)``: the value stays with the executor (Ray's object
store); the small report (AttemptResult or ChunkSummary) goes to the
orchestrator.  The value comes first: see runtime/executor.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sized
from typing import Any

from rayflow.engine.chunk_run import run_chunk
from rayflow.engine.columns import merge_results, successful_values
from rayflow.engine.task_run import run_attempt
from rayflow.engine.work import Work
from rayflow.states import StateType


def execute(payload: bytes, work: Work, *values: Any) -> tuple[Any, Any]:
    if work.job is not None:
        return run_chunk(payload, work.job, work.work_id, list(values))
    inputs = unpack(work.layout, values)
    result, value = run_attempt(payload, work.task_key, work.attempt, *inputs)
    if work.report_length and result.type is StateType.SUCCESS:
        result = dataclasses.replace(result, length=_length(value, work.report_length))
    return value, result


def unpack(layout: tuple[Any, ...], values: tuple[Any, ...] | list[Any]) -> list[Any]:
    """Each upstream's value; a map's value is the list of its successful items' values."""
    out = []
    for kind, where in layout:
        if kind == "value":
            out.append(values[where])
        else:
            items: list[Any] = []
            for chunk in where:
                items.extend(successful_values(merge_results([values[i] for i in chunk])))
            out.append(items)
    return out


def _length(value: Any, how: str) -> int | None:
    try:
        if how == "flat":
            return sum(len(inner) for inner in value)
        return len(value) if isinstance(value, Sized) else None
    except TypeError:
        return None
