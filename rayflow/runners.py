"""What a flow's ``runner=`` names, and ``flow.serve``: composed here, above the layers they use.

``core`` finds these through the entry points of pyproject.toml (groups ``rayflow.runners`` and
``rayflow.serve``), so it names no module above it and ``import rayflow`` imports neither Ray
nor these layers; each is imported on first use.

- ``ray`` (the default): runtime.driver.runner.RayRunner.
- ``local``: runs.local.LocalRunner, whose tagged tasks take slots of this process's limits:
  the cluster's when Ray is initialised here (the limits actor, as rf.limits would set them),
  else the in-process ones (engine.limits_state).  Decided when the runner is made, by the
  state of this process, never by which modules happen to be imported.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from rayflow.engine.limits_state import in_process_limits
from rayflow.runs.local import LocalRunner


def ray_runner() -> Any:
    from rayflow.runtime.driver.runner import RayRunner  # imports Ray: only for runs on Ray

    return RayRunner()


def local_runner() -> LocalRunner:
    return LocalRunner(limits=process_limits())


def process_limits() -> Any:
    """The limits of this process: the cluster's when Ray is initialised here, else its own."""
    ray = sys.modules.get("ray")  # Ray not imported: not initialised either, and not imported for this
    if ray is not None and ray.is_initialized():
        from rayflow.runtime.limits.client import RayLimits

        return RayLimits()
    return in_process_limits()


def serve_flow(
    flow: Any, schedule: Any, parameters: Mapping[str, Any] | None, *, max_concurrent: int, grace: float, once: bool
) -> int:
    """``flow.serve``: the flow's runs fired on ``schedule``, as ``rayflow serve`` fires them."""
    from rayflow import serving
    from rayflow.core.loader import flow_target

    entries = serving.served(flow, schedule, parameters, target=flow_target(flow))
    return serving.serve(entries, max_concurrent=max_concurrent, grace=grace, once=once)
