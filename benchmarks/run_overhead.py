"""Fixed cost of a run and per-task overhead: rayflow vs hand-written Ray, same session.

    python benchmarks/run_overhead.py [--tasks 1000] [--many 10000] [--repeat 5] [--num-cpus 2]

Prints a table, then one JSON object on the last line.

- fixed cost: a one-task flow (Ray already started); "first run" includes
  creating the driver's FlowRunActor, "warm run" is the min of the repetitions
  afterwards; compared with one hand-written ``ray.get(f.remote())`` (min too).
- per-task overhead: a flow of N trivial independent tasks whose result is
  the list of their values, against ``ray.get([f.remote(i) for i in ...])``,
  at N = --tasks and N = --many (10,000: is the cost per task flat?), min of
  the repetitions, each pair run round-robin (rayflow, then Ray, per round).
- tracing: building the N-node graph from the flow body with a parameter
  value (min of repeats), uncached (a flow with ``cache_graph=False``: the
  body is traced on every call) and cached (the same value again, served
  from the graph cache), next to compiling it into a plan.
"""

from __future__ import annotations

import argparse
import json
import time

import ray

import rayflow as rf


def noop(i: int) -> int:
    return i


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--many", type=int, default=10000, help="the larger flow of independent tasks (0: skip)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    n = args.tasks

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="error")
    remote_noop = ray.remote(noop)
    ray.get([remote_noop.remote(i) for i in range(200)])  # warm the worker pool for both sides

    task = rf.task(noop)

    @rf.flow
    def one():
        return task(1)

    first = timed(lambda: one(), 1)[0]
    warm, hand_one = [], []
    for _ in range(max(args.repeat, 5)):  # round-robin: both sides see the same load
        warm += timed(lambda: one(), 1)
        hand_one += timed(lambda: ray.get(remote_noop.remote(1)), 1)

    def flow_of(size: int):
        @rf.flow(name=f"many_{size}")
        def many():
            return [task(i) for i in range(size)]

        assert many() == list(range(size))  # also traces the graph once (cached afterwards)
        return many

    def pair(size: int, flow=None) -> tuple[list[float], list[float]]:
        flow = flow or flow_of(size)
        ours, theirs = [], []
        for _ in range(args.repeat):
            ours += timed(lambda: flow(), 1)
            theirs += timed(lambda: ray.get([remote_noop.remote(i) for i in range(size)]), 1)
        return ours, theirs

    many = flow_of(n)
    flow_many, hand_many = pair(n, many)
    big = pair(args.many) if args.many else None
    from rayflow.engine.plan import compile_plan

    @rf.flow
    def sized(n: int):
        return [task(i) for i in range(n)]

    @rf.flow(cache_graph=False)
    def sized_uncached(n: int):
        return [task(i) for i in range(n)]

    trace_cold = timed(lambda: sized_uncached.graph_for(n=n), max(args.repeat, 5))
    sized.graph_for(n=n)
    trace_cached = timed(lambda: sized.graph_for(n=n), max(args.repeat, 5))
    compile_s = min(timed(lambda: compile_plan(many.graph), max(args.repeat, 3)))

    results = {
        "num_cpus": args.num_cpus,
        "tasks": n,
        "fixed_cost_first_run_s": round(first, 4),
        "fixed_cost_warm_run_s": round(min(warm), 5),
        "hand_written_one_task_s": round(min(hand_one), 5),
        "flow_many_s": round(min(flow_many), 4),
        "hand_written_many_s": round(min(hand_many), 4),
        "compile_many_s": round(compile_s, 4),
        "trace_many_s": round(min(trace_cold), 5),
        "trace_many_cached_s": round(min(trace_cached), 6),
    }
    results["per_task_overhead_ms"] = round(
        (results["flow_many_s"] - results["hand_written_many_s"]) / n * 1000, 4
    )
    results["ratio_many"] = round(results["flow_many_s"] / results["hand_written_many_s"], 2)
    results["fixed_cost_extra_ms"] = round((results["fixed_cost_warm_run_s"] - results["hand_written_one_task_s"]) * 1000, 2)
    if big is not None:
        results["many_big"] = args.many
        results["flow_many_big_s"] = round(min(big[0]), 4)
        results["hand_written_many_big_s"] = round(min(big[1]), 4)
        results["ratio_many_big"] = round(results["flow_many_big_s"] / results["hand_written_many_big_s"], 2)
        results["ms_per_task"] = round(results["flow_many_s"] / n * 1000, 4)
        results["ms_per_task_big"] = round(results["flow_many_big_s"] / args.many * 1000, 4)

    rows = [
        ("one-task run, first (creates actor)", results["fixed_cost_first_run_s"], None),
        ("one-task run, warm (min)", results["fixed_cost_warm_run_s"], results["hand_written_one_task_s"]),
        (f"{n} independent trivial tasks (min)", results["flow_many_s"], results["hand_written_many_s"]),
    ]
    if big is not None:
        rows.append((f"{args.many} independent trivial tasks (min)", results["flow_many_big_s"], results["hand_written_many_big_s"]))
    print(f"{'work':<40} {'rayflow s':>10} {'ray s':>10} {'ratio':>7}")
    for label, ours, theirs in rows:
        ratio = f"{ours / theirs:.2f}" if theirs else "-"
        print(f"{label:<40} {ours:>10.4f} {(theirs or 0):>10.4f} {ratio:>7}")
    print(f"min of {max(args.repeat, 5)} (one task) and {args.repeat} (many), round-robin in one Ray session")
    if big is not None:
        print(f"rayflow per task: {results['ms_per_task']} ms at {n}, {results['ms_per_task_big']} ms at {args.many}")
    print(f"compile of the {n}-task plan: {compile_s:.4f}s; overhead per task: {results['per_task_overhead_ms']} ms")
    print(
        f"tracing the {n}-node flow body: {results['trace_many_s'] * 1000:.2f} ms uncached, "
        f"{results['trace_many_cached_s'] * 1e6:.1f} us from the graph cache"
    )
    print(json.dumps(results))
    ray.shutdown()


if __name__ == "__main__":
    main()
