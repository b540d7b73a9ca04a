"""The only layer that imports ray, split by the process each part runs in.

- ``driver/``: the driver process (the one that called ``flow.run``, or ``rayflow run``/``submit``):
  RayRunner, connecting to Ray, auth checks, Ray Jobs, the resource check, handles on run actors
- ``actor/``: the FlowRunActor's process: the actor, RayExecutor, ResourceWaits
- ``limits/``: the limits service: its actor (on the head node) and its client (any process)
- ``worker/``: Ray workers running tasks: the limit holders (rf.concurrency, rf.rate_limit)

What other layers use of it is re-exported here, each name imported on first use (PEP 562):
``rayflow submit`` imports ``runtime.driver.jobs`` (Ray's job client) without the run actor's
modules (the engine, pyarrow), which importing ``RayRunner`` brings.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayflow.runtime.driver.actors import cancel_run, find_run, live_status
    from rayflow.runtime.driver.cluster import connect
    from rayflow.runtime.driver.runner import RayRunner

__all__ = ["RayRunner", "cancel_run", "connect", "find_run", "live_status"]
_HOMES = {
    "RayRunner": "rayflow.runtime.driver.runner", "cancel_run": "rayflow.runtime.driver.actors",
    "connect": "rayflow.runtime.driver.cluster", "find_run": "rayflow.runtime.driver.actors",
    "live_status": "rayflow.runtime.driver.actors",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
