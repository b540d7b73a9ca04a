"""The in-process runner: ``runner="local"``.

Runs the same Orchestrator as the Ray runtime, with a LocalExecutor, in the
calling thread, assembled the same way (``assemble_run``): the run is in the
history under RAYFLOW_HOME and traced when OTEL_* says so.  Useful for unit
tests and debugging with a plain debugger; it ignores resource options and
does not scale beyond this process.  Limits by tag are asked of ``limits``
(given by whoever makes the runner: ``rayflow.runners.local_runner`` gives
the cluster's when Ray is initialised, else this process's), never of a
module that happened to be imported.
"""

from __future__ import annotations

import atexit
import threading
import os
from typing import Any

from rayflow.engine.driver.flow_run import FlowRun
from rayflow.engine.driver.local import StreamFeeder
from rayflow.paths import new_run_id
from rayflow.engine.driver.local_executor import LocalExecutor
from rayflow.engine.driver.progress import MapProgress
from rayflow.engine.limits_state import in_process_limits
from rayflow.engine.observers import Callback
from rayflow.engine.plan import compile_plan
from rayflow.runs.assembly import assemble_run
from rayflow.store import rayflow_home
from rayflow.store.history import refuse_taken_run_id
from rayflow.telemetry import flush_all, settings_from_env

EXIT_FLUSH_SECONDS = 2.0


_LIVE: dict[str, Any] = {}  # run id -> the Orchestrator of a run going in this process
_LIVE_LOCK = threading.Lock()


def cancel_local(run_id: str) -> bool:
    """Cancel a run of the in-process runner going in this process; False if there is none.
    Its tasks' threads cannot be killed: they are abandoned and end when their functions return."""
    with _LIVE_LOCK:
        orchestrator = _LIVE.get(run_id)
    if orchestrator is None:
        return False
    orchestrator.request_cancel()
    return True


class LocalRunner:
    def __init__(self, max_workers: int | None = None, limits: Any = None):
        """``limits``: the LimitsClient tagged tasks take slots of (engine.admission); None:
        this process's limits (engine.limits_state.in_process_limits)."""
        self.max_workers = max_workers
        self.limits = limits if limits is not None else in_process_limits()

    def run_flow(self, flow: Any, graph: Any) -> FlowRun:
        refuse_taken_run_id(flow.options)
        plan = compile_plan(graph, flow)
        executor = LocalExecutor(self.max_workers)
        telemetry = settings_from_env()
        has_maps = any(spec.kind == "map" for spec in plan.specs)
        progress = MapProgress(flow.options.progress if has_maps else False)
        built: list[Any] = []  # the orchestrator, for the progress observer (it reads the maps)
        observers = (Callback(lambda **_: progress.update(built[0].progress())),) if progress.enabled else ()
        observed = assemble_run(
            plan,
            executor,
            flow.options.run_id or new_run_id(),
            cpus=os.cpu_count() or 1,
            telemetry=telemetry if telemetry.enabled else None,
            home=str(rayflow_home().resolve()),
            limits=self.limits,
            feeder=StreamFeeder(plan.streams, executor.put),
            observers=observers,
        )
        orchestrator = observed.orchestrator
        built.append(orchestrator)
        if observed.tracer is not None:
            _flush_at_exit()
        observed.start()
        with _LIVE_LOCK:
            _LIVE[orchestrator.run_id] = orchestrator
        try:
            summary = orchestrator.run()
            progress.update(orchestrator.progress())
        except KeyboardInterrupt:
            orchestrator.request_cancel()
            orchestrator.step(0)  # marks everything unfinished CANCELLED
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.pop(orchestrator.run_id, None)
            progress.close()
            executor.shutdown()
            observed.close()  # the run's slots of limits back, the last of its history written
        flow_run = FlowRun(summary, plan.result, executor.fetch, tuple(s.key for s in plan.specs))
        flow_run.trace_id = observed.trace_id
        return flow_run


_hooked: list[bool] = []


def _flush_at_exit() -> None:
    """Spans are exported in batches: give the last ones a bounded moment when the process exits."""
    if not _hooked:
        _hooked.append(True)
        atexit.register(flush_all, EXIT_FLUSH_SECONDS)
