"""The entry point every executor runs in its worker: one Work, its flat input values.

Returns ``(value, report)``: the value stays with the executor (Ray's object
store); the small report (AttemptResult or ChunkSummary) goes to the
orchestrator.  The value comes first: see runtime/executor.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sized
from typing import Any

from rayflow.core.reducers import Partials, partial_of
from rayflow.engine.protocol import MAX_REPORTED_ERRORS, Work, WriteReport
from rayflow.results import ResultStore
from rayflow.engine.worker.chunk import run_chunk
from rayflow.engine.columns import concat_columns, merge_results, successful_column, successful_values
from rayflow.engine.worker.logs import capture
from rayflow.engine.worker.attempt import run_attempt
from rayflow.engine.worker.pause import approved
from rayflow.states import StateType, error_text


def execute(payload: bytes, work: Work, *values: Any, started: Any = None) -> tuple[Any, Any]:
    """``started(at)``: told when each next iteration of a looping task starts (its timeout is per iteration)."""
    if work.persist is not None:
        return None, write_behind(work, values[0])
    job = work.job
    start, indices, size = (job.start, job.indices, job.size) if job else (None, None, None)
    with capture(work.run_id, work.task_key, work.trace, start, work.log_prints, indices, size) as logs, approved(work.approval):
        logs.approvals = dict(work.approval or ()) if job is not None else None  # per item: rf.pause reads it
        if job is not None:
            value, report = run_chunk(payload, job, work.work_id, list(values), run_id=work.run_id)
            for j, (kind, message, tb) in list(value.errors.items())[:MAX_REPORTED_ERRORS]:
                logs.item[0] = j  # its position in the job: the context names its map index
                logs.add("ERROR", f"item {logs.index_of(j)} failed: {error_text(kind, message)}" + (f"\n{tb}" if tb else ""))
        else:
            inputs = unpack(work.layout, values)
            report, value = run_attempt(payload, work.task_key, work.attempt, *inputs, run_id=work.run_id,
                                        max_loops=work.max_loops, looped=work.looped, started=started)
            if report.error is not None and report.type is StateType.FAILED:
                logs.add("ERROR", f"attempt {work.attempt} failed:\n{report.error.traceback or report.error}")
            if work.report_length and report.type in (StateType.SUCCESS, StateType.CACHED):
                report = dataclasses.replace(report, length=_length(value, work.report_length))
    if work.write_inline and getattr(report, "persist", None) is not None:
        report = _write_now(work, report, value)
    if logs.records:
        report = dataclasses.replace(report, logs=tuple(logs.records))
    if logs.artifacts:
        report = dataclasses.replace(report, artifacts=tuple(logs.artifacts))
    return value, report


def _write_now(work: Work, report: Any, value: Any) -> Any:
    """Where downstream tasks get the very object (the in-process executor), a write behind them
    could store their edits: the value is written before the report, as it is.  A write that fails
    is left to the orchestrator's write-behind (tried again, then reported)."""
    _, error = _store(report.persist, value)
    return report if error is not None else dataclasses.replace(report, persist=None)


def write_behind(work: Work, value: Any) -> WriteReport:
    """Write a task's value (or a chunk's result) where its report said, after the task ended;
    downstream tasks did not wait for it.  Never raises: a failure is the report's error."""
    return WriteReport(work.task_key, *_store(work.persist, value))


def _store(persist: tuple[str, str], value: Any) -> tuple[str | None, str | None]:
    """Write ``value`` to (store, name): (its path, None), or (None, why it was not written)."""
    location, name = persist
    try:
        return ResultStore(location).write(name, value), None
    except Exception as exc:  # noqa: BLE001 - ResultStoreError, or a value no format can store
        return None, error_text(type(exc).__name__, str(exc))


def unpack(layout: tuple[Any, ...], values: tuple[Any, ...] | list[Any]) -> list[Any]:
    """Each upstream's value; a map's value is the list of its successful items' values, or
    for a ``batch=True`` task one pyarrow Array of them (as ``Column.batch`` gives it)."""
    out = []
    for kind, where in layout:
        if kind == "value":
            out.append(values[where])
        elif kind == "map_batch":
            out.append(concat_columns([successful_column([values[i] for i in chunk]) for chunk in where]).batch())
        elif kind.startswith("map_partial:"):  # an rf.reduce folded into the chunks (core.reducers)
            out.append(_parts(kind.partition(":")[2], where, values))
        else:
            items: list[Any] = []
            for chunk in where:
                items.extend(successful_values(merge_results([values[i] for i in chunk])))
            out.append(items)
    return out


def _parts(op: str, where: tuple[tuple[int, ...], ...], values: Any) -> list[Any]:
    """The chunks' parts of reduce ``op``: each first run's own, or made here from a chunk's values
    (one whose items were retried); where one cannot be made, the successful values themselves
    (the reduce's function then runs over them all, and raises what it raises, as unfolded)."""
    parts = Partials()
    for chunk in where:
        results = [values[i] for i in chunk]
        part = results[0].partial if len(results) == 1 else partial_of(op, successful_values(merge_results(results)))
        if part is None:
            return [v for chunk in where for v in successful_values(merge_results([values[i] for i in chunk]))]
        parts.extend(part)
    return parts


def _length(value: Any, how: str) -> int | None:
    try:
        if how == "flat":
            return sum(len(inner) for inner in value)
        return len(value) if isinstance(value, Sized) else None
    except TypeError:
        return None
