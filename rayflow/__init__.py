"""rayflow: Prefect-style workflows whose flow graph compiles onto Ray.

    import rayflow as rf

    @rf.task
    def double(x: int) -> int:
        return 2 * x

    @rf.flow
    def pipeline(n: int = 3) -> int:
        return double(n)

    pipeline.run(n=4).result()   # 8
"""

from rayflow import cache, schedules, signals, triggers
from rayflow.core.branching import case, merge, set_reference_tasks
from rayflow.core.flow import Flow, flow
from rayflow.core.mapping import flatten, mapped, unmapped
from rayflow.core.task import Task, task
from rayflow.engine.driver.flow_run import FlowRun
from rayflow.engine.worker.logs import get_run_logger
from rayflow.exceptions import (
    ClusterAuthenticationError,
    ClusterConnectionError,
    CorruptResultError,
    DefinitionError,
    DuplicateRunError,
    FlowRunError,
    GraphError,
    LimitError,
    MappingError,
    MissingResultError,
    ParameterError,
    RayflowError,
    ResultStoreError,
    ResumeError,
    RunCrashedError,
    RunIdError,
    SerializationError,
    TaskOptionError,
    TaskRunError,
    UnknownRunError,
    UnknownTaskError,
    UnsafePathError,
    UnsatisfiableResourcesError,
)
from rayflow.signals import Fail, Retry, Skip
from rayflow.states import ErrorInfo, State, StateType

__version__ = "0.1.0"


def resume(run_id: str, flow: Flow | None = None, **params: object) -> FlowRun:
    """Run a failed, cancelled or crashed run again; tasks whose results it persisted load them.

    See rayflow.runs.resume.  ``flow``: when the run's flow cannot be imported from where it
    was defined; ``params`` override the recorded parameters.
    """
    from rayflow.runs.resume import resume as _resume

    return _resume(run_id, flow, **params)


def __getattr__(name: str) -> object:
    """``rf.limits`` (set, get, remove, list), ``rf.concurrency``, ``rf.rate_limit`` and
    ``rf.rate_limit_async``: loaded on first use, so ``import rayflow`` does not import Ray."""
    if name == "limits":
        from rayflow.runtime.limits import api as limits

        return limits
    if name in _HOLDERS:
        from rayflow.runtime.worker import limit_holders

        return getattr(limit_holders, name)
    raise AttributeError(f"module 'rayflow' has no attribute {name!r}")


_HOLDERS = ("concurrency", "rate_limit", "rate_limit_async")


def __dir__() -> list[str]:
    return sorted({*globals(), "limits", *_HOLDERS})


__all__ = [
    "ClusterAuthenticationError",
    "ClusterConnectionError",
    "CorruptResultError",
    "DefinitionError",
    "DuplicateRunError",
    "ErrorInfo",
    "Fail",
    "Flow",
    "FlowRun",
    "FlowRunError",
    "GraphError",
    "LimitError",
    "MappingError",
    "MissingResultError",
    "ParameterError",
    "RayflowError",
    "ResultStoreError",
    "ResumeError",
    "Retry",
    "RunCrashedError",
    "RunIdError",
    "SerializationError",
    "Skip",
    "State",
    "StateType",
    "Task",
    "TaskOptionError",
    "TaskRunError",
    "UnknownRunError",
    "UnknownTaskError",
    "UnsafePathError",
    "UnsatisfiableResourcesError",
    "cache",
    "case",
    "concurrency",
    "flatten",
    "flow",
    "get_run_logger",
    "limits",
    "mapped",
    "merge",
    "rate_limit",
    "rate_limit_async",
    "resume",
    "schedules",
    "set_reference_tasks",
    "signals",
    "task",
    "triggers",
    "unmapped",
]
