"""What a limit costs: a flow of N independent trivial tasks, untagged vs tagged with a limit
that never binds (slots = N); a map of M trivial items, untagged vs tagged (one gate call
per chunk); and rf.concurrency / rf.rate_limit calls inside one task.

    python benchmarks/limits_bench.py [--tasks 200] [--items 100000] [--calls 1000] [--repeat 3]

Prints a table (min of the repeats) and one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import ray

import rayflow as rf


def noop(i: int) -> int:
    return i


def flow_of(n: int, tags: set[str]) -> rf.Flow:
    task = rf.task(tags=tags)(noop)

    @rf.flow(name=f"limits_bench_{len(tags)}")
    def many() -> list:
        return [task.with_options(name=f"t{i}")(i) for i in range(n)]

    return many


def map_of(tags: set[str]) -> rf.Flow:
    task = rf.task(tags=tags)(noop)

    @rf.flow(name=f"limits_bench_map_{len(tags)}")
    def mapped(n: int) -> list:
        return task.map(range(n))

    return mapped


def best(fn, repeat: int) -> float:
    out = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    name = f"bench-{uuid.uuid4().hex[:6]}"
    rf.limits.set(name, args.tasks)
    rf.limits.set(name + "-rate", args.calls, per_second=1e9)
    plain, tagged = flow_of(args.tasks, set()), flow_of(args.tasks, {name})
    plain.run(), tagged.run()  # warm: actors and workers
    untagged_s = best(lambda: plain.run().result(), args.repeat)
    tagged_s = best(lambda: tagged.run().result(), args.repeat)
    map_plain, map_tagged = map_of(set()), map_of({name})
    map_plain.run(n=1000), map_tagged.run(n=1000)
    map_untagged_s = best(lambda: map_plain.run(n=args.items).result(), args.repeat)
    map_tagged_s = best(lambda: map_tagged.run(n=args.items).result(), args.repeat)

    def hold() -> None:
        for _ in range(args.calls):
            with rf.concurrency(name):
                pass

    def take() -> None:
        for _ in range(args.calls):
            rf.rate_limit(name + "-rate")

    hold_s, take_s = best(hold, args.repeat), best(take, args.repeat)
    per_task_ms = (tagged_s - untagged_s) / args.tasks * 1e3
    print(f"{args.tasks} trivial tasks: untagged {untagged_s:.3f} s, tagged with a limit {tagged_s:.3f} s "
          f"({per_task_ms:+.2f} ms per task)")
    print(f"a map of {args.items} trivial items: untagged {map_untagged_s:.3f} s, tagged {map_tagged_s:.3f} s "
          f"(ratio {map_tagged_s / map_untagged_s:.2f})")
    print(f"rf.concurrency enter+exit: {hold_s / args.calls * 1e3:.2f} ms; rf.rate_limit: {take_s / args.calls * 1e3:.2f} ms")
    print(json.dumps({
        "benchmark": "limits_bench", "tasks": args.tasks, "untagged_s": round(untagged_s, 3), "tagged_s": round(tagged_s, 3),
        "tag_overhead_ms_per_task": round(per_task_ms, 2), "items": args.items, "map_untagged_s": round(map_untagged_s, 3),
        "map_tagged_s": round(map_tagged_s, 3), "map_ratio": round(map_tagged_s / map_untagged_s, 2), "concurrency_ms": round(hold_s / args.calls * 1e3, 3),
        "rate_limit_ms": round(take_s / args.calls * 1e3, 3),
    }))


if __name__ == "__main__":
    main()
