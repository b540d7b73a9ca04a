"""I/O-bound maps: async items on one event loop per chunk, and plain items on threads, vs a
sync map and the best hand-written Ray on the same work, in one Ray session.

    python benchmarks/async_bench.py [--items 200] [--seconds 0.2] [--repeat 3] [--num-cpus 2]

Each item waits ``--seconds`` (asyncio.sleep / time.sleep), as a call to an API would.
Contestants:

- rayflow async: ``@rf.task async def`` mapped (32 items of a chunk at once, the default);
- rayflow async, concurrency=100: as many at once as the hand-written gather below;
- rayflow async, num_cpus=0.25: 32 at once per chunk, four chunks sharing a CPU;
- rayflow threads: a plain task with ``concurrency=32``;
- rayflow sync: the plain task with no concurrency (one item at a time per CPU), run once;
- Ray asyncio: hand-written, one Ray task per CPU, each ``asyncio.gather`` over its share
  (all of it at once: the best hand-written Ray);
- Ray asyncio, 32 at once: the same with a semaphore of 32 per task (rayflow's default).

Prints a table (min of the repeats, items/s) and one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import ray

import rayflow as rf


@rf.task
async def wait_async(i: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return i


@rf.task
def wait_sync(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


@rf.flow
def async_map(n: int, seconds: float) -> list:
    return wait_async.map(range(n), seconds=rf.unmapped(seconds))


@rf.flow
def wide_map(n: int, seconds: float) -> list:
    return wait_async.with_options(concurrency=100).map(range(n), seconds=rf.unmapped(seconds))


@rf.flow
def shared_cpu_map(n: int, seconds: float) -> list:
    return wait_async.with_options(num_cpus=0.25).map(range(n), seconds=rf.unmapped(seconds))


@rf.flow
def thread_map(n: int, seconds: float) -> list:
    return wait_sync.with_options(concurrency=32).map(range(n), seconds=rf.unmapped(seconds))


@rf.flow
def sync_map(n: int, seconds: float) -> list:
    return wait_sync.map(range(n), seconds=rf.unmapped(seconds))


@ray.remote
def gather_share(items: list[int], seconds: float, at_once: int | None = None) -> list[int]:
    slots = asyncio.Semaphore(at_once or len(items) or 1)

    async def one(i: int) -> int:
        async with slots:
            await asyncio.sleep(seconds)
        return i

    async def share() -> list[int]:
        return list(await asyncio.gather(*(one(i) for i in items)))

    return asyncio.run(share())


def ray_asyncio(n: int, seconds: float, cpus: int, at_once: int | None = None) -> list[int]:
    shares = [list(range(n))[k::cpus] for k in range(cpus)]
    return [i for part in ray.get([gather_share.remote(s, seconds, at_once) for s in shares]) for i in part]


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="warning")
    n, s = args.items, args.seconds
    async_map.run(n=4, seconds=0.0)  # the driver's actor and workers, started once
    results = {
        "rayflow async": timed(lambda: async_map.run(n=n, seconds=s).result(), args.repeat),
        "rayflow async, concurrency=100": timed(lambda: wide_map.run(n=n, seconds=s).result(), args.repeat),
        "rayflow async, num_cpus=0.25": timed(lambda: shared_cpu_map.run(n=n, seconds=s).result(), args.repeat),
        "rayflow threads": timed(lambda: thread_map.run(n=n, seconds=s).result(), args.repeat),
        "Ray asyncio (hand-written)": timed(lambda: ray_asyncio(n, s, args.num_cpus), args.repeat),
        "Ray asyncio, 32 at once": timed(lambda: ray_asyncio(n, s, args.num_cpus, 32), args.repeat),
        "rayflow sync": timed(lambda: sync_map.run(n=n, seconds=s).result(), 1),
    }
    ideal_sync = n * s / args.num_cpus
    print(f"{n} items of {s:g} s on {args.num_cpus} CPUs (one at a time per CPU: {ideal_sync:.1f} s)")
    print(f"{'contestant':<32}{'seconds':>10}{'items/s':>10}")
    for name, seconds in results.items():
        print(f"{name:<32}{seconds:>10.2f}{n / seconds:>10.0f}")
    print(json.dumps({
        "benchmark": "async_bench", "items": n, "seconds_per_item": s, "cpus": args.num_cpus,
        **{name.split(" (")[0].replace(", ", "_").replace(" ", "_"): round(t, 3) for name, t in results.items()},
        "async_vs_sync": round(results["rayflow sync"] / results["rayflow async"], 1),
        "async_vs_ray": round(results["rayflow async"] / results["Ray asyncio (hand-written)"], 2),
        "async_vs_ray_32_at_once": round(results["rayflow async"] / results["Ray asyncio, 32 at once"], 2),
        "wide_vs_ray": round(results["rayflow async, concurrency=100"] / results["Ray asyncio (hand-written)"], 2),
    }))


if __name__ == "__main__":
    main()
