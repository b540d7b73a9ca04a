"""The map, item and task pages of the web UI over a history made by real runs (in-process runner):
a map with failed, skipped and retried items (one error message and traceback carrying markup),
a cached task (a miss, then a hit), a persisted result; and a 10^6-item map with 10^4 failed items
written as the engine records it (benchmarks/big_map_history.py), paged to its end."""

from __future__ import annotations

import html
import importlib.util
import pathlib
import re
import sqlite3

import pytest
from starlette.testclient import TestClient

import rayflow as rf
from rayflow.store import RunStore
from rayflow.store.views import map_items
from rayflow.ui import create_app

BASE = "http://127.0.0.1:4200"
EVIL = '<script>alert(1)</script>'
BIG = pathlib.Path(__file__).parent.parent / "benchmarks" / "big_map_history.py"


@rf.task(retries=1, retry_delay=0.0)
def picky(x: int, marks: str) -> int:
    if x % 10 == 3:  # fails at its first attempt only
        mark = pathlib.Path(marks) / str(x)
        if not mark.exists():
            mark.touch()
            raise ValueError(f"first try of {x}")
    if x == 7:
        raise ValueError(f"{EVIL} item {x}\nsecond line")  # both attempts
    if x == 17:
        raise KeyError("never")
    if x == 5:
        raise rf.Skip("five is skipped")
    if x % 2 == 0:
        rf.get_run_logger().info("item %d is even", x)
    return x


@rf.task(cache_key_fn=rf.cache.inputs)
def costly(n: int) -> int:
    return n * 10


@rf.task(persist=True)
def kept(n: int) -> int:
    return n + 1


@rf.task
def explode() -> int:
    raise RuntimeError(f"boom {EVIL}")


@rf.flow(runner="local")
def mapped(marks: str, boom: bool = False):
    values = picky.with_options(chunk_size=8, min_success_ratio=0.5).map(range(24), rf.unmapped(marks))
    out = {"values": values, "costly": costly(3), "kept": kept(1)}
    if boom:
        out["explode"] = explode()
    return out


def _big_map_module():
    spec = importlib.util.spec_from_file_location("big_map_history", BIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-maps-home")
    marks = tmp_path_factory.mktemp("marks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAYFLOW_HOME", str(home))
        mp.delenv("RAYFLOW_RESULTS", raising=False)
        first = mapped.run(marks=str(marks))
        second = mapped.run(marks=str(marks), boom=True)
    big = _big_map_module().write_big_map_history(home, items=1_000_000, failed=10_000)
    client = TestClient(create_app(home), base_url=BASE)
    return {"home": home, "first": first, "second": second, "big": big, "client": client}


def _items(text: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-item="(\d+)">', text)]


def test_the_map_page_counts_items_by_state_and_lists_the_failed_skipped_and_retried(history):
    client, run = history["client"], history["first"]
    page = client.get(f"/runs/{run.run_id}/maps/picky")
    assert page.status_code == 200
    text = page.text
    cards = dict(re.findall(r'data-state="([A-Z_]+)"><div class="num[^"]*">([\d,]+)<', text))
    recorded = [c for c in RunStore(history["home"]).run(run.run_id)["chunks"] if c["task_key"] == "picky"]
    assert {k: int(v.replace(",", "")) for k, v in cards.items()} == map_items(recorded)["states"] == {"SUCCESS": 21, "FAILED": 2, "SKIPPED": 1}
    assert _items(text) == [3, 5, 7, 13, 17, 23]  # the engine's item rows, in index order
    row7 = text.split('<tr data-item="7">', 1)[1].split("</tr>", 1)[0]
    assert "FAILED" in row7 and ">2<" in row7 and "ValueError" in row7
    assert EVIL not in text and html.escape(EVIL, quote=False) in row7  # the message, escaped
    assert "second line" not in row7.split("<details>")[0]  # the message's first line; the rest in the traceback
    row13 = text.split('<tr data-item="13">', 1)[1].split("</tr>", 1)[0]
    assert "SUCCESS" in row13 and ">2<" in row13  # retried, then succeeded
    assert '<div class="chart"><svg' in text
    bins = re.findall(r'<rect class="bin" data-bin="\d+" data-state="([A-Z_]+)" data-items="(\d+)"', text)
    totals: dict[str, int] = {}
    for state, n in bins:
        totals[state] = totals.get(state, 0) + int(n)
    assert totals == {"SUCCESS": 21, "FAILED": 2, "SKIPPED": 1}  # the chart's bars add up to the counts
    assert 'href="/runs/%s/maps/picky/items/7"' % run.run_id in text
    assert '<p class="crumbs"><a href="/flows/mapped">mapped</a>' in text


def test_the_map_page_filters_by_state_and_error_type_with_counts(history):
    client, run = history["client"], history["first"]
    text = client.get(f"/runs/{run.run_id}/maps/picky").text
    options = dict(re.findall(r'<option value="([A-Za-z_.]+Error)" >\1 \((\d+)\)', text))
    assert {k.rsplit(".", 1)[-1]: v for k, v in options.items()} == {"ValueError": "1", "KeyError": "1"}
    key_error = next(k for k in options if k.endswith("KeyError"))
    only = client.get(f"/runs/{run.run_id}/maps/picky", params={"error": key_error})
    assert only.status_code == 200 and _items(only.text) == [17]
    assert _items(client.get(f"/runs/{run.run_id}/maps/picky", params={"state": "skipped"}).text) == [5]
    assert _items(client.get(f"/runs/{run.run_id}/maps/picky", params={"state": "SUCCESS", "after": 3}).text) == [13, 23]
    assert "No item rows match" in client.get(f"/runs/{run.run_id}/maps/picky", params={"state": "CRASHED"}).text


def test_bad_map_and_item_requests_are_404_and_bad_filters_400_with_the_reason(history):
    client, run = history["client"], history["first"]
    assert client.get("/runs/nope/maps/picky").status_code == 404
    not_map = client.get(f"/runs/{run.run_id}/maps/costly")  # a task, not a map
    assert not_map.status_code == 404 and "No map costly" in not_map.text
    assert client.get(f"/runs/{run.run_id}/maps/nothing").status_code == 404
    for params, reason in (
        ({"after": "x"}, "after must be a whole number"),
        ({"after": "-3"}, "after must be a whole number"),
        ({"after": "9" * 40}, "after must be a whole number"),
        ({"state": "bogus"}, "state must be one of"),
        ({"error": "NoSuchError"}, "error must be one of this map"),
        ({"error": EVIL}, "error must be one of"),
    ):
        bad = client.get(f"/runs/{run.run_id}/maps/picky", params=params)
        assert bad.status_code == 400 and reason in bad.text, params
        assert EVIL not in bad.text
    twice = client.get(f"/runs/{run.run_id}/maps/picky?state=FAILED&state=SKIPPED")
    assert twice.status_code == 400 and "given 2 times" in twice.text
    for index in ("24", "1000", "x", "-1"):
        assert client.get(f"/runs/{run.run_id}/maps/picky/items/{index}").status_code == 404, index
    assert client.get(f"/runs/{run.run_id}/tasks/nothing").status_code == 404
    assert client.get("/runs/nope/tasks/costly").status_code == 404


def test_an_items_page_has_its_state_error_traceback_and_logs(history):
    client, run = history["client"], history["first"]
    page = client.get(f"/runs/{run.run_id}/maps/picky/items/7")
    assert page.status_code == 200
    text = page.text
    assert 'id="item-state">FAILED' in text and "ValueError" in text
    assert EVIL not in text and html.escape(EVIL, quote=False) in text and "second line" in text
    traceback = text.split('id="item-traceback">', 1)[1].split("</pre>", 1)[0]
    assert "raise ValueError" in traceback and "&lt;script&gt;" in traceback
    even = client.get(f"/runs/{run.run_id}/maps/picky/items/4").text  # no row: succeeded at once
    assert "SUCCESS</span> at its first attempt" in even
    logs = even.split('id="logs">', 1)[1].split("</pre>", 1)[0]
    store_logs = RunStore(history["home"]).logs(run.run_id, task="picky", item=4)
    assert "item 4 is even" in logs and len(store_logs) == logs.count("\n") >= 1
    assert "item 6 is even" not in logs


def test_the_task_page_shows_states_cache_miss_then_hit_and_the_persisted_result(history):
    client, first, second = history["client"], history["first"], history["second"]
    miss = client.get(f"/runs/{first.run_id}/tasks/costly").text
    assert 'id="cache"><span class="badge muted">miss</span>' in miss and "no cached result for this task yet" in miss
    hit = client.get(f"/runs/{second.run_id}/tasks/costly").text
    assert '<span class="badge ok">hit</span>' in hit and "cache/mapped/costly/" in hit
    assert re.search(r'id="task-state">CACHED<', hit)
    states = re.findall(r'<span class="badge [a-z]+">([A-Z_]+)</span></td><td class="num">', hit)
    assert states[-1] == "CACHED"
    stored = client.get(f"/runs/{first.run_id}/tasks/kept").text
    assert "runs/%s/kept" % first.run_id in stored and str(history["home"]) in stored  # its name in the run's result store
    plain = client.get(f"/runs/{first.run_id}/tasks/costly").text
    assert "not persisted" in plain and 'id="map-link"' not in plain
    assert f'hx-get="/runs/{first.run_id}/artifacts?task=kept"' in stored
    assert '<p class="crumbs"><a href="/flows/mapped">mapped</a> › <a href="/runs/%s">' % first.run_id in stored


def test_the_task_page_of_a_failed_task_and_of_a_map(history):
    client, second = history["client"], history["second"]
    failed = client.get(f"/runs/{second.run_id}/tasks/explode")
    assert failed.status_code == 200
    text = failed.text
    assert 'id="task-state">FAILED<' in text and "RuntimeError" in text
    assert EVIL not in text and "boom &lt;script&gt;" in text
    assert "raise RuntimeError" in text.split('id="traceback">', 1)[1]
    mapped_task = client.get(f"/runs/{second.run_id}/tasks/picky").text
    assert 'id="map-link"' in mapped_task and f'href="/runs/{second.run_id}/maps/picky"' in mapped_task
    run_page = client.get(f"/runs/{second.run_id}").text  # the run's page links to both
    assert f'href="/runs/{second.run_id}/tasks/explode"' in run_page
    assert f'href="/runs/{second.run_id}/maps/picky/items/7"' in run_page


def test_a_million_item_map_with_ten_thousand_failed_is_paged_to_its_end_by_index(history):
    client, big = history["client"], history["big"]
    base = f"/runs/{big['run_id']}/maps/{big['map_key']}"
    first = client.get(base).text
    cards = dict(re.findall(r'data-state="([A-Z_]+)"><div class="num[^"]*">([\d,]+)<', first))
    assert {k: int(v.replace(",", "")) for k, v in cards.items()} == big["states"] and '<div class="num">1,000,000</div>' in first
    options = dict(re.findall(r'<option value="([A-Za-z]+Error)" >\1 \(([\d,]+)\)', first))
    assert {k: int(v.replace(",", "")) for k, v in options.items()} == big["errors"]
    bins = re.findall(r'<rect class="bin" data-bin="\d+" data-state="([A-Z_]+)" data-items="(\d+)"', first)
    assert sum(int(n) for _, n in bins) == big["items"] and {s for s, _ in bins} == set(big["states"])  # 1000 chunks, 40 bars
    seen: list[int] = []
    url = base + "?error=ZeroDivisionError"
    pages = 0
    while url:
        text = client.get(url).text
        seen += _items(text)
        pages += 1
        found = re.search(r'href="([^"]+)#items" id="next-page"', text)
        url = html.unescape(found.group(1)) if found else None
    assert len(seen) == big["errors"]["ZeroDivisionError"] == 100 and seen == sorted(set(seen)) and pages == 2
    deep = client.get(base, params={"state": "FAILED", "after": 999_000}).text
    assert _items(deep) == list(range(999_099, 1_000_000, 100))


def test_the_map_pages_queries_search_indexes(history):
    big = history["big"]
    db = sqlite3.connect(pathlib.Path(history["home"]) / "history.db")
    store = RunStore(history["home"])
    plans = []

    def explain(query: str, args=()):
        plans.append(" ".join(str(r[-1]) for r in db.execute("EXPLAIN QUERY PLAN " + query, args)))

    explain("SELECT state, error_type, COUNT(*) FROM items WHERE run_id = ? AND run_attempt = ? AND task_key = ? GROUP BY error_type, state",
            [big["run_id"], 1, big["map_key"]])
    explain("SELECT item FROM items WHERE run_id = ? AND run_attempt = ? AND task_key = ? AND error_type = ? AND item > ? ORDER BY item LIMIT 51",
            [big["run_id"], 1, big["map_key"], "KeyError", -1])
    explain("SELECT rowid, * FROM logs WHERE run_id = ? AND rowid > ? AND task_key = ? AND map_index = ? ORDER BY rowid",
            [big["run_id"], 0, big["map_key"], 99])
    assert "COVERING INDEX items_by_error" in plans[0] and "SCAN" not in plans[0]
    assert "COVERING INDEX items_by_error (run_id=? AND run_attempt=? AND task_key=? AND error_type=? AND item>?)" in plans[1]
    assert "INDEX logs_by_item" in plans[2]
    rows = store.item_page(big["run_id"], big["map_key"], 1, error_type="KeyError", state="FAILED", limit=3)
    assert [r["item"] for r in rows] == [199, 599, 999] and all(r["error_type"] == "KeyError" for r in rows)


def test_a_live_maps_counts_and_a_live_tasks_states_follow_the_run(history):
    import json
    import os
    import socket
    import time

    now = time.time()
    graph = {"flow": "live", "nodes": [{"key": "m", "name": "m", "kind": "map", "upstream": [], "wait_for": [], "conditions": []}],
             "driver": {"host": socket.gethostname(), "pid": os.getpid()}}  # its driver alive: this process
    RunStore(history["home"]).write(
        [("live-run", "live", "{}", "RUNNING", "", now, None, None, '["m"]', 1)],
        [("live-run", "m", 1, "RUNNING", 1, "", None, None, now, now, None, 1)],
        [("live-run", "m", 0, 10, 10, json.dumps({"SUCCESS": 10}), now, now + 1, None, 1, 0)], [],
        [("live-run", json.dumps(graph))],
    )
    client = history["client"]
    live = client.get("/runs/live-run/maps/m").text
    assert 'hx-get="/runs/live-run/maps/m" hx-select="#map-live" hx-trigger="every 2s"' in live
    assert re.search(r'data-state="SUCCESS"><div class="num ok">10<', live)
    task = client.get("/runs/live-run/tasks/m").text
    assert 'hx-select="#task-live" hx-trigger="every 2s"' in task and 'id="task-state">RUNNING<' in task
    done = client.get(f"/runs/{history['first'].run_id}/maps/picky").text
    assert "hx-trigger" not in done.split('id="map-live"', 1)[1].split(">", 1)[0]
