"""A 10^6-item map across hosts: rayflow vs hand-written Ray on the same 3-host test bed.

    sudo python benchmarks/netbed_bench.py [--n 1000000] [--repeat 3]

Brings up the network-namespace test bed of the tests (tests/netbed.py: hosts h1, h2, h3 of
1 CPU each on 10.213.7.0/24, a Ray head on h1, token authentication on), runs the timing
driver on the head host (``ip netns exec rft-h1 python THIS --inner``), and removes the bed.
Needs root and ``ip``; run it by hand (it is not a test).

The work: f(x) = 2x + 1 over range(N), then the sum.  Contestants, one untimed warm-up each,
then --repeat rounds round-robin, each contestant's time the min of its rounds:

- rayflow: ``rf.reduce.sum(affine.map(items))`` in a flow (history and logs on, chunks
  adapted, the sum folded into the chunks); "rayflow_task_sum" sums in a task of its own,
  ``total(affine.map(items))``, which receives every value;
- Ray "lists": the items cut into 4 x CPUs list chunks, a ``ray.remote`` task per chunk
  returning its list of results, the driver sums the lists;
- Ray "fused": 32 list chunks, a task per chunk applying f and summing, the driver sums.

Prints a table, where rayflow's chunks ran (per node: chunks, items, seconds of their items,
from the chunk records of its timed runs; and the span from the first chunk's start to the
last one's end, against the run's time), and one JSON object on the last line (times, ratios
rayflow / each, the nodes that ran rayflow's last run's chunks, its chunk spread).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import secrets
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
FUSED_CHUNKS = 32


def affine(x: int) -> int:
    return 2 * x + 1


def total(xs: list) -> int:
    return sum(xs)


def inner(args: argparse.Namespace) -> None:
    """The timing driver, on the head host: joins the cluster, times each contestant."""
    import ray

    import rayflow as rf
    from rayflow.store import RunStore

    ray.init(address=args.address, logging_level="error")
    cpus = int(ray.cluster_resources().get("CPU", 0))
    t_affine, t_total = rf.task(affine), rf.task(total)
    data = list(range(args.n))
    run_ids: list[str] = []

    @rf.flow(name="netbed_affine")
    def affine_flow() -> int:  # the sum folded into the chunks (rf.reduce, core.reducers)
        return rf.reduce.sum(t_affine.map(data))

    @rf.flow(name="netbed_affine_task_sum")
    def task_sum_flow() -> int:  # the sum as a task of its own, which receives every value
        return t_total(t_affine.map(data))

    def rayflow_run() -> int:
        run = affine_flow.run()
        run_ids.append(run.run_id)
        return run.result()

    @ray.remote
    def chunk_list(xs: list) -> list:
        return [affine(x) for x in xs]

    @ray.remote
    def chunk_sum(xs: list) -> int:
        return sum(affine(x) for x in xs)

    def cut(chunks: int) -> list[list]:
        size = -(-len(data) // chunks)
        return [data[i:i + size] for i in range(0, len(data), size)]

    def ray_lists() -> int:
        return sum(sum(part) for part in ray.get([chunk_list.remote(c) for c in cut(4 * cpus)]))

    def ray_fused() -> int:
        return sum(ray.get([chunk_sum.remote(c) for c in cut(FUSED_CHUNKS)]))

    contestants = {"rayflow": rayflow_run, "rayflow_task_sum": task_sum_flow, "ray_lists": ray_lists, "ray_fused": ray_fused}
    times: dict[str, list[float]] = {name: [] for name in contestants}
    expected = args.n * args.n
    for name, fn in contestants.items():  # warm-up
        assert fn() == expected, name
    for _ in range(args.repeat):
        for name, fn in contestants.items():
            start = time.perf_counter()
            value = fn()
            times[name].append(time.perf_counter() - start)
            assert value == expected, (name, value)
    best = {name: min(ts) for name, ts in times.items()}
    spread = [chunk_spread(RunStore().run(run_id)) for run_id in run_ids[1:]]
    chunks = [c for c in RunStore().run(run_ids[-1])["chunks"] if c["task_key"] == "affine"]
    nodes = {c["node"] for c in chunks}
    print(f"{args.n:,} items, f(x) = 2x + 1 then a sum, on {len(ray.nodes())} hosts ({cpus} CPUs); "
          f"min of {args.repeat}")
    print(f"{'contestant':<12}{'seconds':>10}{'rayflow / it':>14}")
    for name, seconds in best.items():
        print(f"{name:<12}{seconds:>10.3f}{best['rayflow'] / seconds:>14.2f}")
    print(f"rayflow's last run: {len(chunks)} chunks on {len(nodes)} nodes")
    for row in spread:
        print(f"  run {row['run_s']:.3f}s, chunks from first start to last end {row['chunks_span_s']:.3f}s: "
              + ", ".join(f"{node[:6]} {c} chunks {items:,} items {busy:.3f}s" for node, (c, items, busy) in row["nodes"].items()))
    print(json.dumps({
        "bench": "netbed_map", "n": args.n, "hosts": len(ray.nodes()), "cpus": cpus, "repeat": args.repeat,
        "seconds": {k: round(v, 4) for k, v in best.items()}, "times": times,
        "ratio_vs_ray_lists": round(best["rayflow"] / best["ray_lists"], 3),
        "ratio_vs_ray_fused": round(best["rayflow"] / best["ray_fused"], 3),
        "ratio_vs_best_ray": round(best["rayflow"] / min(best["ray_lists"], best["ray_fused"]), 3),
        "rayflow_chunks": len(chunks), "rayflow_nodes": len(nodes), "rayflow_spread": spread,
    }))


def chunk_spread(run: dict) -> dict:
    """Where a run's map chunks ran: per node (chunks, items, seconds of their items), the span
    from the first chunk's start to the last one's end, and the run's own time."""
    rows = [c for c in run["chunks"] if c["task_key"] == "affine"]
    nodes: dict[str, list] = {}
    for c in rows:
        entry = nodes.setdefault(c["node"] or "?", [0, 0, 0.0])
        entry[0] += 1
        entry[1] += c["items"]
        entry[2] += c["finished_at"] - c["started_at"]
    return {
        "run_s": round(run["finished_at"] - run["started_at"], 4),
        "chunks_span_s": round(max(c["finished_at"] for c in rows) - min(c["started_at"] for c in rows), 4),
        "nodes": {node: (n, items, round(busy, 4)) for node, (n, items, busy) in sorted(nodes.items(), key=lambda kv: -kv[1][1])},
    }


def outer(args: argparse.Namespace) -> int:
    """Bring the bed up, run ``inner`` on the head host, take the bed down (also on a failure)."""
    sys.path.insert(0, str(REPO / "tests"))
    from netbed import NetBed, NetCluster, unavailable

    reason = unavailable()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    home = pathlib.Path(tempfile.mkdtemp(prefix="rft-bench-"))
    bed = NetBed(["h1", "h2", "h3"]).up()
    try:
        env = {"RAYFLOW_HOME": str(home),
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        with NetCluster(bed, ["h2", "h3"], token=secrets.token_hex(32), env=env) as cluster:
            argv = [sys.executable, __file__, "--inner", "--address", cluster.gcs, "--n", str(args.n),
                    "--repeat", str(args.repeat)]
            return subprocess.run(bed.argv("h1", argv), env=cluster.env_for(), check=False).returncode
    finally:
        bed.down()
        subprocess.run(["rm", "-rf", str(home)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10**6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args)
        return 0
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
