"""A run's page over a history made by real runs (in-process runner, a real SQLite file):
its graph (layered layout, node links, collapsible subflows), its Gantt timeline, its logs
(search, level and task filters, live tail), parameters, attempts, and its bad inputs; and
the layout function itself, measured on generated DAGs (crossings against the one-pass
layout it replaced)."""

from __future__ import annotations

import html
import pathlib
import re
import sys
import threading

import pydantic
import pytest
from starlette.testclient import TestClient
from waiting import wait_for

import rayflow as rf
from rayflow.ui import create_app
from rayflow.ui.svg_layout import drawn_crossings, layered, longest_path_layers
from rayflow.ui.svg_timeline import CHART_W, LABEL_W, Axis

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
from run_page_bench import chains, one_pass  # noqa: E402  (the generated DAG and the old layout, shared with the benchmark)

BASE = "http://127.0.0.1:4200"
EVIL = "<script>alert(1)</script>"


@rf.task
def step(*xs: int) -> int:
    return sum(xs) + 1


@rf.task(name="x<script>t()<\\script>", retries=1, retry_delay=0.3)
def evil(note: str, marker: str) -> str:
    rf.get_run_logger().warning(f"log {EVIL} Needle")
    path = pathlib.Path(marker)
    if not path.exists():
        path.write_text("")
        raise RuntimeError(f"error {EVIL}")
    return note


@rf.task
def half(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd item {x}")
    return x


@rf.task
def broken(fail: bool) -> int:
    if fail:
        raise KeyError("the-missing-key")
    return 0


@rf.flow
def inner(n: int = 2) -> int:
    return step(step(n))


@rf.flow(runner="local", progress=False)
def evil_flow(marker: str, note: str = EVIL, token: pydantic.SecretStr = pydantic.SecretStr("hunter2"), fail: bool = False):
    return {"evil": evil(note, marker), "values": half.with_options(min_success_ratio=0.4, chunk_size=5).map(range(5)), "inner": inner(3),
            "broken": broken(fail)}


KEYS, DEPS = chains(500)


@rf.flow(runner="local", progress=False)
def wide():
    futures: dict = {}
    for k in KEYS:
        futures[k] = step(*[futures[d] for d in DEPS[k]])
    return futures["sink"]


@rf.task(tags={"one-slot"})
def nap(i: int) -> int:
    import time

    time.sleep(0.3)
    return i


@rf.flow(runner="local", progress=False)
def naps():
    return [nap(0), nap(1)]


@rf.task
def say(text: str) -> str:
    rf.get_run_logger().info(text)
    return text


@rf.task
def gated(gate: str, _after: str) -> int:
    import time

    for _ in range(1200):  # until the test opens the gate (a file), at most a minute
        if pathlib.Path(gate).exists():
            return 1
        time.sleep(0.05)
    return 0


@rf.flow(runner="local", progress=False)
def slow(gate: str):
    return gated(gate, say("before the gate"))


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    home = tmp_path_factory.mktemp("run-page")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        bad = evil_flow.run(marker=str(home / "m1"), fail=True)
        first = evil_flow.run(marker=str(home / "m2"), fail=True)
        resumed = rf.resume(first.run_id, flow=evil_flow, token=pydantic.SecretStr("hunter2"), fail=False)
        big = wide.run()
        rf.limits.set("one-slot", 1)
        limited = naps.run()
    return {"home": home, "limited": limited, "bad": bad, "resumed": resumed, "big": big, "client": TestClient(create_app(home), base_url=BASE)}


def test_the_layout_crosses_fewer_edges_than_the_one_pass_layout():
    """On parallel chains listed in a shuffled order (as a plan may list them), the sweeps
    untangle what one pass by the parents' mean leaves crossed; every edge points forward."""
    keys, deps = chains(240)
    layout = layered(keys, deps)
    order = layout.order
    assert set(layout.layer) >= set(keys) and all(layout.layer[d] < layout.layer[k] for k in keys for d in deps[k])
    assert all(layout.layer[k] == 1 + max((layout.layer[d] for d in deps[k]), default=-1) for k in keys)
    drawn = [((a, b), [(layout.layer[p], order[p]) for p in [a, *chain, b]]) for (a, b), chain in layout.routes.items()]
    assert len(drawn) == sum(len(d) for d in deps.values())
    before, after = drawn_crossings(one_pass(keys, deps)), drawn_crossings(drawn)
    assert after * 3 < before, (after, before)


def test_the_layout_routes_long_edges_through_each_layer_and_keeps_groups_together():
    """
      a ─ b ─ c ─ d
       \\_________/      a→d spans three layers: two route points, in layers 1 and 2
    """
    keys = ["a", "b", "c", "d", "s/x", "s/y", "t"]
    deps = {"b": ["a"], "c": ["b"], "d": ["c", "a"], "s/x": ["a"], "s/y": ["a"], "t": ["a"]}
    layout = layered(keys, deps, {"s/x": ["s"], "s/y": ["s"]})
    assert [layout.layer[p] for p in layout.routes[("a", "d")]] == [1, 2]
    column = layout.layers[1]
    assert abs(column.index("s/x") - column.index("s/y")) == 1  # the subflow's tasks side by side
    assert longest_path_layers(["x", "y"], {"x": ["y"], "y": ["x"]}).keys() == {"x", "y"}  # a cycle ends, not loops


def test_the_timeline_cuts_a_long_idle_stretch_so_the_work_keeps_its_width():
    axis = Axis([(0, 1), (100, 101)], [(0, 1), (100, 101)])
    assert axis.breaks == [(1, 100)]
    assert axis.x(0) == LABEL_W and abs(axis.x(101) - (LABEL_W + CHART_W)) < 1e-6
    assert axis.x(1) - axis.x(0) > CHART_W / 3  # one second of work is wide, not a sliver of 101
    assert all(not 1 < t < 100 for t in axis.ticks())


def test_the_graph_of_a_500_task_flow_stays_a_page():
    from rayflow.ui.svg import graph_svg

    shape = {"flow": "wide", "nodes": [
        {"key": f"t{i}", "name": f"t{i}", "kind": "task", "upstream": [f"t{i - 1}"] if i % 25 else [], "wait_for": [], "conditions": []}
        for i in range(500)
    ]}
    svg = graph_svg(shape, [{"task": f"t{i}", "state": "SUCCESS"} for i in range(500)])
    assert svg.count('<g class="node"') == 500
    width, height = (int(v) for v in re.search(r'width="(\d+)" height="(\d+)"', svg).groups())
    assert width <= 25 * 244 + 100 and height <= 20 * 60 + 100  # 20 chains of 25, left to right: 25 columns of 20


def test_a_500_task_run_page_draws_every_node_with_its_link(history):
    run = history["big"]
    page = history["client"].get(f"/runs/{run.run_id}")
    assert page.status_code == 200
    assert page.text.count('<g class="node"') == len(KEYS)
    graph = page.text.split('class="graph"')[1].split("</svg>")[0]
    assert len(re.findall(rf'<a href="/runs/{run.run_id}/tasks/step-?\d*">', graph)) == len(KEYS)
    table = page.text.split('id="tasks"')[1].split("</table>")[0]
    assert len(re.findall(rf'<a href="/runs/{run.run_id}/tasks/step-?\d*">', table)) == len(KEYS)
    assert page.text.count('<path class="edge"') == sum(len(d) for d in DEPS.values())
    assert '<script src="/static/graph.js" defer></script>' in page.text and "data-zoom=\"fit\"" in page.text
    assert history["client"].get("/static/graph.js").status_code == 200


def test_the_graph_links_maps_and_tasks_and_collapses_a_subflow(history):
    client, run = history["client"], history["resumed"]
    page = client.get(f"/runs/{run.run_id}").text
    assert re.search(rf'<g class="node" data-key="half-?\d*" data-state="MAPPED" data-kind="map"><a href="/runs/{run.run_id}/maps/half', page)
    assert f'href="/runs/{run.run_id}/tasks/inner/step"' in page
    assert '<g class="subflow" data-key="inner">' in page and 'href="?collapse=inner#graph"' in page
    folded = client.get(f"/runs/{run.run_id}?collapse=inner").text
    assert 'data-key="inner/step"' not in folded.split('id="graph"')[1].split("<h2>Timeline")[0]
    assert 'data-key="inner" data-state="SUCCESS" data-kind="subflow"' in folded and "expand ▸" in folded
    missing = client.get(f"/runs/{run.run_id}?collapse=nothing")
    assert missing.status_code == 400 and "no subflow &#39;nothing&#39;" in missing.text


def test_the_timeline_draws_each_attempt_the_retry_delay_and_the_map_chunks(history):
    run = history["bad"]
    page = history["client"].get(f"/runs/{run.run_id}").text
    timeline = page.split('class="timeline"')[1].split("</svg>")[0]
    key = html.escape("x<script>t()<\\script>")
    assert len(re.findall(rf'class="bar attempt" data-key="{re.escape(key)}"', timeline)) == 2  # a retry: a bar of its own
    assert re.search(rf'class="wait" data-key="{re.escape(key)}".*?retry delay', timeline)
    assert 'class="bar chunk" data-key="half' in timeline and ">0s</text>" in timeline
    assert re.search(r'class="failed-share"[^>]*><title>half[^<]*2 of 5 failed', timeline)  # some items failed: a red band


def test_the_timeline_shows_the_wait_for_a_limits_slot(history):
    """Two tasks tagged with a one-slot limit: the second waits PENDING until the first ends."""
    page = history["client"].get(f"/runs/{history['limited'].run_id}").text
    assert re.search(r'<rect class="wait" data-key="nap-2"[^>]*><title>nap-2 · waiting for limit &#x27;one-slot&#x27;', page)
    assert not re.search(r'<rect class="wait" data-key="nap"', page)  # the first had its slot at once


def test_logs_filter_by_text_level_and_task_in_the_page(history):
    client, run = history["client"], history["bad"]
    logs = lambda text: text.split('id="logs"')[1]  # noqa: E731
    found = logs(client.get(f"/runs/{run.run_id}?q=needle").text)
    assert "Needle" in found and "odd item" not in found
    errors = logs(client.get(f"/runs/{run.run_id}?level=error&task=broken").text)
    assert "the-missing-key" in errors and "Needle" not in errors
    assert "no log records match" in client.get(f"/runs/{run.run_id}?q=nothing-says-this").text
    for bad, reason in (("level=LOUD", "level must be one of"), ("task=nope", "has no task"), ("after=-3", "after must be a whole number"),
                        ("q=" + "x" * 600, "q is longer than"), ("q=a&q=b", "q is given 2 times")):
        answer = client.get(f"/runs/{run.run_id}?{bad}")
        assert answer.status_code == 400 and reason in answer.text, bad


def test_the_log_tail_returns_only_lines_after_the_last_seen_and_polls_while_live(history):
    client, run = history["client"], history["bad"]
    first = client.get(f"/runs/{run.run_id}/logs?after=0")
    rows = re.findall(r"\d\d:\d\d:\d\d \w+ ", first.text)
    assert first.status_code == 200 and len(rows) >= 3 and 'id="log-tail"' not in first.text  # ended: no poller
    page = client.get(f"/runs/{run.run_id}").text
    assert 'id="log-tail"' not in page
    from rayflow.store import RunStore

    all_rows = RunStore(history["home"]).log_page(run.run_id)
    later = client.get(f"/runs/{run.run_id}/logs?after={all_rows[0]['row']}").text
    assert len(re.findall(r"\d\d:\d\d:\d\d \w+ ", later)) == len(all_rows) - 1
    assert client.get(f"/runs/{run.run_id}/logs?level=nope").status_code == 400
    assert client.get("/runs/no-such-run/logs").status_code == 404
    gate = history["home"] / "gate"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(history["home"]))
        done: list = []
        worker = threading.Thread(target=lambda: done.append(slow.run(gate=str(gate))))
        worker.start()
        try:
            store = RunStore(history["home"])

            def started() -> str | None:
                live = [r for r in store.runs(flow="slow") if r["state"] == "RUNNING"]
                return live[0]["run_id"] if live and store.log_page(live[0]["run_id"], text="before the gate") else None

            live_id = wait_for(started, timeout=30, what="the slow run's first log line")
            tail = client.get(f"/runs/{live_id}/logs?after=0&q=gate").text
            seen = store.log_page(live_id, text="before the gate")[-1]["row"]
            assert "before the gate" in tail and f'hx-get="/runs/{live_id}/logs?after={seen}&amp;' in tail and "q=gate" in tail
            assert "before the gate" not in client.get(f"/runs/{live_id}/logs?after={seen}").text  # only newer lines
            assert 'id="log-tail"' in client.get(f"/runs/{live_id}").text
            running = 'class="bar attempt" data-key="gated" data-state="RUNNING"'  # an attempt still going reaches to now
            wait_for(lambda: running in client.get(f"/runs/{live_id}").text, timeout=20, what="the running attempt's bar")
        finally:
            gate.write_text("")
            worker.join(60)
    assert done and done[0].state.type.value == "SUCCESS"


def test_parameters_attempts_links_and_artifacts(history):
    client, run = history["client"], history["resumed"]
    page = client.get(f"/runs/{run.run_id}").text
    params = page.split('id="params"')[1].split("</table>")[0]
    assert "<td>token</td><td><code>&#34;***&#34;</code></td>" in params and "hunter2" not in page
    attempts = page.split('id="attempts"')[1].split("</table>")[0]
    assert attempts.count("<tr><td class=\"num\">") == 2 and "FAILED" in attempts and "SUCCESS" in attempts
    assert f'<p class="crumbs"><a href="/runs">runs</a> › <a href="/flows/evil_flow">evil_flow</a> › {run.run_id}</p>' in page
    assert ">Ray dashboard</a>" in page and f'hx-get="/runs/{run.run_id}/artifacts"' in page
    assert page.index("<h2>Artifacts</h2>") < page.index("<h2>Logs</h2>")


def test_user_text_is_escaped_in_names_params_logs_and_errors(history):
    client, run = history["client"], history["bad"]
    page = client.get(f"/runs/{run.run_id}").text + client.get(f"/runs/{run.run_id}/logs").text
    assert "<script>alert" not in page and "<script>t()" not in page
    assert page.count(html.escape(EVIL)) >= 3  # the parameter, the log line, the error
    assert "x&lt;script&gt;t()&lt;\\script&gt;" in page  # the task's name
    assert client.get(f"/runs/{run.run_id}?task=" + EVIL).status_code == 400
    assert "<script>alert" not in client.get(f"/runs/{run.run_id}?q=" + EVIL).text


def test_an_unknown_run_is_a_404_page(history):
    answer = history["client"].get("/runs/no-such-run")
    assert answer.status_code == 404 and "No run no-such-run" in answer.text


def test_the_log_queries_read_an_index_in_row_order_without_a_sort(history):
    """The page's last lines, a task's, and the tail's: each along an index, never a sort of the run's logs."""
    import sqlite3

    db = sqlite3.connect(history["home"] / "history.db")
    try:
        for query, args in (
            ("SELECT rowid, * FROM logs WHERE run_id = ? AND rowid > ? ORDER BY rowid DESC LIMIT ?", ["r", 0, 500]),
            ("SELECT rowid, * FROM logs WHERE run_id = ? AND rowid > ? AND task_key = ? ORDER BY rowid DESC LIMIT ?", ["r", 0, "t", 500]),
            ("SELECT rowid, * FROM logs WHERE run_id = ? AND rowid > ? AND level NOT IN (?) AND instr(lower(message), ?) > 0 "
             "ORDER BY rowid LIMIT ?", ["r", 9, "DEBUG", "x", 500]),
        ):
            plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + query, args))
            assert "USING INDEX logs_" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        db.close()
