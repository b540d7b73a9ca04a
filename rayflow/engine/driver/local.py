"""The in-process runner: ``runner="local"``.

Runs the same Orchestrator as the Ray runtime, with a LocalExecutor, in the
calling thread.  Useful for unit tests and debugging with a plain debugger;
it ignores resource options and does not scale beyond this process.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from rayflow.engine.columns import next_items
from rayflow.engine.driver.local_executor import LocalExecutor
from rayflow.engine.driver.flow_run import FlowRun
from rayflow.engine.orchestrator import Orchestrator
from rayflow.engine.plan import compile_plan
from rayflow.engine.driver.progress import MapProgress


class StreamFeeder:
    """Pulls items of generator inputs when a map asks for them, never more."""

    def __init__(self, streams: dict[int, Any], orchestrator: Any, put: Any):
        self.streams, self.orchestrator, self.put = streams, orchestrator, put

    def request(self, stream_id: int, count: int) -> None:
        column, n, exhausted = next_items(self.streams[stream_id], count)
        handle = self.put(column) if column is not None else None
        self.orchestrator.maps.push_stream(stream_id, handle, n, exhausted)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class LocalRunner:
    def __init__(self, max_workers: int | None = None):
        self.max_workers = max_workers

    def run_flow(self, flow: Any, graph: Any) -> FlowRun:
        plan = compile_plan(graph, flow)
        executor = LocalExecutor(self.max_workers)
        orchestrator = Orchestrator(
            plan, executor, flow.options.run_id or new_run_id(), cpus=os.cpu_count() or 1
        )
        orchestrator.feeder = StreamFeeder(plan.streams, orchestrator, executor.put)
        has_maps = any(spec.kind == "map" for spec in plan.specs)
        progress = MapProgress(flow.options.progress if has_maps else False)
        if progress.enabled:
            orchestrator.listeners += (lambda **_: progress.update(orchestrator.maps.progress()),)
        try:
            summary = orchestrator.run()
            progress.update(orchestrator.maps.progress())
        except KeyboardInterrupt:
            orchestrator.request_cancel()
            orchestrator.step(0)  # marks everything unfinished CANCELLED
            raise
        finally:
            progress.close()
            executor.shutdown()
        return FlowRun(summary, plan.result, executor.fetch, tuple(s.key for s in plan.specs))
