"""The dashboard (``/``) and a flow's page (``/flows/{name}``) over a history made by real runs
(the in-process runner, a real SQLite file).

Some runs are moved back in time after they ran (their rows' times shifted by whole days, as a
history written over weeks would hold them), so the bars of the 7 and 30 day ranges differ.
"""

from __future__ import annotations

import html
import math
import re
import sqlite3
import threading
import time
from urllib.parse import urlsplit

import pytest
from markupsafe import escape
from ui_http import csrf_token
from waiting import wait_for
from starlette.datastructures import QueryParams
from starlette.testclient import TestClient

import rayflow as rf
from rayflow.presentation import colour
from rayflow.store import RunStore
from rayflow.store.schedules import ScheduleStore
from rayflow.ui import create_app
from rayflow.ui.queries import moment

BASE = "http://127.0.0.1:4200"
NASTY = 'nasty <img src=x onerror="alert(1)"> & 100%'  # a flow name that must be escaped in pages and quoted in links
DAY = 86400


@rf.task
def extract(n: int) -> list[int]:
    return list(range(n))


@rf.task
def transform(xs: list[int], bad: bool) -> int:
    if bad:
        raise ValueError("<b>bad batch</b>")
    return sum(xs)


@rf.task
def load(total: int) -> int:
    return total


@rf.flow(runner="local", progress=False)
def steady(n: int = 3) -> int:
    return load(transform(extract(n), False))


@rf.flow(runner="local", progress=False)
def etl(bad: bool = False) -> int:
    return load(transform(extract(4), bad))


@rf.flow(name=NASTY, runner="local", progress=False)
def nasty(label: str = "<script>alert(1)</script>") -> int:
    return load(transform(extract(2), True))


def _shift(home, run_id: str, days: float) -> None:
    """Move a run's rows ``days`` back in time."""
    with sqlite3.connect(home / "history.db") as db:
        for table in ("runs", "run_attempts"):
            db.execute(
                f"UPDATE {table} SET started_at = started_at - ?, finished_at = finished_at - ? WHERE run_id = ?",
                [days * DAY, days * DAY, run_id],
            )


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    home = tmp_path_factory.mktemp("dashboard-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        old = [steady.run() for _ in range(3)]
        etl_runs = [etl.run() for _ in range(3)] + [etl.run(bad=True) for _ in range(2)]  # transform starts failing
        odd = nasty.run()
    _shift(home, old[0].run_id, 3)  # in the 7 day range, not the 24 hour one
    _shift(home, old[1].run_id, 10)  # in the 30 day range only
    _shift(home, old[2].run_id, 40)  # in none
    now = time.time()
    schedules = ScheduleStore(RunStore(home))
    schedules.register("steady/hourly", "steady", "tests/test_ui_dashboard.py:steady", {"kind": "interval", "every": 3600.0}, now)
    schedules.advance("steady/hourly", now, now + 1800)
    schedules.register("etl/daily", "etl", "tests/test_ui_dashboard.py:etl", {"kind": "interval", "every": 86400.0}, now)
    schedules.advance("etl/daily", now - 7200, now - 3600)  # its fire an hour ago never happened: late
    return {"home": home, "old": old, "etl": etl_runs, "odd": odd, "client": TestClient(create_app(home), base_url=BASE)}


def _recorded(home, start: float, end: float, state: str | None = None) -> set[str]:
    """The history's runs started in [start, end) (in that state), read straight from the file."""
    query = "SELECT run_id FROM runs WHERE started_at >= ? AND started_at < ?" + (" AND state = ?" if state else "")
    with sqlite3.connect(home / "history.db") as db:
        return {r[0] for r in db.execute(query, [start, end, *([state] if state else [])])}


def _bars(page: str) -> list[dict]:
    """The chart's bar parts: state, count and link."""
    found = re.findall(r'<a href="([^"]+)"><rect [^>]*data-bucket="(\d+)" data-state="([^"]+)" data-count="(\d+)"', page)
    return [{"href": html.unescape(h), "bucket": int(b), "state": s, "count": int(c)} for h, b, s, c in found]


def _listed(page: str) -> set[str]:
    table = page.split('id="runs"', 1)[1]
    return set(re.findall(r'<a href="/runs/([^"?/]+)"[ >]', table))


@pytest.mark.parametrize("range_name,width,bars", [("24h", 3600, 24), ("7d", DAY, 7), ("30d", DAY, 30)])
def test_the_bars_add_up_to_the_history_and_each_lists_its_runs(history, range_name, width, bars):
    home, client = history["home"], history["client"]
    now = time.time()
    page = client.get(f"/?range={range_name}")
    assert page.status_code == 200
    start = (math.floor(now / width) - bars + 1) * width
    expected = _recorded(home, start, start + bars * width)
    parts = _bars(page.text)
    assert sum(p["count"] for p in parts) == len(expected) > 0
    for part in parts:  # each part of a bar links to exactly the runs it counts
        query = QueryParams(urlsplit(part["href"]).query)
        t0, t1 = moment(query, "from"), moment(query, "to")
        assert start <= t0 < t1 <= start + bars * width and query["state"] == part["state"]
        assert t0 == start + part["bucket"] * width and t1 - t0 == width
        runs = _recorded(home, t0, t1, part["state"])
        assert len(runs) == part["count"]
        listing = client.get(part["href"])
        assert listing.status_code == 200 and _listed(listing.text) == runs
    columns = re.findall(r'<a href="([^"]+)"><rect class="bucket" [^>]*data-bucket="(\d+)" data-total="(\d+)"', page.text)
    for href, bucket, n in columns:  # a bar as a whole: all its runs
        t0 = start + int(bucket) * width
        assert int(n) == sum(p["count"] for p in parts if p["bucket"] == int(bucket))
        assert _listed(client.get(html.unescape(href)).text) == _recorded(home, t0, t0 + width)
    assert sum(int(n) for _, _, n in columns) == len(expected)
    counts = dict(re.findall(r'<span class="num" data-state="([A-Z_]+)">([\d,]+)</span>', page.text))
    assert int(counts.pop("ALL")) == len(expected)
    for state, n in counts.items():  # the cards: the bars' sums by state
        assert int(n) == sum(p["count"] for p in parts if p["state"] == state) == len(_recorded(home, start, start + bars * width, state))


def test_the_ranges_differ_by_the_runs_moved_back(history):
    client, old = history["client"], history["old"]
    total = {r: sum(p["count"] for p in _bars(client.get(f"/?range={r}").text)) for r in ("24h", "7d", "30d")}
    everything = len(old) + len(history["etl"]) + 1
    assert total == {"24h": everything - 3, "7d": everything - 2, "30d": everything - 1}


def test_failing_flows_live_runs_and_fires_on_the_dashboard(history):
    page = history["client"].get("/").text
    failing = page.split('id="failing"', 1)[1].split("</table>", 1)[0]
    assert '<a href="/flows/etl">etl</a>' in failing and 'title="2 FAILED">2 failed</a> of 5' in failing
    assert f'<a href="/runs/{history["etl"][-1].run_id}">' in failing  # the last failure
    failed_link = html.unescape(re.search(r'<a href="([^"]+)" title="2 FAILED">', failing).group(1))
    assert _listed(history["client"].get(failed_link).text) == {r.run_id for r in history["etl"][-2:]}
    assert "steady" not in failing
    assert "No run is live now." in page
    upcoming = page.split('id="upcoming"', 1)[1].split("</table>", 1)[0]
    late = page.split('id="late"', 1)[1].split("</table>", 1)[0]
    assert "steady/hourly" in upcoming and "etl/daily" not in upcoming
    assert "etl/daily" in late and "not fired" in late and "steady/hourly" not in late


def test_a_flow_page_grid_shows_the_task_that_started_failing(history):
    client, etl_runs = history["client"], history["etl"]
    page = client.get("/flows/etl")
    assert page.status_code == 200
    cells = re.findall(r'<rect [^>]*fill="([^"]+)"[^>]*data-run="([^"]+)" data-task="([^"]+)" data-state="([^"]+)"', page.text)
    transform_row = [(run, state, fill) for fill, run, task, state in cells if task == "transform"]
    assert [run for run, _, _ in transform_row] == [r.run_id for r in etl_runs]  # oldest to newest
    assert [state for _, state, _ in transform_row] == ["SUCCESS"] * 3 + ["FAILED"] * 2
    assert transform_row[-1][2] == colour("FAILED") != transform_row[0][2]
    assert {state for _, run, task, state in cells if task == "load" and run == etl_runs[-1].run_id} == {"TRIGGER_FAILED"}
    links = re.findall(r'<a href="([^"]+)"><rect [^>]*data-run="([^"]+)" data-task="transform"', page.text)
    cell = client.get(html.unescape(links[-1][0]))  # a cell leads to the task's page in its run
    assert links[-1][0] == f"/runs/{etl_runs[-1].run_id}/tasks/transform"
    assert cell.status_code == 200 and 'class="badge failed"' in cell.text and etl_runs[-1].run_id in cell.text
    assert 'id="success-rate">60.0%' in page.text  # 3 of 5
    assert page.text.count('data-series="median"') == 1 and page.text.count('data-series="p95"') == 1  # today's point
    assert "Run now needs the UI of <code>rayflow serve --ui</code>" in page.text
    assert "etl/daily" in page.text.split('id="schedules"', 1)[1]


def test_flow_names_and_parameters_are_escaped_and_linked(history, monkeypatch):
    from rayflow.ui.actions import ServeActions

    monkeypatch.setenv("RAYFLOW_HOME", str(history["home"]))  # where the run now's run is recorded
    client, odd = history["client"], history["odd"]
    for url in ("/", "/runs", "/flows", f"/runs/{odd.run_id}"):
        text = client.get(url).text
        assert "<img" not in text and str(escape(NASTY)) in text, url
    links = {html.unescape(h) for h in re.findall(r'href="(/flows/nasty[^"]*)"', client.get("/flows").text + client.get("/").text)}
    assert len(links) == 1
    page = client.get(links.pop())  # the flows list's and the dashboard's link to it
    assert page.status_code == 200 and NASTY not in page.text and f"<h1>{escape(NASTY)}</h1>" in page.text
    served = TestClient(create_app(history["home"], ServeActions([nasty, steady])), base_url=BASE, follow_redirects=False)
    form = served.get("/flows/" + NASTY.replace("%", "%25")).text
    assert "<script>alert(1)</script>" not in form and 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in form
    steady_page = served.get("/flows/steady").text
    assert 'action="/flows/steady/run"' in steady_page
    started = served.post("/flows/steady/run", data={"n": "2", "csrf_token": csrf_token(steady_page)})
    assert started.status_code == 303
    run_id = started.headers["location"].rsplit("/", 1)[1]
    wait_for(lambda: RunStore(history["home"]).run_state(run_id) == "SUCCESS", what="the run-now run to succeed")
    _shift(history["home"], run_id, 45)  # out of every range: the other tests' counts stay


def test_bad_inputs_are_400_with_the_reason_and_unknown_flows_404(history):
    client = history["client"]
    reasons = {
        "/?range=1y": "range must be one of 24h, 7d, 30d",
        "/?part=everything": "part must be one of live",
        "/runs?from=yesterday": "from must be a time",
        "/runs?to=2026-13-40T00:00:00Z": "to must be a time",
        "/runs?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z": "from must be before to",
        "/api/runs?from=1e9": "from must be a time",
    }
    for url, reason in reasons.items():
        answer = client.get(url)
        assert answer.status_code == 400 and reason in answer.text, (url, answer.text[:300])
    for name in ("no-such-flow", "<script>x</script>"):
        missing = client.get(f"/flows/{name}")
        assert missing.status_code == 404 and "<script>x" not in missing.text and "No flow" in missing.text
    assert client.get("/runs?from=2020-01-01&to=2020-01-02").status_code == 200  # a day with no runs: an empty list
    assert "no runs match" in client.get("/runs?from=2020-01-01&to=2020-01-02").text


def test_the_dashboard_and_a_flow_page_read_runs_along_indexes_only(history, monkeypatch):
    """No statement of these pages scans the runs table (a page must not read every run)."""
    statements: list[str] = []
    connect = RunStore._connect

    def traced(self, *args, **kwargs):
        db = connect(self, *args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(RunStore, "_connect", traced)
    client = TestClient(create_app(history["home"]), base_url=BASE)
    for url in ("/?range=30d", "/flows/etl", "/runs?state=FAILED&from=2026-01-01T00:00:00Z&to=2099-01-01T00:00:00Z"):
        assert client.get(url).status_code == 200
    selects = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH")) and re.search(r"\bruns\b", s)]
    assert len(selects) > 5
    with sqlite3.connect(history["home"] / "history.db") as db:
        for sql in selects:
            plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql)]
            assert not any(re.match(r"SCAN runs\b", p) for p in plan), (sql, plan)


def test_a_live_run_is_on_the_dashboard_with_its_progress(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    gate = tmp_path / "gate"

    @rf.task
    def wait_for_gate(xs: list[int]) -> int:
        while not gate.exists():
            time.sleep(0.05)
        return len(xs)

    @rf.flow(name="gated", runner="local", progress=False)
    def gated() -> int:
        return load(wait_for_gate(extract(3)))

    thread = threading.Thread(target=gated.run, daemon=True)
    thread.start()
    try:
        client = TestClient(create_app(tmp_path), base_url=BASE)
        live = wait_for(lambda: next((t for t in [client.get("/?part=live").text] if "1/3 tasks done" in t), None), what="the live run")
        assert 'hx-get="/?range=24h&amp;part=live"' in live and "running wait_for_gate" in live
        assert '<a href="/flows/gated">gated</a>' in client.get("/").text.split('id="live-runs"', 1)[1]
    finally:
        gate.write_text("")
        thread.join(30)
    assert "No run is live now." in client.get("/").text
