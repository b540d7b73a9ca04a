"""Traces end to end: flows on real Ray export spans over real OTLP to a receiver on loopback."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from opentelemetry import trace
from otlp_sink import GrpcSink, HttpSink
from pydantic import SecretStr

import rayflow as rf
from rayflow.states import StateType as T

pytestmark = pytest.mark.usefixtures("ray_session")
REPO = pathlib.Path(__file__).resolve().parent.parent
SECRET = "hunter2-do-not-export"


@rf.task(retries=1)
def flaky_once(marker: str) -> str:
    with trace.get_tracer("user").start_as_current_span("user step") as span:
        span.set_attribute("user.marker", "inside the task")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("first attempt fails")
    return "ok"


@rf.task
def always_fails(x: int) -> int:
    raise KeyError("missing")


@rf.task(chunk_size=2)
def square(x: int) -> int:
    if x == 1:
        with trace.get_tracer("user").start_as_current_span("user item"):
            pass
    return x * x


@rf.flow
def observed(marker: str, password: SecretStr, n: int = 4):
    """
    flaky_once (retried)   always_fails   square.map (2 chunks)
    """
    return [flaky_once(marker), always_fails(n), square.map([0, 1, 2, 3])]


@pytest.fixture
def http_sink(monkeypatch):
    sink = HttpSink()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    yield sink
    sink.close()


def by_name(spans: list[dict], name: str) -> list[dict]:
    return sorted((s for s in spans if s["name"] == name), key=lambda s: s["start"])


def complete(trace_id: str, count: int):
    return lambda spans: len([s for s in spans if s["trace_id"] == trace_id]) >= count


def test_span_tree_attributes_events_and_no_secrets(http_sink, tmp_path):
    run = observed.run(marker=str(tmp_path / "marker"), password=SecretStr(SECRET))
    assert run.state.type is T.FAILED and run.trace_id
    # flow, 2 flaky attempts + their user spans, always_fails, square + 2 chunks + a user span
    spans = [s for s in http_sink.wait_for(complete(run.trace_id, 10)) if s["trace_id"] == run.trace_id]

    (flow,) = by_name(spans, "flow observed")
    assert flow["parent_id"] == ""
    assert flow["attributes"]["rayflow.run_id"] == run.run_id
    assert flow["attributes"]["rayflow.state"] == "FAILED"
    assert flow["attributes"]["rayflow.param.n"] == 4
    assert flow["attributes"]["rayflow.param.password"] == "***"
    assert "rayflow.param.marker" in flow["attributes"]
    assert flow["resource"]["service.name"] == "rayflow"
    assert flow["resource"]["deployment.environment"] == "test"

    first, second = by_name(spans, "task flaky_once")
    assert [first["attributes"]["rayflow.attempt"], second["attributes"]["rayflow.attempt"]] == [1, 2]
    assert first["parent_id"] == second["parent_id"] == flow["span_id"]
    assert first["attributes"]["rayflow.state"] == "RETRYING"
    assert [name for name, _ in first["events"]] == ["retry", "exception"]
    exception = dict(first["events"])["exception"]
    assert exception["exception.type"] == "builtins.ValueError"
    assert exception["exception.message"] == "first attempt fails"
    assert first["attributes"]["error.type"] == "builtins.ValueError"
    assert second["attributes"]["rayflow.state"] == "SUCCESS"

    history = [s for s in run.history("flaky_once") if s.type is not T.PENDING and s.started_at]
    assert abs(second["start"] - history[-1].started_at) < 0.002  # the worker's own clock
    assert abs(second["end"] - history[-1].finished_at) < 0.002

    user_steps = by_name(spans, "user step")
    assert {u["parent_id"] for u in user_steps} == {first["span_id"], second["span_id"]}
    assert user_steps[0]["attributes"]["user.marker"] == "inside the task"

    (failed,) = by_name(spans, "task always_fails")
    assert failed["status"] == 2  # STATUS_CODE_ERROR
    assert failed["attributes"]["error.type"] == "builtins.KeyError"

    (mapped,) = by_name(spans, "task square")
    assert mapped["parent_id"] == flow["span_id"] and mapped["attributes"]["rayflow.state"] == "MAPPED"
    chunks = by_name(spans, "chunk square[0:2]") + by_name(spans, "chunk square[2:4]")
    assert len(chunks) == 2 and {c["parent_id"] for c in chunks} == {mapped["span_id"]}
    assert [(c["attributes"]["rayflow.map_index_start"], c["attributes"]["rayflow.map_index_stop"]) for c in chunks] == [(0, 2), (2, 4)]
    assert all(c["attributes"]["rayflow.items.success"] == 2 for c in chunks)
    (user_item,) = by_name(spans, "user item")
    assert user_item["parent_id"] == chunks[0]["span_id"]  # item 1 ran in the first chunk
    assert not any(s["name"].startswith("chunk") and "items" in s["name"] for s in spans)

    assert all(SECRET.encode() not in body for body in http_sink.raw)


def test_one_trace_per_run_and_events_for_skips_and_timeouts(http_sink):
    @rf.task(timeout=0.5)
    def hang() -> None:
        time.sleep(30)

    @rf.task
    def skip_me() -> None:
        raise rf.Skip("not today")

    @rf.flow
    def events():
        return [hang(), skip_me()]

    first, second = events.run(), events.run()
    assert first.trace_id != second.trace_id
    spans = http_sink.wait_for(lambda s: complete(first.trace_id, 3)(s) and complete(second.trace_id, 3)(s))
    for run in (first, second):
        mine = [s for s in spans if s["trace_id"] == run.trace_id]
        assert len(by_name(mine, "flow events")) == 1
        (timed,) = by_name(mine, "task hang")
        assert "timeout" in [name for name, _ in timed["events"]]
        assert timed["attributes"]["rayflow.state"] == "TIMED_OUT"
        (skipped,) = by_name(mine, "task skip_me")
        assert [name for name, _ in skipped["events"]] == ["skipped"]


@rf.flow
def traced_inner(x: int) -> int:
    return square(square(x))


@rf.flow
def traced_middle(x: int) -> list[int]:
    return [traced_inner(x=x), square.map([x, x + 1])]


@rf.flow
def traced_outer(n: int = 2):
    r"""
    flow traced_outer
    └── flow traced_middle            (key traced_middle)
        ├── flow traced_inner         (key traced_middle/traced_inner)
        │   ├── task traced_middle/traced_inner/square
        │   └── task traced_middle/traced_inner/square-2
        └── task traced_middle/square  (a map, with its chunk)
    """
    return square(traced_middle(x=n), wait_for=[])


def test_a_subflow_is_a_flow_span_grouping_its_tasks(http_sink):
    run = traced_outer.run(n=2)
    assert run.state.type is T.FAILED  # square() of a list: the last task fails on purpose
    spans = [s for s in http_sink.wait_for(complete(run.trace_id, 8)) if s["trace_id"] == run.trace_id]
    (root,) = by_name(spans, "flow traced_outer")
    (middle,) = by_name(spans, "flow traced_middle")
    (inner,) = by_name(spans, "flow traced_inner")
    assert middle["parent_id"] == root["span_id"] and inner["parent_id"] == middle["span_id"]
    assert middle["attributes"]["rayflow.task_key"] == "traced_middle"
    assert inner["attributes"]["rayflow.task_key"] == "traced_middle/traced_inner"
    assert inner["attributes"]["rayflow.state"] == middle["attributes"]["rayflow.state"] == "SUCCESS"
    inner_tasks = by_name(spans, "task traced_middle/traced_inner/square") + by_name(
        spans, "task traced_middle/traced_inner/square-2"
    )
    assert len(inner_tasks) == 2 and {t["parent_id"] for t in inner_tasks} == {inner["span_id"]}
    (mapped,) = by_name(spans, "task traced_middle/square")
    assert mapped["parent_id"] == middle["span_id"]
    assert inner["start"] <= min(t["start"] for t in inner_tasks) and inner["end"] >= max(t["end"] for t in inner_tasks)
    (last,) = by_name(spans, "task square")
    assert last["parent_id"] == root["span_id"] and last["attributes"]["rayflow.state"] == "FAILED"
    assert not by_name(spans, "task traced_middle") and not by_name(spans, "task traced_middle/traced_inner")


def test_the_same_over_grpc(monkeypatch, tmp_path):
    sink = GrpcSink()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "rayflow-grpc-test")
    try:
        run = observed.run(marker=str(tmp_path / "marker"), password=SecretStr(SECRET))
        spans = [s for s in sink.wait_for(complete(run.trace_id, 10)) if s["trace_id"] == run.trace_id]
    finally:
        sink.close()
    (flow,) = by_name(spans, "flow observed")
    assert flow["resource"]["service.name"] == "rayflow-grpc-test"
    assert {s["parent_id"] for s in by_name(spans, "task flaky_once")} == {flow["span_id"]}
    assert len(by_name(spans, "user step")) == 2
    assert all(SECRET.encode() not in body for body in sink.raw)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"},
    ],
)
def test_no_endpoint_or_disabled_means_no_tracing(monkeypatch, env):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    run = observed.with_options(name="quiet").run(marker="/nonexistent/x", password=SecretStr("x"))
    assert run.trace_id is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@rf.task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@rf.flow
def naps(seconds: float = 0.2):
    return [nap(seconds), nap(seconds), nap.map([0.01] * 20)]


def test_a_dead_or_hanging_collector_costs_the_flow_nothing(monkeypatch):
    """Wall time with the collector down stays close to the time with tracing off."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    naps()
    start = time.perf_counter()
    naps()
    untraced = time.perf_counter() - start
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # accepts connections, never answers
    try:
        for endpoint in (f"http://127.0.0.1:{_closed_port()}", f"http://127.0.0.1:{listener.getsockname()[1]}"):
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            start = time.perf_counter()
            run = naps.run()
            traced = time.perf_counter() - start
            assert run.trace_id is not None and run.state.is_successful()
            assert traced < untraced + 1.0, (endpoint, traced, untraced)
    finally:
        listener.close()


def test_driver_exits_promptly_with_a_hanging_collector(ray_session):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    script = textwrap.dedent(
        f"""
        import sys, time; sys.path.insert(0, "tests")
        import test_tracing
        t = time.time()
        test_tracing.naps.with_options(address={ray_session!r}).run(seconds=0.05)
        print("ran", round(time.time() - t, 2))
        """
    )
    try:
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{listener.getsockname()[1]}"},
        )
        total = time.perf_counter() - start
    finally:
        listener.close()
    assert out.returncode == 0, out.stderr[-3000:]
    ran = float(out.stdout.split()[-1])
    assert total - ran < 15, (total, ran)  # start-up and a bounded (2 s) flush at exit, not an export timeout


def test_a_resumed_run_names_the_run_it_resumes_on_its_flow_span(http_sink, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    fail = tmp_path / "fail"
    fail.write_text("")

    @rf.task(persist=True)
    def base() -> int:
        return 1

    @rf.task
    def maybe(x: int) -> int:
        if fail.exists():
            raise RuntimeError("not yet")
        return x + 1

    @rf.flow
    def resumed_flow():
        return maybe(base())

    first = resumed_flow.run()
    fail.unlink()
    second = rf.resume(first.run_id, flow=resumed_flow)
    assert second.result() == 2
    spans = http_sink.wait_for(complete(second.trace_id, 3))
    (flow_span,) = by_name([s for s in spans if s["trace_id"] == second.trace_id], "flow resumed_flow")
    assert flow_span["attributes"].get("rayflow.resumed_from") == first.run_id, flow_span["attributes"]
    assert flow_span["links"] == [(first.trace_id, by_name([s for s in spans if s["trace_id"] == first.trace_id], "flow resumed_flow")[0]["span_id"])]
    (loaded,) = by_name([s for s in spans if s["trace_id"] == second.trace_id], "task base")
    assert loaded["attributes"]["rayflow.state"] == "CACHED"
