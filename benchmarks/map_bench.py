"""Mapped workloads: rayflow .map vs hand-written Ray, same work, same Ray session.

    python benchmarks/map_bench.py [--quick] [--num-cpus 2]

Prints a table, then one JSON object on the last line.  Cases:

1. f(x) = 2x + 1 then a sum, N = 1e4, 1e5, 1e6: rayflow .map vs Ray tasks over
   list chunks (as many chunks as 4 x CPUs, about what rayflow converges to);
2. the same with batch=True vs Ray tasks over pyarrow arrays with pyarrow.compute;
3. a ~1 ms CPU-bound f, N = 1e4: rayflow vs chunked Ray, and the ideal N x 1 ms / CPUs;
4. two chained maps then a sum, N = 1e6, vs two rounds of chunked Ray tasks;
5. N = 1e7 through batch=True from a generator, with the driver's peak RSS
   (and the same at N = 1e6, to show it does not grow with N);
plus naive Ray, one task per item, at N = 1e4 for scale.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

import rayflow as rf


def affine(x: int) -> int:
    return 2 * x + 1


def affine_batch(xs: pa.Array) -> pa.Array:
    return pc.add(pc.multiply(xs, 2), 1)


def busy_1ms(x: int) -> int:
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return x


def total(xs: list) -> int:
    return sum(xs)


# Hand-written Ray: the same work, chunked by hand.
def chunk_affine(xs: list) -> list:
    return [affine(x) for x in xs]


def chunk_busy(xs: list) -> list:
    return [busy_1ms(x) for x in xs]


def chunk_arrow(xs: pa.Array) -> pa.Array:
    return affine_batch(xs)


def chunk_sum(xs: list) -> int:
    return sum(xs)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def hand_chunks(n: int, cpus: int) -> int:
    return max(1, math.ceil(n / (4 * cpus)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smaller N, for a smoke run")
    args = parser.parse_args()
    cpus = args.num_cpus
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="error")
    r_affine, r_busy, r_arrow, r_sum, r_item = (
        ray.remote(chunk_affine),
        ray.remote(chunk_busy),
        ray.remote(chunk_arrow),
        ray.remote(chunk_sum),
        ray.remote(affine),
    )
    ray.get([r_item.remote(i) for i in range(200)])  # warm the worker pool

    t_affine = rf.task(affine)
    t_batch = rf.task(batch=True)(affine_batch)
    t_busy = rf.task(busy_1ms)
    t_total = rf.task(total)

    rows = []

    def record(case, n, ours, theirs, ideal=None):
        rows.append(
            {
                "case": case,
                "n": n,
                "rayflow_s": round(ours, 4),
                "ray_s": round(theirs, 4) if theirs else None,
                "items_per_s": round(n / ours),
                "ratio": round(ours / theirs, 3) if theirs else None,
                "ideal_s": round(ideal, 4) if ideal else None,
                "ratio_to_ideal": round(ours / ideal, 3) if ideal else None,
            }
        )

    sizes = [10**4, 10**5] if args.quick else [10**4, 10**5, 10**6]
    expected = {n: n * n + n * 0 for n in sizes}  # sum(2x+1 for x < n) == n^2
    for n in sizes:
        data = list(range(n))

        @rf.flow(name=f"affine_{n}")
        def affine_flow():
            return t_total(t_affine.map(data))

        affine_flow()  # trace + warm
        ours, value = timed(lambda: affine_flow())
        assert value == expected[n], (value, expected[n])

        def by_hand():
            size = hand_chunks(n, cpus)
            parts = [r_affine.remote(data[i : i + size]) for i in range(0, n, size)]
            return sum(sum(p) for p in ray.get(parts))

        by_hand()
        theirs, value = timed(by_hand)
        assert value == expected[n]
        record("1 trivial map + sum", n, ours, theirs)

    for n in sizes:
        arr = pa.array(np.arange(n, dtype=np.int64))

        @rf.flow(name=f"batch_{n}")
        def batch_flow():
            return t_total(t_batch.map(arr))

        batch_flow()
        ours, value = timed(lambda: batch_flow())
        assert value == expected[n]

        def by_hand_arrow():
            size = hand_chunks(n, cpus)
            parts = [r_arrow.remote(arr.slice(i, size)) for i in range(0, n, size)]
            return sum(pc.sum(p).as_py() for p in ray.get(parts))

        by_hand_arrow()
        theirs, value = timed(by_hand_arrow)
        assert value == expected[n]
        record("2 batch=True + sum", n, ours, theirs)

    n = 2000 if args.quick else 10**4
    data = list(range(n))

    @rf.flow(name="busy")
    def busy_flow():
        return t_total(t_busy.map(data))

    ours, _ = timed(lambda: busy_flow())

    def by_hand_busy():
        size = max(1, n // (8 * cpus))
        return sum(sum(p) for p in ray.get([r_busy.remote(data[i : i + size]) for i in range(0, n, size)]))

    theirs, _ = timed(by_hand_busy)
    record("3 1 ms CPU-bound map", n, ours, theirs, ideal=n * 0.001 / cpus)

    n = 10**5 if args.quick else 10**6
    data = list(range(n))

    @rf.flow(name="chained")
    def chained_flow():
        return t_total(t_affine.map(t_affine.map(data)))

    chained_flow()
    ours, value = timed(lambda: chained_flow())

    def by_hand_chained():
        size = hand_chunks(n, cpus)
        first = [r_affine.remote(data[i : i + size]) for i in range(0, n, size)]
        second = [r_affine.remote(ref) for ref in first]
        return sum(sum(p) for p in ray.get(second))

    by_hand_chained()
    theirs, expected_chained = timed(by_hand_chained)
    assert value == expected_chained
    record("4 two chained maps + sum", n, ours, theirs)

    memory = {}
    for n in ([10**5, 10**6] if args.quick else [10**6, 10**7]):

        @rf.flow(name=f"big_{n}")
        def big_flow():
            return t_total(t_batch.map(i for i in range(n)))

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        seconds, value = timed(lambda: big_flow())
        assert value == n * n
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        memory[n] = {"seconds": round(seconds, 3), "driver_peak_rss_mb": round(after / 1024, 1),
                     "peak_growth_mb": round((after - before) / 1024, 1)}
        record("5 batch=True from a generator", n, seconds, None)

    n = 10**4
    naive, _ = timed(lambda: sum(ray.get([r_item.remote(i) for i in range(n)])))
    record("naive Ray, one task per item", n, naive, None)

    print(f"{'case':<32} {'N':>9} {'rayflow s':>10} {'ray s':>8} {'ratio':>6} {'items/s':>11} {'ideal s':>8}")
    for r in rows:
        print(
            f"{r['case']:<32} {r['n']:>9} {r['rayflow_s']:>10.3f} {(r['ray_s'] or 0):>8.3f} "
            f"{(r['ratio'] or 0):>6.2f} {r['items_per_s']:>11} {(r['ideal_s'] or 0):>8.3f}"
        )
    for n, m in memory.items():
        print(f"driver peak RSS after N={n}: {m['driver_peak_rss_mb']} MB (grew {m['peak_growth_mb']} MB)")
    print(json.dumps({"num_cpus": cpus, "rows": rows, "memory": memory}))
    ray.shutdown()


if __name__ == "__main__":
    main()
