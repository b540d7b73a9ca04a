"""The composition root of a run: ``assemble_run`` builds the Orchestrator with every
collaborator as a constructor argument (executor, observers: its tracer and history writer
first, tag gate, feeder), the same way for both runners (runs.local and the FlowRunActor of
runtime.actor).  Nothing is attached to an Orchestrator after it is built."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from rayflow.core.graph import shape_of
from rayflow.engine.admission import LimitsClient, TagGate
from rayflow.engine.executor import Executor
from rayflow.engine.observers import RunObserver
from rayflow.engine.orchestrator import Orchestrator
from rayflow.engine.plan import Plan
from rayflow.notify.sender import flush as flush_notifications
from rayflow.paths import check_run_id
from rayflow.runs.approval import HistoryPauseBook
from rayflow.store import HistoryRecorder, RunStore
from rayflow.telemetry import RunTracer, TelemetrySettings

logger = logging.getLogger(__name__)


@dataclass
class ObservedRun:
    """An orchestrator with the observers of its run attached."""

    orchestrator: Orchestrator
    recorder: HistoryRecorder | None = None
    tracer: RunTracer | None = None

    @property
    def trace_id(self) -> str | None:
        return self.tracer.trace_id if self.tracer is not None else None

    def start(self) -> None:
        """Open the flow's span (it has a trace id from here on) before the run's thread starts."""
        if self.tracer is not None:
            self.orchestrator.start()
            if self.recorder is not None:
                self.recorder.note_trace(self.tracer.trace_id, self.tracer.span_id)

    def start_writer(self) -> None:
        """Start the history's writer thread, when ``assemble_run(defer_writer=True)`` left it
        for later (close_history starts it if nobody did)."""
        if self.recorder is not None:
            self.recorder.start_writer()

    def close(self) -> None:
        """The run is over: ``finish``, then ``close_history``; never raises."""
        self.finish()
        self.close_history()

    def finish(self) -> None:
        """The run is over: its slots of limits back, its last states' notifications sent
        (a short, bounded wait: rayflow.notify.sender); never raises."""
        self.orchestrator.gating.release_everything()  # slots of attempts the run did not see end
        try:
            flush_notifications(self.orchestrator.run_id)
        except Exception:  # noqa: BLE001
            logger.warning("rayflow: flushing the notifications of run %s failed", self.orchestrator.run_id, exc_info=True)

    def close_history(self) -> None:
        """The last of the history written, bounded in time; never raises (a history never
        fails a run)."""
        if self.recorder is None:
            return
        try:
            self.recorder.close()
        except Exception:  # noqa: BLE001
            logger.warning("rayflow: closing the history of run %s failed", self.orchestrator.run_id, exc_info=True)


def assemble_run(
    plan: Plan,
    executor: Executor,
    run_id: str,
    *,
    cpus: int,
    telemetry: TelemetrySettings | None = None,
    home: str | None = None,
    limits: LimitsClient | None = None,
    feeder: Any = None,
    observers: tuple[RunObserver, ...] = (),
    defer_writer: bool = False,
) -> ObservedRun:
    """The run's Orchestrator with its tracer (when ``telemetry`` is enabled), its history
    writer (under ``home``), then ``observers``; a TagGate asking ``limits`` when a task of the
    plan has tags (None: tags limit nothing); ``feeder`` for its generator inputs; ``defer_writer``:
    the history's writer thread starts at ``ObservedRun.start_writer`` (off a short run's path)."""
    check_run_id(run_id)  # the last point every run passes, in the driver or in the actor
    tracer = RunTracer(telemetry, run_id, plan) if telemetry is not None and telemetry.enabled else None
    recorder = recorder_for(home, run_id, plan, start=not defer_writer)
    tagged = any(spec.options.tags for spec in plan.specs)
    gate = TagGate(run_id, limits) if limits is not None and tagged else None
    attached = tuple(o for o in (tracer, recorder) if o is not None) + observers
    book = HistoryPauseBook(recorder.store, run_id) if recorder is not None else None  # pauses' decisions
    orchestrator = Orchestrator(
        plan, executor, run_id, cpus=cpus, observers=attached, gate=gate, feeder=feeder, pauses=book
    )
    return ObservedRun(orchestrator, recorder, tracer)


_STORES: dict[str, RunStore] = {}
_STORES_LOCK = threading.Lock()


def recorder_for(home: str | None, run_id: str, plan: Plan, *, start: bool = True) -> HistoryRecorder | None:
    """The run's history writer; a history that cannot be opened is a warning, never a failed run."""
    if home is None:
        return None
    with _STORES_LOCK:
        store = _STORES.get(home)
        if store is None:
            try:
                store = _STORES[home] = RunStore(home, repair=True)  # the schema is created once per process
            except Exception as exc:  # noqa: BLE001
                logger.warning("rayflow: run history disabled, cannot open %s: %s", home, exc)
                return None
    keys = [s.key for s in plan.specs]
    return HistoryRecorder(store, run_id, plan.flow_name, plan.params, keys, run_graph(plan), attempt=plan.attempt, start=start)


def run_graph(plan: Plan) -> dict:
    """What the history keeps of a run's plan: its shape, target, code and driver (for resume)."""
    return shape_of(plan.flow_name, plan.specs, plan.fused) | {
        "target": plan.target, "resumed_from": plan.resumed_from, "code": dict(plan.code), "driver": dict(plan.driver),
        "attempt": plan.attempt, "results": plan.results, "flow_code": plan.flow_code,
    }
