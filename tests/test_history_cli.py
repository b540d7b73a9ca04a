"""The run history and the CLI commands that read it, on real runs on Ray."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import sys

import pytest
from cli_runner import run_cli, run_cli_in_process
from pydantic import SecretStr

import rayflow as rf
from rayflow.store import RunStore

pytestmark = pytest.mark.usefixtures("ray_session")
REPO = pathlib.Path(__file__).resolve().parent.parent


@rf.task(retries=1)
def fails_twice(x: int) -> int:
    raise ValueError(f"bad {x}")


@rf.task(chunk_size=3)
def square_or_skip(x: int) -> int:
    if x == 4:
        raise rf.Skip("four")
    if x == 5:
        raise RuntimeError("five")
    return x * x


@rf.flow
def recorded(token: SecretStr, n: int = 2):
    """
    fails_twice     square_or_skip.map(range(8))   (3 chunks)
    """
    return [fails_twice(n), square_or_skip.map(range(8))]


@rf.flow(name="other")
def succeeds():
    return square_or_skip.map([0, 1])


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("RAYFLOW_HOME")
    os.environ["RAYFLOW_HOME"] = str(home)
    run = recorded.run(token=SecretStr("s3cret-value"))
    ok = succeeds.run()
    assert ok.state.is_successful()
    yield home, run, ok
    if old is None:
        os.environ.pop("RAYFLOW_HOME")
    else:
        os.environ["RAYFLOW_HOME"] = old


def cli(home: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """A read-only command (runs, show, graph, logs), run in this process."""
    return run_cli_in_process(*args, home=home, RAYFLOW_JAEGER_URL="http://jaeger.example:16686")


def test_the_run_is_recorded_with_transitions_and_chunks(history):
    home, run, _ = history
    stored = RunStore(home).run(run.run_id)
    assert stored["flow"] == "recorded" and stored["state"] == "FAILED"
    assert stored["params"] == {"token": "***", "n": 2}
    states = [t["state"] for t in stored["transitions"] if t["task_key"] == "fails_twice"]
    assert states == ["RUNNING", "RETRYING", "RUNNING", "FAILED"]
    failed = [t for t in stored["transitions"] if t["task_key"] == "fails_twice" and t["state"] == "FAILED"][0]
    assert failed["error_type"] == "builtins.ValueError" and "raise ValueError" in failed["traceback"]
    chunks = [c for c in stored["chunks"] if c["task_key"] == "square_or_skip"]
    assert [(c["start"], c["stop"]) for c in chunks] == [(0, 3), (3, 6), (6, 8)]  # per chunk, never per item
    assert chunks[1]["counts"] == {"SUCCESS": 1, "SKIPPED": 1, "FAILED": 1}
    files = [p for p in home.iterdir() if p.is_file()]  # the database and its WAL
    assert files and not any(b"s3cret-value" in p.read_bytes() for p in files)


def test_rayflow_runs_filters_and_json(history):
    home, run, ok = history
    out = cli(home, "runs")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["run id", "flow", "state"]
    assert {line.split("\t")[0] for line in lines[1:]} == {run.run_id, ok.run_id}
    failed = json.loads(cli(home, "runs", "--state", "failed", "--json").stdout)
    assert [r["run_id"] for r in failed] == [run.run_id]
    other = json.loads(cli(home, "runs", "--flow", "other", "--json").stdout)
    assert [r["flow"] for r in other] == ["other"]
    assert len(json.loads(cli(home, "runs", "--limit", "1", "--json").stdout)) == 1


def test_rayflow_show_tasks_items_errors_and_trace(history):
    home, run, _ = history
    out = cli(home, "show", run.run_id)
    assert out.returncode == 0, out.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in out.stdout.splitlines() if "\t" in line}
    assert rows["fails_twice"][1:3] == ["FAILED", "2"]
    assert "ValueError: bad 2" in rows["fails_twice"][5]
    assert rows["square_or_skip"][1] == "FAILED"
    assert rows["square_or_skip"][4] == "8 done/1 failed/1 skipped"
    assert f"run id: {run.run_id}" in out.stdout and "trace id: -" in out.stdout
    data = json.loads(cli(home, "show", run.run_id, "--json").stdout)
    assert data["run_id"] == run.run_id and data["trace_url"] is None
    missing = cli(home, "show", "nope")
    assert missing.returncode == 1 and "no run 'nope'" in missing.stderr


def test_show_links_the_trace_when_the_run_was_traced(tmp_path, monkeypatch):
    from otlp_sink import HttpSink

    sink = HttpSink()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    try:
        run = recorded.with_options(name="traced").run(token=SecretStr("x"))
    finally:
        sink.close()
    out = cli(tmp_path, "show", run.run_id)
    assert f"trace id: {run.trace_id}" in out.stdout
    assert f"trace: http://jaeger.example:16686/trace/{run.trace_id}" in out.stdout


def test_rayflow_graph_mermaid_dot_and_states(history):
    home, run, _ = history
    missing = cli(home, "graph", "tests/test_history_cli.py:recorded")
    assert missing.returncode == 2 and "needs a value for parameter(s) token" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    out = cli(home, "graph", "tests/test_history_cli.py:recorded", "--param", "token=x")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "flowchart TD"
    assert 'n_square_or_skip[["square_or_skip [map]"]]' in out.stdout
    dot = cli(home, "graph", "--format", "dot", "--run", run.run_id)  # the graph the run stored
    assert dot.stdout.startswith('digraph "recorded"')
    assert 'n_fails_twice [label="fails_twice: FAILED", fillcolor="#f28b82"]' in dot.stdout
    assert "peripheries=2" in dot.stdout  # the map
    bad = cli(home, "graph", "tests/test_history_cli.py:recorded", "-p", "token=x", "--format", "svg")
    assert bad.returncode == 2 and "mermaid or dot" in bad.stderr


def test_graph_edges_show_order_and_case_dependencies(tmp_path):
    from test_failure_semantics import branching

    out = cli(tmp_path, "graph", "tests/test_failure_semantics.py:branching")
    assert "n_case_classify_ -.->|case| n_label" in out.stdout
    assert "n_classify --> n_case_classify_" in out.stdout
    assert branching.graph.by_key["merge"].upstream == ("label", "label-2")


@rf.task(log_prints=True, chunk_size=2)
def chatty(x: int) -> int:
    print(f"item says {x}")
    rf.get_run_logger().warning("careful with %s", x)
    if x == 3:
        raise ValueError("three is bad")
    return x


@rf.task
def quiet_failure() -> None:
    rf.get_run_logger().info("about to fail")
    raise KeyError("missing key")


@rf.flow
def logged():
    return [chatty.map(range(4)), quiet_failure()]


def test_logs_from_workers_are_stored_with_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    run = logged.run()
    records = RunStore(tmp_path).logs(run.run_id)
    by_item = {(r["task_key"], r["map_index"], r["level"], r["message"].splitlines()[0]) for r in records}
    for x in range(4):
        assert ("chatty", x, "INFO", f"item says {x}") in by_item
        assert ("chatty", x, "WARNING", f"careful with {x}") in by_item
    (item_error,) = [r for r in records if r["task_key"] == "chatty" and r["level"] == "ERROR"]
    assert item_error["map_index"] == 3 and "raise ValueError" in item_error["message"]
    (failure,) = [r for r in records if r["task_key"] == "quiet_failure" and r["level"] == "ERROR"]
    assert "Traceback" in failure["message"] and "KeyError: 'missing key'" in failure["message"]
    assert any(r["message"] == "about to fail" for r in records)
    assert all(r["run_id"] == run.run_id for r in records)

    out = cli(tmp_path, "logs", run.run_id, "--task", "chatty")
    assert out.returncode == 0, out.stderr
    assert "chatty[2]: item says 2" in out.stdout and "quiet_failure" not in out.stdout
    followed = cli(tmp_path, "logs", run.run_id, "--follow")
    assert "quiet_failure: about to fail" in followed.stdout


@rf.flow
def logged_one_chunk():
    return chatty.with_options(chunk_size=6, min_success_ratio=0.5).map(range(6))


def test_items_after_a_failed_item_in_the_same_chunk_log_their_own_index_and_keep_their_values(tmp_path, monkeypatch):
    """The chunk's hot loop resumes after item 3 raises: items 4 and 5 still run once, log with
    their own map index, and their values are theirs (not shifted by the failure)."""
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    run = logged_one_chunk.run()
    assert run.result() == [0, 1, 2, None, 4, 5]  # a failed item keeps its place
    records = RunStore(tmp_path).logs(run.run_id)
    said = sorted((r["map_index"], r["message"]) for r in records if r["level"] == "INFO")
    assert said == [(x, f"item says {x}") for x in range(6)]
    (error,) = [r for r in records if r["level"] == "ERROR"]
    assert error["map_index"] == 3



def test_logs_carry_trace_ids_when_traced(tmp_path, monkeypatch):
    from otlp_sink import HttpSink

    sink = HttpSink()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    try:
        run = logged.run()
    finally:
        sink.close()
    records = RunStore(tmp_path).logs(run.run_id)
    assert records and {r["trace_id"] for r in records} == {run.trace_id}
    assert all(len(r["span_id"]) == 16 for r in records)


def test_get_run_logger_outside_a_task_is_an_ordinary_logger():
    logger = rf.get_run_logger()
    logger.info("nothing captured here")  # no run: no error, nothing stored
    assert logger.logger.name == "rayflow.run"


def test_show_reads_a_live_run_from_its_actor_and_watches_it_finish(tmp_path, monkeypatch, ray_session):
    """The run waits on a gate the test opens only once the watcher has shown it live."""
    import threading

    from flows import gated_flow

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    holder = {}
    flow = gated_flow.with_options(run_id="live-show-1")
    thread = threading.Thread(target=lambda: holder.setdefault("run", flow.run(pid_dir=str(tmp_path))))
    thread.start()
    watcher = None
    try:
        deadline = time.time() + 30
        while not (tmp_path / "a.pid").exists() and time.time() < deadline:
            time.sleep(0.05)
        watcher = subprocess.Popen(  # started at once with the --json show: each joins Ray in a process of its own
            [sys.executable, "-m", "rayflow", "show", "live-show-1", "--address", ray_session, "--watch", "--interval", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "RAYFLOW_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"},
        )
        live = run_cli("show", "live-show-1", "--address", ray_session, "--json", home=tmp_path,
                       RAYFLOW_JAEGER_URL="http://jaeger.example:16686")
        assert live.returncode == 0, live.stderr
        data = json.loads(live.stdout)
        assert data["live"] is True and data["state"] == "RUNNING"
        assert data["tasks"]["gate"]["state"] == "RUNNING" and data["tasks"]["sleeper"]["state"] == "PENDING"
        seen = []
        for line in watcher.stdout:  # refreshed from the actor while it runs...
            seen.append(line)
            if "(live)" in line:
                break
        (tmp_path / "a.release").touch()
        rest, err = watcher.communicate(timeout=60)
        out = "".join(seen) + rest
        assert watcher.returncode == 0, err
        assert "(live)" in out
        assert out.rindex("\nstate: SUCCESS") > out.rindex("(live)")  # ...then the history
    finally:
        (tmp_path / "a.release").touch()
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
        thread.join(60)
    assert holder["run"].state.is_successful()


@rf.task
def grow(x: int) -> int:
    return x + 1


@rf.flow
def stage(x: int) -> int:
    return grow(grow(x))


@rf.flow
def staged(regions: list[str], n: int = 1) -> list[int]:
    r"""
    grow_eu  grow_us ...      one per region
    stage (subflow: stage/grow -> stage/grow-2)
    """
    parts = [grow.with_options(name=f"grow_{r}")(n) for r in regions]
    return [stage(x=n), *parts]


def test_graph_traces_with_params_and_draws_what_a_run_executed(tmp_path):
    """The graph depends on the parameters; --run draws the stored graph, subflows as groups."""
    two = cli(tmp_path, "graph", "tests/test_history_cli.py:staged", "--param", 'regions=["eu","us"]')
    assert two.returncode == 0, two.stderr
    assert "n_grow_eu" in two.stdout and "n_grow_us" in two.stdout
    assert 'subgraph s_n_stage["stage (subflow)"]' in two.stdout
    assert 'n_stage_grow["grow"]' in two.stdout and "n_stage_grow --> n_stage_grow_2" in two.stdout
    assert "n_stage_grow_2 -.-> n_stage" not in two.stdout  # members -> their own result: implied
    one = cli(tmp_path, "graph", "tests/test_history_cli.py:staged", "--params-json", '{"regions": ["eu"]}')
    assert "n_grow_eu" in one.stdout and "n_grow_us" not in one.stdout
    bad = cli(tmp_path, "graph", "tests/test_history_cli.py:staged", "--param", "regions=5")
    assert bad.returncode == 2 and "regions" in bad.stderr and "Traceback" not in bad.stderr

    old = os.environ.get("RAYFLOW_HOME")
    os.environ["RAYFLOW_HOME"] = str(tmp_path)
    try:
        run = staged.run(regions=["apac"], n=2)
    finally:
        os.environ["RAYFLOW_HOME"] = old if old is not None else ""
    assert run.result() == [4, 3]
    stored = RunStore(tmp_path).run(run.run_id)["graph"]
    assert [n["key"] for n in stored["nodes"]] == ["grow_apac", "stage/grow", "stage/grow-2", "stage"]
    dot = cli(tmp_path, "graph", "--run", run.run_id, "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    assert "subgraph cluster_n_stage {" in dot.stdout
    assert 'n_grow_apac [label="grow_apac: SUCCESS", fillcolor="#9be39b"]' in dot.stdout
    assert 'n_stage [label="stage [subflow result]: SUCCESS"' in dot.stdout
    shown = cli(tmp_path, "show", run.run_id)
    keys = [line.split("\t")[0] for line in shown.stdout.splitlines()[1:] if "\t" in line]
    assert keys == ["grow_apac", "stage", "stage/grow", "stage/grow-2"]  # the subflow's row heads its group
    rows = {r["task"]: r for r in json.loads(cli(tmp_path, "show", run.run_id, "--json").stdout)["task_rows"]}
    assert rows["stage"]["subflow"] and not rows["grow_apac"]["subflow"]
    assert rows["stage/grow"]["group"] == "stage" and rows["stage/grow"]["depth"] == 1
    unknown = cli(tmp_path, "graph", "--run", "nope")
    assert unknown.returncode == 1 and "no run 'nope'" in unknown.stderr
    neither = cli(tmp_path, "graph")
    assert neither.returncode == 2 and "TARGET" in neither.stderr
