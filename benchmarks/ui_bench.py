"""Server time of every page of the UI at scale: 10^5 runs over 30 days across 20 flows, and a run
with a 10^6-item map of which 10^4 items failed.

    python benchmarks/ui_bench.py [--runs 100000] [--items 1000000] [--failed 10000] [--repeat 5] [--fresh]

The history is written as the engine's recorder writes it (``RunStore.write``): 10^5 runs, each a
run row and its attempt, a graph, two transitions per task (RUNNING, then its end; a failed
task's error type and traceback, TRIGGER_FAILED downstream of it), a chunk row per map chunk with
its counts, its logs, and the artifacts its tasks made (a keyed summary table per run of five
flows: keys of 5,000 versions; a link every 10th run); the 10^6-item map's run from
``big_map_history.write_big_map_history`` (13,000 item rows, 1,000 chunk rows, an ERROR log per
failed item; 200 artifacts of its items); and a real run (in-process runner) of a flow of ~500
tasks (``run_page_bench.chains``).  Built once and kept under the temp dir
(``rayflow-ui-bench2-*``; rebuilt after 6 hours, or with --fresh).  A few runs are live (their
driver on another host) and a few schedules have next and late fires.

Each page is requested through Starlette's test client (the app's own time, no network) after one
warm-up: min and median wall time of --repeat, min CPU time of this process (the app and SQLite
run in it: what a machine shared with other work does not inflate), the SQL statements one
request ran and the answer's size.  Pages of routes this checkout does not have are left out:
add a page to PAGES (--only TEXT: the pages whose label holds TEXT).  Prints the table, the query
plans of the dashboard's and the flow pages' aggregates (and which of them scan runs: none
should), then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from urllib.parse import urlsplit

from big_map_history import RARE_ERROR, write_big_map_history

from rayflow.store import RunStore, aggregates
from rayflow.store.schema import SCHEMA
from rayflow.store.schedules import ScheduleStore

FLOWS = 20
DAYS = 30
TASKS = ("extract", "clean", "score", "validate", "load", "report", "notify")
MAP_RUN, MAP_TASK = "bench0map0001", "work"
WIDE = 500  # tasks of the run whose page draws the biggest graph
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


def _artifacts(rng: random.Random, i: int, run_id: str, flow_no: int, start: float) -> list[tuple]:
    """What a run's tasks show (rf.artifacts): flows 0-4 keep a keyed summary table per run (a key
    with 5,000 versions), every 10th run a link."""
    rows = []
    if flow_no < 5:
        table = json.dumps({"columns": ["day", "rows"], "rows": [[d, rng.randrange(10**4)] for d in range(20)],
                            "total_rows": 20, "total_columns": 2})
        rows.append((run_id, 1, start + 1, "table", f"flow_{flow_no:02d}-summary", "extract", None, "20 rows × 2 columns", table, None))
    if i % 10 == 0:
        rows.append((run_id, 1, start + 1, "link", None, "extract", None, "the report", json.dumps({"url": "https://example.com/r", "text": "the report"}), None))
    return rows


def _wide_run(home: pathlib.Path, nodes: int) -> str:
    """A real run (in-process runner) of a flow of about ``nodes`` tasks (run_page_bench.chains)."""
    import rayflow as rf
    from run_page_bench import chains

    keys, deps = chains(nodes)

    @rf.task
    def step(*xs: int) -> int:
        return sum(xs) + 1

    @rf.flow(name="wide", runner="local", progress=False)
    def wide():
        futures: dict[str, object] = {}
        for k in keys:
            futures[k] = step(*[futures[d] for d in deps[k]])
        return futures["sink"]

    os.environ["RAYFLOW_HOME"] = str(home)
    return wide.run().run_id


def build(home: pathlib.Path, runs: int, items: int, failed: int) -> dict:
    store = RunStore(home)
    rng = random.Random(7)
    now = time.time()
    first = now - DAYS * 86400
    states = ["SUCCESS"] * 85 + ["FAILED"] * 10 + ["CRASHED"] * 3 + ["CANCELLED"] * 2
    batch: list[list] = [[], [], [], [], [], []]
    for i in range(runs):
        flow_no = i % FLOWS
        start = first + (i + rng.random()) * DAYS * 86400 / runs
        state = "RUNNING" if i >= runs - 3 else rng.choice(states)
        if flow_no == 7 and i > runs * 0.9 and state == "SUCCESS":  # a flow that started failing lately
            state = "FAILED"
        run_id = f"b{i:011x}"
        for rows, row in zip(batch, _run_rows(rng, i, run_id, flow_no, start, state), strict=False):
            rows.extend(row if isinstance(row, list) else [row])
        batch[5].extend(_artifacts(rng, i, run_id, flow_no, start))
        if len(batch[0]) >= BATCH or i == runs - 1:
            store.write(batch[0], batch[1], batch[2], batch[3], batch[4], artifacts=batch[5])
            batch = [[], [], [], [], [], []]
    facts = write_big_map_history(home, items=items, failed=failed, run_id=MAP_RUN, map_key=MAP_TASK, started=now - 3600)
    store.write([], [], [], artifacts=[  # its map's items show a little too
        (MAP_RUN, 1, now - 3000 + k, "markdown", None, MAP_TASK, k * 1000, f"item {k * 1000}", json.dumps({"text": f"item **{k}**"}), None)
        for k in range(200)
    ])
    schedules = ScheduleStore(store)
    for k in range(5):
        sid = f"flow_{k:02d}/every-{k + 1}h"
        schedules.register(sid, f"flow_{k:02d}", f"flows/flow_{k:02d}.py:flow_{k:02d}", {"kind": "interval", "every": 3600.0 * (k + 1)}, now)
        schedules.advance(sid, now, now + 600 * (k + 1) if k else now - 900)  # the first one is late
    facts["wide_run"] = _wide_run(home, WIDE)
    return facts


PAGES = [  # (label, path); {map} is the map run's id, {plain} a plain run's, {wide} the run of ~500 tasks
    ("dashboard, 24h", "/"),
    ("dashboard, 7d", "/?range=7d"),
    ("dashboard, 30d", "/?range=30d"),
    ("dashboard, live part", "/?part=live"),
    ("runs list", "/runs"),
    ("runs list, FAILED", "/runs?state=FAILED"),
    ("runs list, page 200", "/runs?page=200"),
    ("runs list, page 1900 (last)", "/runs?page=1900"),
    ("runs list, one flow", "/runs?flow=flow_07"),
    ("runs list, one flow, FAILED", "/runs?flow=flow_07&state=FAILED"),
    ("runs list, a bar (from..to)", "/runs?state=FAILED&from={day_ago}&to={now}"),
    ("flows", "/flows"),
    ("a flow (/flows/flow_07)", "/flows/flow_07"),
    ("a plain run", "/runs/{plain}"),
    ("run of ~500 tasks", "/runs/{wide}"),
    ("the map run", "/runs/{map}"),
    ("the map run, logs searched", "/runs/{map}?q=TimeoutError"),
    ("the map run, live tail", "/runs/{map}/logs?after=1"),
    ("the map page", "/runs/{map}/maps/" + MAP_TASK),
    ("the map page, state=FAILED", "/runs/{map}/maps/" + MAP_TASK + "?state=FAILED"),
    ("the map page, rare error", "/runs/{map}/maps/" + MAP_TASK + "?error=" + RARE_ERROR),
    ("the map page, after=990000", "/runs/{map}/maps/" + MAP_TASK + "?after=990000"),
    ("an item's page (failed)", "/runs/{map}/maps/" + MAP_TASK + "/items/{item}"),
    ("the map's task page", "/runs/{map}/tasks/" + MAP_TASK),
    ("artifacts", "/artifacts"),
    ("an artifact (5000 versions)", "/artifacts/flow_03-summary"),
    ("a run's artifacts fragment", "/runs/{map}/artifacts"),
    ("api: runs", "/api/runs"),
    ("api: a plain run", "/api/runs/{plain}"),
    ("api: the map run", "/api/runs/{map}"),
    ("api: the map's items", "/api/runs/{map}/items?task=" + MAP_TASK),
    ("api: failed items far in", "/api/runs/{map}/items?task=" + MAP_TASK + "&state=FAILED&after=900000"),
    ("api: artifacts", "/api/artifacts"),
]


def plans(store: RunStore) -> dict[str, str]:
    """EXPLAIN QUERY PLAN of the dashboard's and the flow pages' aggregates (store.aggregates)."""
    now = time.time()
    queries = {
        **({"states": (aggregates.STATES_SQL, [])} if hasattr(aggregates, "STATES_SQL") else {}),
        "bars": ("SELECT COUNT(*) FROM runs WHERE state = ? AND started_at >= ? AND started_at < ?", ["FAILED", now - 3600, now]),
        "failing": (f"SELECT flow, state, COUNT(*) AS n FROM runs WHERE started_at >= ? AND state IN {aggregates._FAILING_SQL} "
                    "GROUP BY +flow, +state", [now]),
        "flow window": ("SELECT state, started_at, finished_at FROM runs WHERE flow = ? AND started_at >= ?", ["flow_07", now]),
        "flow last runs": ("SELECT run_id FROM runs WHERE flow = ? ORDER BY started_at DESC LIMIT 30", ["flow_07"]),
        "live": ("SELECT run_id FROM runs WHERE state IN ('PENDING', 'RUNNING') ORDER BY started_at DESC LIMIT 20", []),
    }
    with store._connect() as db:
        return {k: " | ".join(r["detail"] for r in db.execute("EXPLAIN QUERY PLAN " + q, a)) for k, (q, a) in queries.items()}


class Counted:
    """Counts the SQL statements the app runs (every connection of RunStore is traced)."""

    def __init__(self) -> None:
        self.n = 0
        connect = RunStore._connect

        def traced(store: RunStore, *args: object, **kwargs: object) -> sqlite3.Connection:
            db = connect(store, *args, **kwargs)
            db.set_trace_callback(self._one)
            return db

        RunStore._connect = traced

    def _one(self, statement: str) -> None:
        self.n += not statement.startswith("PRAGMA")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--failed", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="", help="the pages whose label contains this")
    parser.add_argument("--fresh", action="store_true", help="build the history again")
    args = parser.parse_args()
    home = pathlib.Path(tempfile.gettempdir()) / f"rayflow-ui-bench2-{args.runs}-{args.items}-{args.failed}"
    marker = home / "built.json"
    built = time.perf_counter()
    if args.fresh or not marker.exists() or time.time() - marker.stat().st_mtime > 6 * 3600:
        shutil.rmtree(home, ignore_errors=True)
        facts = build(home, args.runs, args.items, args.failed)
        marker.write_text(json.dumps(facts))
        print(f"built the history in {time.perf_counter() - built:.0f}s at {home}")
    else:
        facts = json.loads(marker.read_text())
        with RunStore(home)._connect() as db:  # the indexes of this checkout's schema (CREATE ... IF NOT EXISTS)
            db.executescript(SCHEMA)
        print(f"reusing the history at {home}")
    os.environ["RAYFLOW_HOME"] = str(home)
    from starlette.testclient import TestClient

    from rayflow.ui import create_app
    from rayflow.ui.queries import iso

    counted = Counted()
    app = create_app(home)
    patterns = [r.path_regex for r in app.routes if getattr(r, "path_regex", None) is not None]
    client = TestClient(app, base_url="http://127.0.0.1:4200")  # a Host the UI answers
    fail_every = args.items // max(args.failed, 1)
    names = {"map": MAP_RUN, "plain": f"b{args.runs // 2:011x}", "wide": facts["wide_run"], "item": fail_every - 1,
             "now": iso(time.time()), "day_ago": iso(time.time() - 86400)}
    rows: dict[str, dict] = {}
    for label, path in PAGES:
        url = path.format(**names)
        if args.only not in label or not any(p.match(urlsplit(url).path) for p in patterns):
            continue
        times, cpus, status, size = [], [], 200, 0
        for _ in range(args.repeat + 1):
            counted.n = 0
            start, start_cpu = time.perf_counter(), time.process_time()
            response = client.get(url)
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)  # the app runs in this process: a busy machine's waits left out
            status = response.status_code if response.status_code != 200 else status
            size = len(response.content)
        rows[label] = {"url": url if status == 200 else f"{url}  (answered {status})", "min": min(times[1:]),
                       "median": statistics.median(times[1:]), "cpu": min(cpus[1:]), "queries": counted.n, "kb": size / 1024}
    print(f"history: {args.runs} runs over {DAYS} days, {FLOWS} flows, a run of {WIDE} tasks, + one run of a "
          f"{args.items}-item map with {args.failed} failed items; server time, min and median of {args.repeat}")
    print(f"{'page':32s} {'min ms':>8s} {'med ms':>8s} {'cpu ms':>8s} {'sql':>5s} {'KiB':>6s}  url")
    for label, r in rows.items():
        print(f"{label:32s} {r['min'] * 1000:8.1f} {r['median'] * 1000:8.1f} {r['cpu'] * 1000:8.1f} {r['queries']:5d} {r['kb']:6.0f}  {r['url']}")
    found = plans(RunStore(home))
    for name, plan in found.items():
        print(f"plan {name:14s} {plan}")
    scans = sorted(name for name, plan in found.items() if "SCAN runs" in plan)
    print("aggregates that scan runs: " + (", ".join(scans) if scans else "none"))
    print(json.dumps({"runs": args.runs, "items": args.items, "failed_items": args.failed, "repeat": args.repeat,
                      "slowest_ms": round(max((r["min"] for r in rows.values()), default=0) * 1000, 1),
                      "ms": {k: round(r["min"] * 1000, 1) for k, r in rows.items()},
                      "cpu_ms": {k: round(r["cpu"] * 1000, 1) for k, r in rows.items()},
                      "plans": found, "scans_runs": scans}))


if __name__ == "__main__":
    main()
