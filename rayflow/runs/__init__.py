"""Runs as both runners assemble them: ``assemble_run``, the composition root of a run (its
Orchestrator built with every collaborator), runs wherever the run's orchestrator runs: in
the FlowRunActor's process for runner="ray", in the driver for runner="local" (``local``,
the in-process runner, and ``resume``, run in the driver).

Above ``telemetry`` and ``store``, below ``runtime``: the Ray runtime's actor
and the in-process runner (``runner="local"``) build a run the same way, so a
local run is recorded in the history and traced like a run on Ray.
"""

from rayflow.runs.assembly import ObservedRun, assemble_run

__all__ = ["ObservedRun", "assemble_run"]
