"""The only layer that imports ray: connecting, the executor, the run actor, the runner."""

from rayflow.runtime.actor import cancel_run, find_run, live_status
from rayflow.runtime.cluster import connect
from rayflow.runtime.runner import RayRunner

__all__ = ["RayRunner", "cancel_run", "connect", "find_run", "live_status"]
