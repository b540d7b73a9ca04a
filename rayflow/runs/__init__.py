"""Runs as both runners assemble them: ``assemble_run``, the composition root of a run (its
Orchestrator built with every collaborator), runs wherever the run's orchestrator runs: in
the FlowRunActor's process for runner="ray", in the driver for runner="local" (``local``,
the in-process runner, and ``resume``, run in the driver).

Above ``telemetry`` and ``store``, below ``runtime``: the Ray runtime's actor
and the in-process runner (``runner="local"``) build a run the same way, so a
local run is recorded in the history and traced like a run on Ray.

The names below are imported on first use (PEP 562): a run's assembly brings the engine,
pyarrow and opentelemetry, which ``rayflow approve`` (``runs.approval``) does not need to
refuse a task that is not paused.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayflow.runs.assembly import ObservedRun, assemble_run

__all__ = ["ObservedRun", "assemble_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rayflow.runs import assembly

        return getattr(assembly, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
