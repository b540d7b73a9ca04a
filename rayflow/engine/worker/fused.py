"""A fused chain's chunk in one worker call (core.fusion): the head's chunk, then each stage on
the previous stage's result, in memory.

Each stage is ``execute`` of its own Work, so its logs, artifacts, per-item states and report
are its task's, as when it runs on its own.  The chain stops at a stage whose chunk does not
settle on its first run (``protocol.settles_first_run``): the orchestrator runs the rest of
that chunk unfused once it is final, from the values returned here.  Every stage's values
are returned, as its chunk's would be unfused: a run's result reads them (``FlowRun``), and
a retry of the next stage's items reads its inputs from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from rayflow.engine.protocol import Work, settles_first_run
from rayflow.engine.worker.chunk import KEEP_LIVE, payload_options
from rayflow.engine.worker.execute import execute


def execute_fused(
    payload: bytes, work: Work, *values: Any, around: Callable[[Work], Any] = lambda work: contextlib.nullcontext()
) -> tuple[list[Any], list[Any]]:
    """Run ``work``'s chunk and its fused stages; values and reports per stage (head first; a
    stage that did not run: None, None).  ``values`` as ``protocol.stage_arguments`` lays them;
    ``around(work)``: a context each stage runs in (the runtime's trace context of its span)."""
    kept = KEEP_LIVE.set(True)  # each stage's values go on to the next as they were returned
    try:
        out, reports = _stages(payload, work, values, around)
    finally:
        KEEP_LIVE.reset(kept)
    for value in out:
        if value is not None:
            value.live = None  # what is returned holds the values once, pickled
    missing = len(work.fused) + 1 - len(out)
    return out + [None] * missing, reports + [None] * missing


def _stages(payload: bytes, work: Work, values: tuple[Any, ...], around: Callable[[Work], Any]) -> tuple[list[Any], list[Any]]:
    own = sum(stage.inputs for stage in work.fused)
    position = len(values) - own
    with around(work):
        value, report = execute(payload, work, *values[:position])
    out, reports = [value], [report]
    retries = payload_options(payload)["retries"]
    for stage in work.fused:
        stage_payload, stage_values = values[position], values[position + 1 : position + stage.inputs]
        position += stage.inputs
        if report is None or not settles_first_run(report, retries):
            break
        work = stage.work
        if work.job.size < 0:  # after rf.flatten: as many items as the previous chunk's values hold (or items)
            piece = work.job.sources[0][0]
            size = report.flat_count if piece.kind == "flatten_chunk" else report.size
            if not size:
                break  # nothing to map over: the next map cuts no chunk here
            piece = dataclasses.replace(piece, hi=size)
            work = dataclasses.replace(work, job=dataclasses.replace(work.job, size=size, sources=((piece,),)))
        reports[-1] = dataclasses.replace(report, fed=True)
        with around(work):
            value, report = execute(stage_payload, work, *stage_values, out[-1])
        report = dataclasses.replace(report, behind=reports[-1].map_key)
        retries = payload_options(stage_payload)["retries"]
        out.append(value)
        reports.append(report)
    return out, reports
