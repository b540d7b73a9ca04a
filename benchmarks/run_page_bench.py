"""Server time of a run's page (``/runs/{id}``) at scale, and its graph layout's time and quality.

    python benchmarks/run_page_bench.py [--nodes 500] [--items 1000000] [--failed-every 100] [--repeat 5]

Real runs (in-process runner): a flow of ``--nodes`` tasks (parallel chains that cross-link,
fanning in to one), and a map of ``--items`` items of which every ``--failed-every``-th fails
(10^4 failed items of 10^6 by default).  Each page is requested through Starlette's test
client (the app's own time, no network), min of ``--repeat``, as wall time and as
the process's CPU time (which a machine shared with other work does not inflate).  Then the layout alone on
generated DAGs of 500, 1,000 and 2,000 nodes: its CPU time and its edge crossings next to the
one-pass layout it replaced.  Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time

import rayflow as rf


def chains(n: int, seed: int = 3) -> tuple[list[str], dict[str, list[str]]]:
    """About ``n`` nodes: chains of 12 from one source, some linked across, all into one sink;
    listed by depth, the chains shuffled (a plan's order need not group them)."""
    rng = random.Random(seed)
    width = max(1, (n - 2) // 12)
    deps: dict[str, list[str]] = {"src": []}
    for c in range(width):
        for i in range(12):
            deps[f"c{c}_{i}"] = [f"c{c}_{i - 1}" if i else "src"] + ([f"c{rng.randrange(width)}_{i - 2}"] if i > 2 and rng.random() < 0.1 else [])
    keys = ["src", *sorted((k for k in deps if k != "src"), key=lambda k: (int(k.split("_")[1]), rng.random()))]
    deps["sink"] = [f"c{c}_11" for c in range(width)]
    return [*keys, "sink"], deps


def one_pass(keys: list[str], deps: dict[str, list[str]]) -> list:
    """The layout before this one (rows by longest path, one barycenter pass, straight edges), as drawn paths."""
    layer: dict[str, int] = {}
    rows: dict[int, list[str]] = {}
    for k in keys:
        layer[k] = 1 + max((layer[d] for d in deps[k]), default=-1)
        rows.setdefault(layer[k], []).append(k)
    x: dict[str, float] = {}
    for depth in sorted(rows):
        if depth:
            rows[depth].sort(key=lambda k: sum(x[d] for d in deps[k]) / len(deps[k]) if deps[k] else 0.0)
        for i, k in enumerate(rows[depth]):
            x[k] = i
    return [((d, k), [(layer[d], x[d]), (layer[k], x[k])]) for k in keys for d in deps[k]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--failed-every", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="rayflow-run-page-bench-")
    os.environ["RAYFLOW_HOME"] = home

    @rf.task
    def step(*xs: int) -> int:
        return sum(xs) + 1

    @rf.task
    def check(x: int) -> int:
        if x % args.failed_every == 0:
            raise ValueError(f"item {x} is a multiple of {args.failed_every}")
        return x

    keys, deps = chains(args.nodes)

    @rf.flow(name="wide", runner="local", progress=False)
    def wide():
        futures: dict[str, object] = {}
        for k in keys:
            futures[k] = step(*[futures[d] for d in deps[k]])
        return futures["sink"]

    @rf.flow(name="big_map", runner="local", progress=False)
    def big_map():
        return check.with_options(min_success_ratio=0.5).map(range(args.items))

    started = time.perf_counter()
    graph_run = wide.run()
    graph_s = time.perf_counter() - started
    started = time.perf_counter()
    map_run = big_map.run()
    map_s = time.perf_counter() - started
    from starlette.testclient import TestClient

    from rayflow.ui import create_app
    from rayflow.ui.svg_layout import drawn_crossings, layered

    client = TestClient(create_app(home), base_url="http://127.0.0.1:4200")
    pages = {
        f"run of {len(keys)} tasks": f"/runs/{graph_run.run_id}",
        f"run of a {args.items}-item map": f"/runs/{map_run.run_id}",
        "  its logs, searched (?q=multiple)": f"/runs/{map_run.run_id}?q=multiple",
        "  its live tail (/logs?after=1)": f"/runs/{map_run.run_id}/logs?after=1",
    }
    rows, cpu = {}, {}
    for label, path in pages.items():
        times, cpus = [], []
        for _ in range(args.repeat + 1):
            start, start_cpu = time.perf_counter(), time.process_time()
            response = client.get(path)
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)  # the app runs in this process: its CPU time, not a busy machine's waits
            assert response.status_code == 200, (path, response.status_code)
        rows[label], cpu[label] = min(times[1:]), min(cpus[1:])
    layouts = {}
    for n in (500, 1000, 2000):
        k, d = chains(n)
        start = time.process_time()
        done = layered(k, d)
        seconds = time.process_time() - start
        order = done.order
        new = [((a, b), [(done.layer[p], order[p]) for p in [a, *chain, b]]) for (a, b), chain in done.routes.items()]
        layouts[n] = {"ms": round(seconds * 1000, 1), "crossings": drawn_crossings(new) if n <= 500 else None,
                      "crossings_before": drawn_crossings(one_pass(k, d)) if n <= 500 else None}
    print(f"runs took {graph_s:.1f}s ({len(keys)} tasks) and {map_s:.1f}s ({args.items} items); page min of {args.repeat}")
    print(f"{'page':44s} {'ms':>8s} {'cpu ms':>8s}")
    for label, seconds in rows.items():
        print(f"{label:44s} {seconds * 1000:8.1f} {cpu[label] * 1000:8.1f}")
    for n, row in layouts.items():
        print(f"layout of ~{n} nodes: {row['ms']} cpu ms; crossings {row['crossings']} (one-pass layout: {row['crossings_before']})")
    print(json.dumps({"ms": {k.strip(): round(v * 1000, 1) for k, v in rows.items()},
                      "cpu_ms": {k.strip(): round(v * 1000, 1) for k, v in cpu.items()}, "layout": layouts}))


if __name__ == "__main__":
    main()
