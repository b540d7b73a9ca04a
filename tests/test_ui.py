"""The web UI's routes (Starlette's test client) over a history made by real runs.

The history holds a success, a failure with a traceback, a retried task, a
map with failed items, a subflow, a secret parameter and a scheduled run,
all from the in-process runner (the pages read only the SQLite history).
"""

from __future__ import annotations

import html
import json
import re

import pydantic
import pytest
from cli_runner import run_cli_in_process
from ui_http import csrf_token
from waiting import wait_for
from starlette.testclient import TestClient

import rayflow as rf
from rayflow.store import RunStore
from rayflow.store.schedules import ScheduleStore
from rayflow.ui import create_app

BASE = "http://127.0.0.1:4200"  # a name the UI answers (its host check refuses others)


@rf.task(retries=1)
def flaky(path: str) -> int:
    import pathlib

    marker = pathlib.Path(path)
    if not marker.exists():
        marker.write_text("")
        raise RuntimeError("first attempt fails")
    return 1


@rf.task
def half(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd item {x}")
    return x


@rf.task
def broken() -> int:
    raise KeyError("the-missing-key")


@rf.flow
def inner(n: int = 2) -> int:
    return half(n)


@rf.flow(runner="local")
def mixed(path: str, token: pydantic.SecretStr = pydantic.SecretStr("hunter2"), fail: bool = False):
    values = half.with_options(min_success_ratio=0.5).map(range(6))
    out = {"flaky": flaky(path), "values": values, "inner": inner(4)}
    if fail:
        out["broken"] = broken()
    return out


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        ok = mixed.run(path=str(home / "flaky-ok"))
        failed = mixed.run(path=str(home / "flaky-failed"), fail=True)
        scheduled = mixed.with_options(run_id="scheduled-1").run(path=str(home / "flaky-s"))
    import time

    old = time.time() - 10 * 86400  # a run from ten days ago, for the time filter
    RunStore(home).write([("old-run", "mixed", "{}", "SUCCESS", "", old, old + 1, "ab" * 16, '["a"]', 1)], [], [])
    schedules = ScheduleStore(RunStore(home))
    schedules.register("mixed/abc", "mixed", "tests/test_ui.py:mixed", {"kind": "interval", "every": 60.0, "anchor": "2020-01-01T00:00:00+00:00"}, 1.0)
    schedules.claim("mixed/abc", 1_800_000_000.0, None, "claimed")
    assert schedules.settle("mixed/abc", 1_800_000_000.0, "started", None, "scheduled-1")
    return {"home": home, "ok": ok, "failed": failed, "scheduled": scheduled, "client": TestClient(create_app(home), base_url=BASE)}


def test_the_runs_page_lists_runs_with_states_filters_and_the_scheduled_marker(history):
    client = history["client"]
    page = client.get("/runs")
    assert page.status_code == 200
    for run in (history["ok"], history["failed"], history["scheduled"]):
        assert f'href="/runs/{run.run_id}"' in page.text
    assert '<span class="badge failed">FAILED' in page.text and '<span class="badge ok">SUCCESS' in page.text
    assert page.text.count("scheduled 20") == 1  # the scheduled run, and only it
    failed_only = client.get("/runs?state=FAILED")
    assert history["failed"].run_id in failed_only.text and history["ok"].run_id not in failed_only.text
    assert 'option value="FAILED" selected' in failed_only.text  # the filter is kept in the page and its URL
    assert "no runs match" in client.get("/runs?flow=nothing").text
    assert client.get("/runs?page=x").status_code == 400  # said, not replaced by page 1
    assert "old-run" in page.text and 'href="http://localhost:16686/trace/' + "ab" * 16 + '"' in page.text
    recent = client.get("/runs?since=7d")
    assert "old-run" not in recent.text and history["ok"].run_id in recent.text
    assert 'option value="7d" selected' in recent.text  # the filter, in the page as in its URL
    assert {r["run_id"] for r in client.get("/api/runs?since=24h").json()} == {history[k].run_id for k in ("ok", "failed", "scheduled")}


def test_a_run_page_shows_tasks_errors_tracebacks_maps_subflows_and_hides_secrets(history):
    client = history["client"]
    failed = history["failed"]
    page = client.get(f"/runs/{failed.run_id}")
    assert page.status_code == 200
    text = page.text
    assert "hunter2" not in text and "***" in text  # the secret parameter
    assert "KeyError" in text and "the-missing-key" in text and "<summary>traceback</summary>" in text
    assert "6 done/3 failed/0 skipped" in text
    assert re.search(r'class="depth-1"><a href="[^"]+/tasks/inner/half">inner/half', text)  # the subflow's task, grouped under it
    assert re.search(r"flaky</a></td>\s*<td><span class=\"badge ok\">SUCCESS</span></td>\s*<td class=\"num\">2</td>", text)  # retried once
    assert "odd item 1" in text  # a log record of a failed item
    assert ">Ray dashboard</a>" in text and ">duration</th>" in text
    errors_only = client.get(f"/runs/{failed.run_id}?level=ERROR&task=broken")
    assert "the-missing-key" in errors_only.text and "odd item 1" not in errors_only.text.split('id="logs"')[1]
    missing = client.get("/runs/no-such-run")
    assert missing.status_code == 404 and "No run no-such-run" in missing.text


def test_the_json_api_gives_what_the_cli_gives(history):
    client = history["client"]
    runs = client.get("/api/runs").json()
    assert {r["run_id"] for r in runs} == {history[k].run_id for k in ("ok", "failed", "scheduled")} | {"old-run"}
    cli = json.loads(run_cli_in_process("runs", "--json", home=history["home"]).stdout)
    assert {r["run_id"]: r["state"] for r in cli} == {r["run_id"]: r["state"] for r in runs}
    one = client.get(f"/api/runs/{history['failed'].run_id}").json()
    shown = json.loads(run_cli_in_process("show", history["failed"].run_id, "--json", home=history["home"]).stdout)
    assert one["task_rows"] == shown["task_rows"] and one["state"] == shown["state"] == "FAILED"
    assert client.get("/api/runs/nope").status_code == 404


def test_the_api_pages_a_maps_item_rows_as_the_engine_recorded_them(history):
    client = history["client"]
    run_id = history["failed"].run_id
    page = client.get(f"/api/runs/{run_id}/items", params={"task": "half", "limit": 2}).json()
    assert [(r["item"], r["state"], r["attempts"]) for r in page] == [(1, "FAILED", 1), (3, "FAILED", 1)]
    assert "odd item 1" in page[0]["message"] and "raise ValueError" in page[0]["traceback"]
    rest = client.get(f"/api/runs/{run_id}/items", params={"task": "half", "after": 3, "state": "failed"}).json()
    assert [r["item"] for r in rest] == [5]
    assert client.get(f"/api/runs/{run_id}/items").status_code == 400  # no task: said
    assert client.get(f"/api/runs/{run_id}/items", params={"task": "half", "limit": "x"}).status_code == 400
    assert client.get("/api/runs/nope/items", params={"task": "half"}).status_code == 404
    text = client.get(f"/runs/{run_id}").text  # the run's page lists the same rows
    section = text.split('/maps/half">half</a> that did not succeed', 1)[1].split("</table>", 1)[0]
    assert re.findall(
        r"<td class=\"num\"><a href=\"[^\"]+/maps/half/items/\d+\">(\d+)</a></td>\s*<td><span class=\"badge failed\">FAILED</span></td>", section
    ) == ["1", "3", "5"]
    assert "odd item 3" in section


def test_the_flows_page_and_the_vendored_htmx(history):
    client = history["client"]
    page = client.get("/flows")
    assert page.status_code == 200 and 'href="/runs?flow=mixed"' in page.text and "mixed/abc" in page.text
    script = client.get("/static/htmx.min.js")
    assert script.status_code == 200 and "htmx" in script.text[:2000]
    assert client.get("/static/htmx.LICENSE").status_code == 200


def test_rayflow_ui_refuses_a_port_in_use_in_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli_in_process("ui", "--port", str(port), home=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in out.stderr


def test_a_run_page_draws_the_graph_and_a_timeline_where_retries_stay_separate(history):
    text = history["client"].get(f"/runs/{history['failed'].run_id}").text
    nodes = dict(re.findall(r'<g class="node" data-key="([^"]+)" data-state="([^"]+)"', text))
    assert nodes["broken"] == "FAILED" and nodes["flaky"] == "SUCCESS" and nodes["half"] == "MAPPED"
    assert nodes["inner"] == "SUCCESS" and nodes["inner/half"] == "SUCCESS"
    assert '<g class="subflow" data-key="inner">' in text
    assert re.search(r'data-key="half"[^>]*>.*?6/6 · 3 failed', text)  # the map as one node, with its counts
    bars = re.findall(r'<rect class="bar (?:attempt|chunk)" data-key="([^"]+)" data-state="([^"]+)"', text)
    assert [s for k, s in bars if k == "flaky"] == ["RETRYING", "SUCCESS"]  # two attempts, two bars
    assert len([k for k, _ in bars if k == "half"]) >= 1  # the map's chunks


@rf.task
def held_open(path: str) -> str:
    import pathlib
    import time

    deadline = time.time() + 30
    while not pathlib.Path(path).exists() and time.time() < deadline:
        time.sleep(0.05)
    return "released"


@rf.task(persist=True)
def maybe(path: str) -> str:
    import pathlib

    if pathlib.Path(path).exists():
        raise RuntimeError("not this time")
    return "fine"


@rf.flow(runner="local")
def waiting(path: str):
    return held_open(path)


@rf.flow(runner="local")
def retryable(path: str):
    return maybe(path)



def test_actions_only_with_serve_ui_run_now_cancel_and_resume(tmp_path, monkeypatch):
    from rayflow.ui.actions import ServeActions

    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    store = RunStore(tmp_path)
    read_only = TestClient(create_app(tmp_path), base_url=BASE)
    assert read_only.post("/flows/waiting/run", data={"path": "x"}).status_code == 403
    assert "run now" not in read_only.get("/flows").text
    client = TestClient(create_app(tmp_path, ServeActions([waiting, retryable])), base_url=BASE, follow_redirects=False)
    flows = client.get("/flows").text
    assert 'data-flow="waiting"' in flows
    token = {"csrf_token": csrf_token(flows)}  # the page's, with its cookie (kept by the client)

    bad = client.post("/flows/waiting/run", data={**token})  # the required parameter is missing: nothing runs
    assert bad.status_code == 400 and "path: missing required parameter" in bad.text and store.runs() == []
    assert client.post("/flows/nothing/run", data={**token}).status_code == 400

    gate = tmp_path / "gate"
    started = client.post("/flows/waiting/run", data={"path": str(gate), **token})
    assert started.status_code == 303
    run_id = started.headers["location"].rsplit("/", 1)[1]
    wait_for(lambda: (store.run(run_id) or {}).get("state") == "RUNNING")
    assert 'id="cancel"' in client.get(f"/runs/{run_id}").text
    assert client.post(f"/runs/{run_id}/cancel", data=token).status_code == 303
    wait_for(lambda: store.run(run_id)["state"] == "CANCELLED")
    gate.write_text("")

    flag = tmp_path / "fail"
    flag.write_text("")
    failed = retryable.run(path=str(flag))
    assert failed.state.type.value == "FAILED" and 'id="resume"' in client.get(f"/runs/{failed.run_id}").text
    flag.unlink()
    assert client.post(f"/runs/{failed.run_id}/resume", data=token).status_code == 303
    wait_for(lambda: store.run(failed.run_id)["state"] == "SUCCESS")
    assert store.run(failed.run_id)["attempt"] == 2
    again = client.post(f"/runs/{failed.run_id}/resume", data=token)  # it succeeded now: refused, in words
    assert again.status_code == 409 and "nothing to resume" in again.text


def test_serve_ui_refuses_a_port_in_use_before_serving(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli_in_process("serve", "tests/flows.py:two_branches", "--interval", "60", "--ui", "--ui-port", str(port), home=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in out.stderr, out.stderr


def test_bad_query_values_are_400_with_the_reason_and_never_a_traceback(history, caplog):
    """`/api/runs?page=99999999999999999999` was a 500 with a traceback in the log; other bad
    values were silently replaced (a bad page read page 1, a bad level showed every level)."""
    client = TestClient(create_app(history["home"]), base_url=BASE, raise_server_exceptions=False)
    failed = history["failed"].run_id
    cases = {
        "/api/runs?page=99999999999999999999": "page must be a whole number from 1 to",
        "/api/runs?page=0": "page must be a whole number",
        "/runs?page=-1": "page must be a whole number",
        "/runs?page=x": "page must be a whole number",
        "/runs?page=1.5": "page must be a whole number",
        "/api/runs?state=BOGUS": "state must be one of SUCCESS",
        "/runs?since=2y": "since must be one of 1h, 24h, 7d, 30d",
        "/api/runs?page=1&page=2": "page is given 2 times",
        f"/runs/{failed}?level=LOUD": "level must be one of DEBUG",
        f"/runs/{failed}?task=no-such-task": "it has no task 'no-such-task'",
    }
    with caplog.at_level("WARNING"):
        answers = {url: client.get(url) for url in cases}
    assert {url: a.status_code for url, a in answers.items()} == {url: 400 for url in cases}
    for url, reason in cases.items():
        assert reason in html.unescape(answers[url].text), (url, answers[url].text[-500:])
    assert answers["/api/runs?state=BOGUS"].json() == {"error": "state must be one of SUCCESS, FAILED, CRASHED, CANCELLED, RUNNING, PENDING; got 'BOGUS'"}
    assert [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
    # Good values, the empty ones the filter forms send among them, still answer.
    for url in ("/runs?flow=&state=&since=&page=1", "/api/runs?state=failed", f"/runs/{failed}?task=&level=", f"/runs/{failed}?task=broken&level=error"):
        assert client.get(url).status_code == 200, url


def test_a_page_of_runs_reads_only_its_rows(tmp_path, monkeypatch):
    """Page N read N x 50 rows and kept the last 50: the history is read for the page asked only."""
    from rayflow.ui.queries import PAGE_SIZE

    store = RunStore(tmp_path)
    store.write([(f"r{i:03d}", "many", "{}", "SUCCESS", "", 1000.0 + i, 1001.0 + i, None, "[]", 1) for i in range(130)], [], [])
    read: list[str] = []  # every run row the UI's requests read from the history
    row = RunStore._run_row
    monkeypatch.setattr(RunStore, "_run_row", staticmethod(lambda r: read.append(r["run_id"]) or row(r)))
    client = TestClient(create_app(tmp_path), base_url=BASE)
    third = client.get("/api/runs?page=3").json()
    assert [r["run_id"] for r in third] == [f"r{i:03d}" for i in range(29, -1, -1)]  # newest first: the last 30
    assert len(read) <= PAGE_SIZE + 1, len(read)
    read.clear()
    second = client.get("/runs?page=2").text
    assert second.count('<a href="/runs/r') == PAGE_SIZE and "r079" in second and "r080" not in second
    assert ">older</a>" in second and ">newer</a>" in second
    assert len(read) <= PAGE_SIZE + 1, len(read)


def _serve_ui(home, port: int, *args: str, **env: str):
    """`rayflow serve ARGS --ui --ui-port PORT` as a user starts it."""
    import os
    import subprocess
    import sys

    from cli_runner import REPO

    return subprocess.Popen(
        [sys.executable, "-m", "rayflow", "serve", *args, "--ui", "--ui-port", str(port)], cwd=REPO, text=True,
        env={**os.environ, "RAYFLOW_HOME": str(home), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _page(http, path: str):
    import httpx

    try:
        return http.get(path)
    except httpx.TransportError:
        return None


def _run_now(http, flow: str, **values: str):
    """The run-now form of the Flows page, posted as the browser would."""
    flows = http.get("/flows").text
    token = {"csrf_token": csrf_token(flows)} if "csrf_token" in flows else {}
    return http.post(f"/flows/{flow}/run", data={**values, **token}, follow_redirects=False)


@pytest.mark.timeout(180)
def test_serve_ui_answers_actions_starting_until_it_has_joined_ray(tmp_path):
    """The UI is up while `rayflow serve` joins Ray (here a port that never answers, so the
    join takes its full timeout): a run now then called `ray.init` from a second thread and
    answered 303 with a run id that never existed.  Until the join, actions are 503 "starting"."""
    import socket

    import httpx
    from ui_http import free_port

    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never says a word
    port = free_port()
    serve = _serve_ui(
        tmp_path, port, "tests/ui_flows.py:shouted", "--interval", "3600", "--address", f"127.0.0.1:{silent.getsockname()[1]}",
        RAYFLOW_CONNECT_TIMEOUT="40",
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            wait_for(lambda: _page(http, "/flows"), timeout=60, what="the UI to answer")
            asked = _run_now(http, "shouted", word="early")
            assert asked.status_code == 503 and "starting" in asked.text, (asked.status_code, asked.text[:300])
            assert asked.headers.get("retry-after")
            assert 'id="starting"' in http.get("/flows").text  # the Flows page says so
            assert RunStore(tmp_path).runs() == []
            assert serve.poll() is None  # still joining
    finally:
        serve.terminate()
        serve.communicate(timeout=60)
        silent.close()


@pytest.mark.timeout(300)
def test_serve_ui_run_now_is_in_the_history_at_once_and_a_failed_start_is_logged_and_shown(ray_session, tmp_path):
    """On Ray: the run id a run now answers is in the history before the answer (its page is
    never a 404); a run whose thread fails before the run starts (its flow body raises while
    traced) is logged by the server and recorded FAILED with the error, shown on its page;
    SIGTERM then stops the server cleanly.  The UI has a token here: a script sends it as Bearer."""
    import signal

    import httpx
    from ui_http import free_port

    config = tmp_path / "flows.toml"
    config.write_text(
        "".join(f'[[flow]]\ntarget = "tests/ui_flows.py:{name}"\ninterval = 3600\n\n' for name in ("shouted", "picky"))
    )
    port = free_port()
    token = "serve-ui-t0ken-4a7c9e2b1d"  # with a token: the UI of serve --ui asks for it as rayflow ui does
    serve = _serve_ui(tmp_path / "home", port, "--config", str(config), "--address", ray_session, RAYFLOW_UI_TOKEN=token)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as anonymous:
            wait_for(lambda: _page(anonymous, "/flows"), timeout=120, what="the UI to answer")
            assert anonymous.get("/flows").status_code == 401 and anonymous.get("/api/runs").status_code == 401
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}) as http:
            wait_for(lambda: (_page(http, "/flows") or httpx.Response(0)).status_code == 200 and 'id="starting"' not in http.get("/flows").text,
                     timeout=120, what="the server to join Ray")
            started = _run_now(http, "shouted", word="now")
            assert started.status_code == 303, started.text[:300]
            run_id = started.headers["location"].rsplit("/", 1)[1]
            assert http.get(f"/api/runs/{run_id}").status_code == 200  # at once, not eventually
            assert http.get(f"/runs/{run_id}").status_code == 200
            wait_for(lambda: http.get(f"/api/runs/{run_id}").json()["state"] == "SUCCESS", timeout=120, what="the run to succeed")

            broken = _run_now(http, "picky", n="13")
            assert broken.status_code == 303, broken.text[:300]
            bad_id = broken.headers["location"].rsplit("/", 1)[1]
            assert http.get(f"/api/runs/{bad_id}").status_code == 200
            wait_for(lambda: http.get(f"/api/runs/{bad_id}").json()["state"] == "FAILED", timeout=60, what="the run to be recorded FAILED")
            assert "thirteen is not welcome here" in http.get(f"/api/runs/{bad_id}").json()["message"]
            assert "thirteen is not welcome here" in http.get(f"/runs/{bad_id}").text
    finally:
        serve.send_signal(signal.SIGTERM)
        out, err = serve.communicate(timeout=90)
    assert serve.returncode == 0, err[-3000:]
    assert token not in out + err
    assert f"run {bad_id}: run now failed" in err and "thirteen is not welcome here" in err, err[-3000:]
    assert "Fatal Python error" not in err and "Aborted" not in err


@pytest.mark.timeout(180)
def test_serve_ui_cancels_a_run_now_at_once_while_it_is_still_starting(tmp_path):
    """The run id a run now answers can be cancelled at once: the first run now of a server
    took long enough to reach its runner that a cancel right after it answered 409 "not going
    in this server", and the run then went on to SUCCESS."""
    import signal

    import httpx
    from ui_http import free_port

    port = free_port()
    serve = _serve_ui(tmp_path, port, "tests/ui_flows.py:napping", "--interval", "3600")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            wait_for(lambda: (_page(http, "/flows") or httpx.Response(0)).status_code == 200
                     and 'id="starting"' not in http.get("/flows").text, timeout=60, what="the server to start")
            started = _run_now(http, "napping", seconds="20")
            assert started.status_code == 303, started.text[:300]
            run_id = started.headers["location"].rsplit("/", 1)[1]
            page = http.get(f"/runs/{run_id}").text
            cancelled = http.post(f"/runs/{run_id}/cancel", data={"csrf_token": csrf_token(page)}, follow_redirects=False)
            assert cancelled.status_code == 303, cancelled.text[:500]
            wait_for(lambda: http.get(f"/api/runs/{run_id}").json()["state"] == "CANCELLED", timeout=60,
                     what="the run to be recorded CANCELLED")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=90)
