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

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:  # what the names below are, for type checkers; at run time each loads on first use
    from rayflow import cache, notify, schedules, signals, triggers
    from rayflow.core import reducers as reduce
    from rayflow.engine.worker import artifacts
    from rayflow.core.branching import case, merge, set_reference_tasks
    from rayflow.core.flow import Flow, flow
    from rayflow.core.sla import SLA
    from rayflow.core.mapping import flatten, mapped, unmapped
    from rayflow.core.task import Task, task
    from rayflow.engine.driver.flow_run import FlowRun
    from rayflow.engine.worker.logs import get_run_logger
    from rayflow.signals import Fail, Loop, Retry, Skip
    from rayflow.engine.worker.looping import context
    from rayflow.states import ErrorInfo, State, StateType

__version__ = "0.1.0"


def resume(run_id: str, flow: "Flow | None" = None, **params: object) -> "FlowRun":
    """Run a failed, cancelled or crashed run again; tasks whose results it persisted load them.

    See rayflow.runs.resume.  ``flow``: when the run's flow cannot be imported from where it
    was defined; ``params`` override the recorded parameters.
    """
    from rayflow.runs.resume import resume as _resume

    return _resume(run_id, flow, **params)


# Every public name and the module it comes from, imported on first use (PEP 562): ``import
# rayflow`` costs next to nothing, so ``rayflow --help`` starts fast; ``rf.limits`` and the
# limit holders import Ray, and only when used.
_EXCEPTIONS = (
    "ClusterAuthenticationError", "ClusterConnectionError", "CorruptResultError", "DefinitionError",
    "DuplicateRunError", "FlowRunError", "GraphError", "LimitError", "MappingError", "MissingResultError",
    "ParameterError", "RayflowError", "ResultStoreError", "ResumeError", "RunCrashedError", "RunIdError",
    "SLAError", "SerializationError", "TaskOptionError", "TaskRunError", "UnknownRunError", "UnknownTaskError",
    "UnsafePathError", "UnsatisfiableResourcesError",
)
_HOLDERS = ("concurrency", "rate_limit", "rate_limit_async")
_LAZY: dict[str, str] = {
    **{name: "rayflow.exceptions" for name in _EXCEPTIONS},
    **{name: "rayflow.core.branching" for name in ("case", "merge", "set_reference_tasks")},
    **{name: "rayflow.core.flow" for name in ("Flow", "flow")},
    **{name: "rayflow.core.mapping" for name in ("flatten", "mapped", "unmapped")},
    **{name: "rayflow.core.task" for name in ("Task", "task")},
    **{name: "rayflow.signals" for name in ("Fail", "Loop", "Retry", "Skip")},
    **{name: "rayflow.states" for name in ("ErrorInfo", "State", "StateType")},
    **{name: "rayflow.runtime.worker.limit_holders" for name in _HOLDERS},
    "FlowRun": "rayflow.engine.driver.flow_run",
    "SLA": "rayflow.core.sla",
    "get_run_logger": "rayflow.engine.worker.logs",
    "context": "rayflow.engine.worker.looping",  # rf.context(): the running task's run, key, item, loop
    **{name: "rayflow.runs.approval" for name in ("approve", "reject")},  # pause and approve
    "pause": "rayflow.engine.worker.pause", "ApprovalError": "rayflow.exceptions",
}
_SUBMODULES = ("artifacts", "cache", "limits", "notify", "reduce", "schedules", "signals", "triggers")
# rf.limits: rayflow.runtime.limits.api; rf.artifacts: rayflow.engine.worker.artifacts (called in tasks)
_SUBMODULE_PATHS = {
    "limits": "rayflow.runtime.limits.api", "artifacts": "rayflow.engine.worker.artifacts", "reduce": "rayflow.core.reducers",
}


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = _importlib.import_module(_SUBMODULE_PATHS.get(name, f"rayflow.{name}"))
    else:
        raise AttributeError(f"module 'rayflow' has no attribute {name!r}")
    if name != "limits":  # rf.limits stays a lookup: rayflow.limits is not a module of its own
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


__all__ = [
    "ApprovalError",
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
    "Loop",
    "MappingError",
    "MissingResultError",
    "ParameterError",
    "RayflowError",
    "ResultStoreError",
    "ResumeError",
    "Retry",
    "RunCrashedError",
    "RunIdError",
    "SLA",
    "SLAError",
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
    "approve",
    "artifacts",
    "cache",
    "case",
    "concurrency",
    "context",
    "flatten",
    "flow",
    "get_run_logger",
    "limits",
    "mapped",
    "merge",
    "notify",
    "pause",
    "rate_limit",
    "rate_limit_async",
    "reduce",
    "reject",
    "resume",
    "schedules",
    "set_reference_tasks",
    "signals",
    "task",
    "triggers",
    "unmapped",
]
