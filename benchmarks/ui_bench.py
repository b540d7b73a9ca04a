"""Server time of every page of the UI at scale: 10^5 runs over 30 days across 20 flows, and a run
with a 10^6-item map of which 10^4 items failed.

    python benchmarks/ui_bench.py [--runs 100000] [--items 1000000] [--failed 10000] [--repeat 5] [--fresh]

The history is written as the engine's recorder writes it (``RunStore.write``: a run row and its
attempt, a graph, two transitions per task (RUNNING, then its end; a failed task's error type and
traceback, TRIGGER_FAILED downstream of it), a chunk row per map chunk with its counts, an item
row per failed map item with its traceback, and the logs of a run), built once and kept under
the temp dir (``rayflow-ui-bench-*``; rebuilt after 6 hours, or with --fresh).  A few runs are
live (their driver on another host) and a few schedules have next and late fires.

Each page is requested through Starlette's test client (the app's own time, no network): min of
--repeat after one warm-up.  Pages of routes this checkout does not have are left out: add a
page to PAGES.  Prints the table, the query plans of the dashboard's aggregates, then one JSON
object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import tempfile
import time
from urllib.parse import urlsplit

from rayflow.store import RunStore
from rayflow.store.schema import SCHEMA
from rayflow.store.schedules import ScheduleStore

FLOWS = 20
DAYS = 30
TASKS = ("extract", "clean", "score", "validate", "load", "report", "notify")
MAP_RUN, MAP_TASK = "bench0map0001", "score"
TRACEBACK = 'Traceback (most recent call last):\n  File "/srv/flows/etl.py", line 41, in {task}\n    raise {error}\n{error}\n'
BATCH = 5000


def _graph(flow: str, keys: list[str], maps: set[str], driver: str = "bench-host") -> str:
    nodes = [
        {"key": k, "name": k, "kind": "map" if k in maps else "task", "upstream": keys[i - 1:i], "wait_for": [], "conditions": []}
        for i, k in enumerate(keys)
    ]
    return json.dumps({"flow": flow, "nodes": nodes, "target": f"flows/{flow}.py:{flow}", "resumed_from": None, "code": {},
                       "driver": {"host": driver, "pid": 1}, "attempt": 1})


def _run_rows(rng: random.Random, i: int, run_id: str, flow_no: int, start: float, state: str) -> tuple:
    """One run's rows: (run, transitions, chunks, logs, graph), as a HistoryRecorder writes them."""
    flow = f"flow_{flow_no:02d}"
    keys = list(TASKS[: 3 + flow_no % 5])
    maps = {"score"} if flow_no % 3 == 0 and "score" in keys else set()
    fail_at = rng.randrange(len(keys)) if state == "FAILED" else None
    transitions, chunks, logs, at = [], [], [], start
    for n, key in enumerate(keys):
        if state in ("RUNNING", "CRASHED", "CANCELLED") and n == len(keys) // 2:
            transitions.append((run_id, key, 1, "RUNNING", 1, "", None, None, at, None, None, 1))
            break
        if fail_at is not None and n > fail_at:
            message = f"trigger all_successful did not pass; failed upstream task(s): {keys[fail_at]}"
            transitions.append((run_id, key, 1, "TRIGGER_FAILED", 1, message, None, None, at, None, None, 1))
            continue
        took = rng.uniform(0.05, 3.0) * (1 + flow_no % 4)
        transitions.append((run_id, key, 1, "RUNNING", 1, "", None, None, at, None, None, 1))
        if n == fail_at:
            error = f"ValueError: bad row {rng.randrange(10**6)} in {flow}"
            transitions.append((run_id, key, 2, "FAILED", 1, error, "builtins.ValueError",
                                TRACEBACK.format(task=key, error=error), at + took, at, at + took, 1))
            logs.append((run_id, at + took, "ERROR", f"task {key} failed: {error}", key, None, None, None, 1))
        elif key in maps:
            items = 200
            chunks.append((run_id, key, 0, items, items, json.dumps({"SUCCESS": items}), at, at + took, None, 1, 0))
            transitions.append((run_id, key, 2, "MAPPED", 1, f"{items} items: {items} ok", None, None, at + took, at, at + took, 1))
        else:
            transitions.append((run_id, key, 2, "SUCCESS", 1, "", None, None, at + took, at, at + took, 1))
        logs.append((run_id, at + took, "INFO", f"{key}: done", key, None, None, None, 1))
        at += took
    finished = None if state == "RUNNING" else at + 0.01
    message = {"SUCCESS": "all reference tasks succeeded", "FAILED": f"1 reference task(s) failed; {keys[fail_at] if fail_at is not None else ''}",
               "CRASHED": "its driver is gone", "CANCELLED": "cancelled by a person", "RUNNING": None}[state]
    run = (run_id, flow, json.dumps({"day": "2026-11-24", "n": i}), state, message, start, finished,
           f"{i:032x}", json.dumps(keys), 1)
    driver = "bench-node-elsewhere" if state == "RUNNING" else "bench-host"
    return run, transitions, chunks, logs, (run_id, _graph(flow, keys, maps, driver))


def _map_run(store: RunStore, items: int, failed: int, start: float) -> None:
    """One run whose map over ``items`` items failed on ``failed`` of them, as the engine records it:
    a chunk row per 1000 items with its counts, an item row and an ERROR log per failed item."""
    keys, chunk = ["extract", MAP_TASK, "report"], 1000
    every = max(items // max(failed, 1), 1)
    bad = set(range(0, items, every)[:failed])
    chunks, item_rows, logs = [], [], []
    for lo in range(0, items, chunk):
        hi = min(lo + chunk, items)
        n_bad = sum(1 for i in range(lo, hi) if i in bad)
        counts = {"SUCCESS": hi - lo - n_bad, **({"FAILED": n_bad} if n_bad else {})}
        t = start + 1 + lo / items * 600
        chunks.append((MAP_RUN, MAP_TASK, lo, hi, hi - lo, json.dumps(counts), t, t + 0.6,
                       f"ValueError: bad item {min(i for i in range(lo, hi) if i in bad)}" if n_bad else None, 1, 0))
    for i in sorted(bad):
        error = f"ValueError: bad item {i}"
        item_rows.append((MAP_RUN, 1, MAP_TASK, i, "FAILED", 1, "builtins.ValueError", f"bad item {i}",
                          TRACEBACK.format(task=MAP_TASK, error=error)))
        logs.append((MAP_RUN, start + 1 + i / items * 600, "ERROR", f"item {i} failed: {error}\n" + TRACEBACK.format(task=MAP_TASK, error=error),
                     MAP_TASK, i, None, None, 1))
    end = start + 602
    transitions = [
        (MAP_RUN, "extract", 1, "RUNNING", 1, "", None, None, start, None, None, 1),
        (MAP_RUN, "extract", 2, "SUCCESS", 1, "", None, None, start + 1, start, start + 1, 1),
        (MAP_RUN, MAP_TASK, 1, "RUNNING", 1, "", None, None, start + 1, None, None, 1),
        (MAP_RUN, MAP_TASK, 2, "MAPPED", 1, f"{items} items: {items - len(bad)} ok, {len(bad)} failed; first error: item 0: ValueError: bad item 0",
         None, None, end, start + 1, end, 1),
        (MAP_RUN, "report", 1, "RUNNING", 1, "", None, None, end, None, None, 1),
        (MAP_RUN, "report", 2, "SUCCESS", 1, "", None, None, end + 1, end, end + 1, 1),
    ]
    run = (MAP_RUN, "big_map", json.dumps({"n": items}), "SUCCESS", "all reference tasks succeeded", start, end + 1,
           "f" * 32, json.dumps(keys), 1)
    store.write([run], transitions, chunks, logs, [(MAP_RUN, _graph("big_map", keys, {MAP_TASK}))], items=item_rows)


def build(home: pathlib.Path, runs: int, items: int, failed: int) -> None:
    store = RunStore(home)
    rng = random.Random(7)
    now = time.time()
    first = now - DAYS * 86400
    states = ["SUCCESS"] * 85 + ["FAILED"] * 10 + ["CRASHED"] * 3 + ["CANCELLED"] * 2
    batch: list[list] = [[], [], [], [], []]
    for i in range(runs):
        flow_no = i % FLOWS
        start = first + (i + rng.random()) * DAYS * 86400 / runs
        state = "RUNNING" if i >= runs - 3 else rng.choice(states)
        if flow_no == 7 and i > runs * 0.9 and state == "SUCCESS":  # a flow that started failing lately
            state = "FAILED"
        for rows, row in zip(batch, _run_rows(rng, i, f"b{i:011x}", flow_no, start, state), strict=True):
            rows.extend(row if isinstance(row, list) else [row])
        if len(batch[0]) >= BATCH or i == runs - 1:
            store.write(batch[0], batch[1], batch[2], batch[3], batch[4])
            batch = [[], [], [], [], []]
    _map_run(store, items, failed, now - 3600)
    schedules = ScheduleStore(store)
    for k in range(5):
        sid = f"flow_{k:02d}/every-{k + 1}h"
        schedules.register(sid, f"flow_{k:02d}", f"flows/flow_{k:02d}.py:flow_{k:02d}", {"kind": "interval", "every": 3600.0 * (k + 1)}, now)
        schedules.advance(sid, now, now + 600 * (k + 1) if k else now - 900)  # the first one is late


PAGES = [  # (label, path); {map} is the map run's id, {plain} a plain run's; pages no route serves are left out
    ("dashboard, 24h", "/"),
    ("dashboard, 7d", "/?range=7d"),
    ("dashboard, 30d", "/?range=30d"),
    ("dashboard, live part", "/?part=live"),
    ("runs list", "/runs"),
    ("runs list, FAILED", "/runs?state=FAILED"),
    ("runs list, page 200", "/runs?page=200"),
    ("runs list, one flow", "/runs?flow=flow_07"),
    ("runs list, a bar (from..to)", "/runs?state=FAILED&from={day_ago}&to={now}"),
    ("flows", "/flows"),
    ("a flow (/flows/flow_07)", "/flows/flow_07"),
    ("a plain run", "/runs/{plain}"),
    ("the map run", "/runs/{map}"),
    ("the map page", "/runs/{map}/maps/" + MAP_TASK),
    ("the map page, failed items far in", "/runs/{map}/maps/" + MAP_TASK + "?after=900000"),
    ("the map's task page", "/runs/{map}/tasks/" + MAP_TASK),
    ("artifacts", "/artifacts"),
    ("api: runs", "/api/runs"),
    ("api: the map run", "/api/runs/{map}"),
    ("api: failed items far in", "/api/runs/{map}/items?task=" + MAP_TASK + "&state=FAILED&after=900000"),
]


def plans(store: RunStore) -> dict[str, str]:
    """EXPLAIN QUERY PLAN of the dashboard's and a flow page's aggregates."""
    now = time.time()
    queries = {
        "bars": ("SELECT COUNT(*) FROM runs WHERE state = ? AND started_at >= ? AND started_at < ?", ["FAILED", now - 3600, now]),
        "failing": ("SELECT flow, COUNT(*) FROM runs WHERE started_at >= ? AND state IN ('FAILED', 'CRASHED') GROUP BY +flow", [now]),
        "flow window": ("SELECT state, started_at, finished_at FROM runs WHERE flow = ? AND started_at >= ?", ["flow_07", now]),
        "live": ("SELECT run_id FROM runs WHERE state IN ('PENDING', 'RUNNING') ORDER BY started_at DESC LIMIT 20", []),
    }
    with store._connect() as db:
        return {k: " | ".join(r["detail"] for r in db.execute("EXPLAIN QUERY PLAN " + q, a)) for k, (q, a) in queries.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--failed", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fresh", action="store_true", help="build the history again")
    args = parser.parse_args()
    home = pathlib.Path(tempfile.gettempdir()) / f"rayflow-ui-bench-{args.runs}-{args.items}-{args.failed}"
    marker = home / "built"
    built = time.perf_counter()
    if args.fresh or not marker.exists() or time.time() - marker.stat().st_mtime > 6 * 3600:
        shutil.rmtree(home, ignore_errors=True)
        build(home, args.runs, args.items, args.failed)
        marker.write_text("")
        print(f"built the history in {time.perf_counter() - built:.0f}s at {home}")
    else:
        with RunStore(home)._connect() as db:  # the indexes of this checkout's schema (CREATE ... IF NOT EXISTS)
            db.executescript(SCHEMA)
        print(f"reusing the history at {home}")
    os.environ["RAYFLOW_HOME"] = str(home)
    from starlette.testclient import TestClient

    from rayflow.ui import create_app
    from rayflow.ui.queries import iso

    app = create_app(home)
    patterns = [r.path_regex for r in app.routes if getattr(r, "path_regex", None) is not None]
    client = TestClient(app, base_url="http://127.0.0.1:4200")  # a Host the UI answers
    names = {"map": MAP_RUN, "plain": f"b{args.runs // 2:011x}", "now": iso(time.time()), "day_ago": iso(time.time() - 86400)}
    rows: dict[str, tuple[str, float]] = {}
    for label, path in PAGES:
        url = path.format(**names)
        if not any(p.match(urlsplit(url).path) for p in patterns):  # not on this checkout (yet)
            continue
        times, status = [], 200
        for _ in range(args.repeat + 1):
            start = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - start)
            status = response.status_code if response.status_code != 200 else status
        rows[label] = (url if status == 200 else f"{url}  (answered {status})", min(times[1:]))
    print(f"history: {args.runs} runs over {DAYS} days, {FLOWS} flows, + one run of a {args.items}-item map "
          f"with {args.failed} failed items; server time, min of {args.repeat}")
    print(f"{'page':36s} {'ms':>8s}  url")
    for label, (url, seconds) in rows.items():
        print(f"{label:36s} {seconds * 1000:8.1f}  {url}")
    for name, plan in plans(RunStore(home)).items():
        print(f"plan {name:12s} {plan}")
    slowest = max(s for _, s in rows.values())
    print(json.dumps({"runs": args.runs, "items": args.items, "failed_items": args.failed, "repeat": args.repeat,
                      "slowest_ms": round(slowest * 1000, 1), "ms": {k: round(s * 1000, 1) for k, (_, s) in rows.items()}}))


if __name__ == "__main__":
    main()
