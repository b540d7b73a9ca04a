"""The only layer that imports ray: connecting, the executor, the run actor, the runner."""

from rayflow.runtime.actor import find_run
from rayflow.runtime.cluster import connect
from rayflow.runtime.runner import RayRunner

__all__ = ["RayRunner", "connect", "find_run"]
