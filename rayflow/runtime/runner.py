"""RayRunner: ``runner="ray"``, the default.

Compiles the plan in the driver (no Ray calls), joins or starts Ray, hands
the plan to this driver's FlowRunActor and waits for the summary in short
polls so Ctrl-C stays responsive: an interrupt cancels the run's Ray tasks
before it propagates.  Only the values asked for through the FlowRun are
ever fetched to the driver.
"""

from __future__ import annotations

from typing import Any

import ray

from rayflow.engine.flow_run import FlowRun
from rayflow.engine.local import new_run_id
from rayflow.engine.plan import compile_plan
from rayflow.runtime.actor import driver_actor
from rayflow.runtime.cluster import connect

POLL_SECONDS = 0.5
CANCEL_GRACE_SECONDS = 10.0


class RayRunner:
    def run_flow(self, flow: Any, params: dict[str, Any]) -> FlowRun:
        plan = compile_plan(flow.graph, params, flow)
        connect(flow.options.address)
        actor = driver_actor()
        run_id = flow.options.run_id or new_run_id()
        ray.get(actor.start_run.remote(run_id, plan))
        try:
            summary = None
            while summary is None:
                summary = ray.get(actor.wait_run.remote(run_id, POLL_SECONDS))
        except KeyboardInterrupt:
            actor.cancel_run.remote(run_id)
            try:
                ray.get(actor.wait_run.remote(run_id, CANCEL_GRACE_SECONDS), timeout=CANCEL_GRACE_SECONDS + 5)
            finally:
                raise
        actor.release.remote(run_id)
        return FlowRun(summary, plan.result, ray.get, tuple(s.key for s in plan.specs))
