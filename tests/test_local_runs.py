"""runner="local" runs are assembled like runs on Ray: recorded in the history and traced.

    prep  ->  inner (subflow: inner/inc)  ->  boom (fails)
"""

from __future__ import annotations

import pytest
from otlp_sink import HttpSink

import rayflow as rf
from rayflow.states import StateType as T
from rayflow.store import RunStore


@rf.task
def inc(x: int) -> int:
    return x + 1


@rf.task
def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


@rf.flow
def inner(x: int) -> int:
    return inc(x)


@rf.flow(runner="local")
def local_flow(n: int = 1) -> int:
    return boom(inner(x=inc.with_options(name="prep")(n)))


def test_a_local_run_is_in_the_history(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    run = local_flow.run(n=2)
    assert run.state.type is T.FAILED
    stored = RunStore(tmp_path).run(run.run_id)
    assert stored is not None and stored["flow"] == "local_flow" and stored["state"] == "FAILED"
    assert stored["params"] == {"n": 2}
    assert [n["key"] for n in stored["graph"]["nodes"]] == ["prep", "inner/inc", "inner", "boom"]
    failed = [t for t in stored["transitions"] if t["task_key"] == "boom" and t["state"] == "FAILED"]
    assert failed and failed[0]["error_type"] == "builtins.ValueError"


@pytest.fixture
def http_sink(monkeypatch):
    sink = HttpSink()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    yield sink
    sink.close()


def test_a_local_run_is_traced(http_sink, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    run = local_flow.run(n=1)
    assert run.trace_id
    assert RunStore(tmp_path).run(run.run_id)["trace_id"] == run.trace_id
    spans = [s for s in http_sink.wait_for(lambda got: len([s for s in got if s["trace_id"] == run.trace_id]) >= 5)
             if s["trace_id"] == run.trace_id]
    names = {s["name"] for s in spans}
    assert {"flow local_flow", "flow inner", "task prep", "task inner/inc", "task boom"} <= names
    (root,) = [s for s in spans if s["name"] == "flow local_flow"]
    assert root["attributes"]["rayflow.state"] == "FAILED"
