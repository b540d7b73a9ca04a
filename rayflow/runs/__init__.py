"""Runs as both runners assemble them: an Orchestrator with the run history and traces attached.

Above ``telemetry`` and ``store``, below ``runtime``: the Ray runtime's actor
and the in-process runner (``runner="local"``) build a run the same way, so a
local run is recorded in the history and traced like a run on Ray.
"""

from rayflow.runs.assembly import ObservedRun, assemble_run

__all__ = ["ObservedRun", "assemble_run"]
