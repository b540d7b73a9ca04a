"""The only layer that imports OpenTelemetry: spans for runs, tasks and chunks, exported over OTLP.

Configured by the standard ``OTEL_*`` variables of the *driver*; they travel
with each run (to the orchestrating actor) and each unit of work (to the
workers, on whatever node), so every process exports to the same place.
With no endpoint configured, nothing is set up and nothing is exported.
"""

from rayflow.telemetry.config import TelemetrySettings, settings_from_env
from rayflow.telemetry.tracer import RunTracer, flush_all
from rayflow.telemetry.worker import worker_context

__all__ = ["RunTracer", "TelemetrySettings", "flush_all", "settings_from_env", "worker_context"]
