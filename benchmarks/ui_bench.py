"""Server time of the UI's pages at scale: a history of 10,000 runs and a run with a 10^6-item map.

    python benchmarks/ui_bench.py [--runs 10000] [--items 1000000] [--repeat 5]

The 10,000 runs are written as history rows (what a HistoryRecorder writes:
a run row, two transitions, a graph); the map run is a real run (in-process
runner) of a trivial function over the items.  Each page is requested
through Starlette's test client (the app's own time, no network), min of
--repeat.  Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import rayflow as rf
from rayflow.store import RunStore


def _history(home: str, n: int) -> None:
    store = RunStore(home)
    now = time.time() - n
    runs, transitions, graphs = [], [], []
    for i in range(n):
        run_id = f"bench-{i:06d}"
        state = "FAILED" if i % 10 == 0 else "SUCCESS"
        runs.append((run_id, f"flow_{i % 7}", json.dumps({"i": i}), state, "", now + i, now + i + 0.5, None, '["a"]', 1))
        transitions.append((run_id, "a", 1, "RUNNING", 1, "", None, None, now + i, now + i, None, 1))
        transitions.append((run_id, "a", 2, state, 1, "boom" if state == "FAILED" else "", None, None, now + i + 0.5, now + i, now + i + 0.5, 1))
        graphs.append((run_id, json.dumps({"flow": f"flow_{i % 7}", "nodes": [{"key": "a", "name": "a", "kind": "task", "upstream": [], "wait_for": [], "conditions": []}]})))
    store.write(runs, transitions, [], [], graphs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="rayflow-ui-bench-")
    os.environ["RAYFLOW_HOME"] = home
    _history(home, args.runs)

    @rf.task
    def affine(x: int) -> int:
        return 2 * x + 1

    @rf.flow(name="big_map", runner="local", progress=False)
    def big_map():
        return affine.map(range(args.items))

    big = big_map.run()
    from starlette.testclient import TestClient

    from rayflow.ui import create_app

    client = TestClient(create_app(home), base_url="http://127.0.0.1:4200")  # a Host the UI answers
    pages = {
        "runs page (/)": "/",
        "runs page, filtered (/?state=FAILED)": "/?state=FAILED",
        "runs page 20 (/?page=20)": "/?page=20",
        "a plain run (/runs/bench-005000)": "/runs/bench-005000",
        f"the {args.items}-item map run": f"/runs/{big.run_id}",
        "flows page (/flows)": "/flows",
        "api: runs (/api/runs)": "/api/runs",
        "api: the map run": f"/api/runs/{big.run_id}",
    }
    rows = {}
    for label, path in pages.items():
        times = []
        for _ in range(args.repeat + 1):
            start = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - start)
            assert response.status_code == 200, (path, response.status_code)
        rows[label] = min(times[1:])
    chunks = len(RunStore(home).run(big.run_id)["chunks"])
    print(f"history: {args.runs} runs + one run of a {args.items}-item map ({chunks} chunk rows); min of {args.repeat}")
    print(f"{'page':44s} {'ms':>8s}")
    for label, seconds in rows.items():
        print(f"{label:44s} {seconds * 1000:8.1f}")
    print(json.dumps({"runs": args.runs, "items": args.items, "chunk_rows": chunks, "ms": {k: round(v * 1000, 1) for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
