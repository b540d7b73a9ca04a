"""Inside a worker: export the user's own spans, nested under the task's (or chunk's) span.

The first work that carries telemetry settings installs a tracer provider
for the process whose processor follows the settings of the work at hand
(the OpenTelemetry API allows one global provider per process).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from rayflow.telemetry.config import TelemetrySettings, processor_for

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_router: _Router | None = None


class _Router(SpanProcessor):
    """Hands each span to the batch processor of the settings in force."""

    def __init__(self) -> None:
        self.current: Any = None

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.current is not None:
            self.current.on_start(span, parent_context=parent_context)

    def on_end(self, span: Any) -> None:
        if self.current is not None:
            self.current.on_end(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True if self.current is None else self.current.force_flush(timeout_millis)


def _install(settings: TelemetrySettings) -> None:
    global _router
    with _lock:
        if _router is None:
            _router = _Router()
            provider = TracerProvider(resource=settings.resource(), shutdown_on_exit=False)
            provider.add_span_processor(_router)
            trace.set_tracer_provider(provider)
        _router.current = processor_for(settings)


@contextmanager
def worker_context(envelope: tuple[str, tuple[tuple[str, str], ...]] | None) -> Iterator[None]:
    if not envelope:
        yield
        return
    traceparent, values = envelope
    settings = TelemetrySettings(values)
    if settings.enabled:
        _install(settings)
    token = context.attach(_PROPAGATOR.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        context.detach(token)
