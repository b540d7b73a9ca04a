"""The only layer that imports ray, split by the process each part runs in.

- ``driver/``: the driver process (the one that called ``flow.run``, or ``rayflow run``/``submit``):
  RayRunner, connecting to Ray, auth checks, Ray Jobs, the resource check, handles on run actors
- ``actor/``: the FlowRunActor's process: the actor, RayExecutor, ResourceWaits
- ``limits/``: the limits service: its actor (on the head node) and its client (any process)
- ``worker/``: Ray workers running tasks: the limit holders (rf.concurrency, rf.rate_limit)

What other layers use of it is re-exported here.
"""

from rayflow.runtime.driver.actors import cancel_run, find_run, live_status
from rayflow.runtime.driver.cluster import connect
from rayflow.runtime.driver.runner import RayRunner

__all__ = ["RayRunner", "cancel_run", "connect", "find_run", "live_status"]
