"""OTEL_* settings, read in the driver, and the providers built from them (cached per setting).

Exporters are built with explicit arguments rather than from the process's
own environment, because the actor and the workers did not inherit the
driver's environment.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

SCHEDULE_DELAY_MS = 200  # spans leave soon after they end; the flow never waits for them
EXPORT_TIMEOUT_S = 5.0  # one export attempt at most; it runs on the processor's thread


@dataclass(frozen=True)
class TelemetrySettings:
    values: tuple[tuple[str, str], ...]  # the OTEL_* variables, sorted

    def get(self, name: str, default: str | None = None) -> str | None:
        return dict(self.values).get(name, default)

    @property
    def enabled(self) -> bool:
        if (self.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
            return False
        exporters = (self.get("OTEL_TRACES_EXPORTER") or "otlp").lower()
        if "none" in [e.strip() for e in exporters.split(",")]:
            return False
        return bool(self.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or self.get("OTEL_EXPORTER_OTLP_ENDPOINT"))

    @property
    def protocol(self) -> str:
        proto = self.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or self.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        return "grpc" if proto.strip().lower() == "grpc" else "http/protobuf"

    def endpoint(self) -> str:
        traces = self.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if traces:
            return traces
        base = (self.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").rstrip("/")
        return base if self.protocol == "grpc" else f"{base}/v1/traces"

    def headers(self) -> dict[str, str]:
        raw = self.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or self.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
        return dict(part.split("=", 1) for part in raw.split(",") if "=" in part)

    def resource(self) -> Resource:
        attributes = dict(
            part.split("=", 1) for part in (self.get("OTEL_RESOURCE_ATTRIBUTES") or "").split(",") if "=" in part
        )
        attributes["service.name"] = self.get("OTEL_SERVICE_NAME") or attributes.get("service.name") or "rayflow"
        return Resource(attributes)


def settings_from_env(environ: Mapping[str, str] | None = None) -> TelemetrySettings:
    environ = os.environ if environ is None else environ
    keys = [k for k in environ if k.startswith("OTEL_")]  # (os.environ's items() decodes every value: 2x slower)
    return TelemetrySettings(tuple(sorted((k, environ[k]) for k in keys)))


class ChosenIds(IdGenerator):
    """Random ids, except the span id chosen beforehand (so workers can parent to a span
    that the orchestrator writes only once the attempt is over)."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._next = threading.local()

    @contextmanager
    def span_id(self, span_id: int) -> Iterator[None]:
        self._next.span_id = span_id
        try:
            yield
        finally:
            self._next.span_id = None

    def generate_span_id(self) -> int:
        chosen = getattr(self._next, "span_id", None)
        return chosen if chosen is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        return self._random.generate_trace_id()


def new_span_id() -> int:
    return random.getrandbits(64) or 1


def _exporter(settings: TelemetrySettings):  # noqa: ANN202 - the SDK's exporter classes
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        endpoint = settings.endpoint()
        return GrpcExporter(
            endpoint=endpoint,
            insecure=not endpoint.startswith("https"),
            headers=settings.headers() or None,
            timeout=EXPORT_TIMEOUT_S,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=settings.endpoint(), headers=settings.headers() or None, timeout=EXPORT_TIMEOUT_S)


_PROCESSORS: dict[TelemetrySettings, BatchSpanProcessor] = {}
_PROVIDERS: dict[TelemetrySettings, tuple[TracerProvider, ChosenIds]] = {}
_LOCK = threading.RLock()


def processor_for(settings: TelemetrySettings) -> BatchSpanProcessor:
    """One batch processor (and exporter) per distinct setting in this process."""
    with _LOCK:
        if settings not in _PROCESSORS:
            _PROCESSORS[settings] = BatchSpanProcessor(
                _exporter(settings),
                schedule_delay_millis=SCHEDULE_DELAY_MS,
                export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
            )
        return _PROCESSORS[settings]


def provider_for(settings: TelemetrySettings) -> tuple[TracerProvider, ChosenIds]:
    """A provider per distinct setting, exporting in the background, with chosen span ids."""
    with _LOCK:
        if settings not in _PROVIDERS:
            ids = ChosenIds()
            provider = TracerProvider(resource=settings.resource(), id_generator=ids, shutdown_on_exit=False)
            provider.add_span_processor(processor_for(settings))
            _PROVIDERS[settings] = (provider, ids)
        return _PROVIDERS[settings]


def flush_providers(timeout: float) -> None:
    """Export what is queued, waiting ``timeout`` seconds at most in all (never hangs)."""
    with _LOCK:
        processors = list(_PROCESSORS.values())
    done = threading.Event()

    def flush() -> None:
        for processor in processors:
            processor.force_flush(timeout_millis=int(timeout * 1000))
        done.set()

    threading.Thread(target=flush, name="rayflow-otel-flush", daemon=True).start()
    done.wait(timeout)
