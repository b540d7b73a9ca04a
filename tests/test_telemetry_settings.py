"""The OTEL_* settings rayflow reads in the driver and ships to the actor and workers (no Ray)."""

from __future__ import annotations

import pytest

from rayflow.telemetry import settings_from_env
from rayflow.telemetry.config import ChosenIds
from rayflow.telemetry.tracer import param_attributes


def settings(**env: str):
    return settings_from_env(env)


def test_only_otel_variables_travel():
    s = settings_from_env({"OTEL_SERVICE_NAME": "x", "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "no"})
    assert dict(s.values) == {"OTEL_SERVICE_NAME": "x"}


@pytest.mark.parametrize(
    "env, enabled",
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "otlp,none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
    ],
)
def test_when_tracing_is_on(env, enabled):
    assert settings(**env).enabled is enabled


def test_endpoints_and_protocols():
    http = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318/")
    assert (http.protocol, http.endpoint()) == ("http/protobuf", "http://c:4318/v1/traces")
    grpc = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert (grpc.protocol, grpc.endpoint()) == ("grpc", "http://c:4317")
    explicit = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://t:1/x")
    assert explicit.endpoint() == "http://t:1/x"
    traces_grpc = settings(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    assert traces_grpc.protocol == "grpc"


def test_headers_and_resource():
    s = settings(
        OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer abc,x-team=data",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=prod,team=etl",
    )
    assert s.headers() == {"authorization": "Bearer abc", "x-team": "data"}
    attributes = dict(s.resource().attributes)
    assert attributes["service.name"] == "rayflow"
    assert attributes["deployment.environment"] == "prod" and attributes["team"] == "etl"
    named = settings(OTEL_SERVICE_NAME="etl", OTEL_RESOURCE_ATTRIBUTES="service.name=ignored")
    assert named.resource().attributes["service.name"] == "etl"


def test_chosen_span_ids_are_used_once():
    ids = ChosenIds()
    with ids.span_id(0xABC):
        assert ids.generate_span_id() == 0xABC
    assert ids.generate_span_id() != 0xABC
    assert ids.generate_trace_id() != ids.generate_trace_id()


def test_only_plain_scalar_parameters_and_never_secrets():
    from pydantic import SecretBytes, SecretStr

    attributes = param_attributes(
        {"n": 3, "ratio": 0.5, "name": "x", "flag": True, "rows": [1, 2], "key": SecretStr("k"), "blob": SecretBytes(b"b")}
    )
    assert attributes == {
        "rayflow.param.n": 3,
        "rayflow.param.ratio": 0.5,
        "rayflow.param.name": "x",
        "rayflow.param.flag": True,
        "rayflow.param.key": "***",
        "rayflow.param.blob": "***",
    }
