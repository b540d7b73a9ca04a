"""The artifacts' pages at scale: a history with 10^4 keys of 10 versions each (10^5 keyed rows)
and one run with 10^5 artifacts of its own; each page's server time (Starlette's test client in
this process: the app's time, no network), the median of several requests.

    python benchmarks/artifacts_bench.py [--keys 10000] [--versions 10] [--run-artifacts 100000] [--repeat 5]

The goal is every page under 300 ms on the 2-core development machine; this measures it, no
test asserts it (timings depend on the machine and its load).  Prints a table and one JSON
object on the last line.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import time

from rayflow.store import RunStore


def build(home: pathlib.Path, keys: int, versions: int, run_artifacts: int) -> None:
    store = RunStore(home)
    now = time.time()
    store.write([("big-run", "bench", "{}", "SUCCESS", "", now, now + 1, None, '["t"]', 1)], [], [])
    table = json.dumps({"columns": ["a", "b"], "rows": [[i, f"v{i}"] for i in range(50)], "total_rows": 50, "total_columns": 2})
    for v in range(versions):
        run_id = f"run-{v}"
        store.write([(run_id, "bench", "{}", "SUCCESS", "", now, now + 1, None, '["t"]', 1)], [], [])
        rows = [(run_id, 1, now + v, "table", f"key-{k}", "t", None, "50 rows × 2 columns", table, None) for k in range(keys)]
        for i in range(0, len(rows), 5000):
            store.write([], [], [], artifacts=rows[i:i + 5000])
    rows = [
        ("big-run", 1, now, "markdown", None, f"t{i % 10}", i, f"item {i}", json.dumps({"text": f"item **{i}**"}), None)
        for i in range(run_artifacts)
    ]
    for i in range(0, len(rows), 10000):
        store.write([], [], [], artifacts=rows[i:i + 10000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--run-artifacts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from starlette.testclient import TestClient

    from rayflow.ui import create_app

    home = pathlib.Path(tempfile.mkdtemp(prefix="rayflow-artifacts-bench-"))
    started = time.perf_counter()
    build(home, args.keys, args.versions, args.run_artifacts)
    built = time.perf_counter() - started
    client = TestClient(create_app(home), base_url="http://127.0.0.1:4200")
    middle = args.keys // 2
    pages = {
        "/artifacts": "/artifacts",
        "/artifacts?page=100": "/artifacts?page=100",
        "/artifacts/{key}": f"/artifacts/key-{middle}",
        "/artifacts/{key}?version=1": f"/artifacts/key-{middle}?version=1",
        "/runs/{id}/artifacts": "/runs/big-run/artifacts",
        "/runs/{id}/artifacts?task=t3&page=50": "/runs/big-run/artifacts?task=t3&page=50",
        "/api/artifacts": "/api/artifacts",
        "/api/runs/{id}/artifacts": "/api/runs/big-run/artifacts",
    }
    results = {}
    for name, url in pages.items():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            answer = client.get(url)
            times.append(time.perf_counter() - t0)
            assert answer.status_code == 200, (url, answer.status_code)
        results[name] = round(statistics.median(times) * 1000, 1)
    print(f"history: {args.keys} keys x {args.versions} versions, a run with {args.run_artifacts} artifacts (built in {built:.0f} s)")
    print(f"{'page':45} {'ms (median)':>12}")
    for name, ms in results.items():
        print(f"{name:45} {ms:>12}")
    print(json.dumps({"keys": args.keys, "versions": args.versions, "run_artifacts": args.run_artifacts, "ms": results}))


if __name__ == "__main__":
    main()
