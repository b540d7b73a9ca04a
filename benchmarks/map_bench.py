"""Mapped workloads: rayflow .map vs hand-written Ray and the peers, same work, same process.

    python benchmarks/map_bench.py [--quick] [--repeat 3] [--num-cpus 2]

Every contestant gets one untimed warm-up call, then the repetitions run
round-robin (one of each contestant per round) and each contestant's time is
the min of --repeat rounds (default 3).  Prints a table, then one JSON object
on the last line with every row, every contestant's times and the ratios
(rayflow's time / theirs: above 1 means rayflow is slower).

Contestants:

- rayflow: ``rf.task`` / ``.map`` in a flow, run history and logs on, summed by ``rf.reduce.sum``
  (folded into the map's chunks: core.reducers); case 1 also times the sum as a task of one's
  own, which receives every value ("task sum", a line under the table);
- Ray "lists": the hand-written baseline this script always had: the items
  cut into 4 x CPUs list chunks, one ``ray.remote`` task per chunk returning
  its list of results, the driver sums the lists;
- Ray "fused": what a Ray expert writes: the items cut into 32 list chunks,
  one task per chunk that applies f to its items *and* sums them, the driver
  sums the 32 partial sums (for two chained maps the task applies both);
- Dask futures ("dask fut"): the fair Dask peer, what a Dask expert writes, as "fused" is for
  Ray: the same 32 list chunks, ``client.map(fused, chunks, pure=False)`` then a gather of the
  partial sums;
- Dask bag: ``dask.bag.from_sequence(items, npartitions=32).map(f).sum()``, Dask's
  highest-level and slowest API for this, kept for comparison.  Both Dask peers run on one
  ``LocalCluster(n_workers=CPUs, threads_per_worker=1, processes=True)`` started once (skipped,
  with a line saying why, if dask is not installed: ``pip install -e '.[bench]'``);
- mp: ``multiprocessing.Pool(CPUs).map(f, items, chunksize=ceil(N / 32))``
  then ``sum`` (started once, before Ray);
- Ray Data, the Ray-native peer, at N = 1e6 of case 1 only (its start-up is seconds of the
  small cases): ``Dataset.map`` over the same items ("rdata map") and ``map_batches`` of f
  vectorised over numpy batches ("rdata mb"), each summed from ``iter_batches`` (its best form);
  and at N = 1e7 (not with --quick) ``map_batches`` only (``map`` takes ~9 s at 1e6), against
  rayflow per item and ``batch=True`` and Ray fused (a line under the table).
The peers are built in bench_peers.py.

Ratios are taken against the *best* (fastest) hand-written Ray variant of
each case, and separately against each Dask peer and against multiprocessing.

Cases:

1. f(x) = 2x + 1 then a sum, N = 1e4, 1e5, 1e6: all contestants;
2. the same with batch=True (pyarrow.compute on Arrow slices) vs Ray tasks over
   Arrow slices: the array is put in the object store once and each task
   slices it zero-copy ("lists": 4 x CPUs tasks returning their arrays, summed
   with pc.sum; "fused": 2 x CPUs tasks returning pc.sum of their slice).
   Passing ``arr.slice(...)`` as an argument instead would pickle the whole
   parent buffer once per task.  rayflow's sum is ``rf.reduce.sum``, folded
   into the map's chunks (each sums its column in numpy, as "fused" sums its
   slice, and the parts are added up in the orchestrator); the sum as a
   ``batch=True`` task of its own, which receives the map's values as one
   Arrow array (``pc.sum``), is timed beside it ("task sum");
3. a ~1 ms CPU-bound f, N = 1e4: rayflow vs both Ray variants, and the ideal
   N x 1 ms / CPUs;
4. two chained maps then a sum, N = 1e6: all contestants ("lists" runs two
   rounds of tasks; the Dask bag fuses the two maps per partition itself, Dask futures
   apply both in each chunk as "fused" does; mp runs
   two ``pool.map`` calls); rayflow runs the chain fused (core.fusion), and is also compared
   with "two-pass" Ray (chunks of f as lists, then a task per list applying g and summing:
   the issue's baseline), with the same chain unfused (``fuse=False``) and with one rayflow
   map of the same size (a line under the table);
5. N = 1e7 through batch=True from a generator, summed by a batch=True task, with the driver's peak RSS
   (and the same at N = 1e6, to show it does not grow with N); run first,
   before any bigger allocation has raised the driver's peak;
plus naive Ray, one task per item, at N = 1e4 for scale.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

import rayflow as rf
from bench_case import Bench
from bench_table import print_ray_data, print_table
from bench_peers import Dask, bag_or_none, chunk_size, futures_or_none, mp_map, ray_data_map, ray_data_map_batches

FUSED_CHUNKS = 32  # the fused hand-written Ray baseline, and the peers' partitions


def affine(x: int) -> int:
    return 2 * x + 1


def affine_batch(xs: pa.Array) -> pa.Array:
    return pc.add(pc.multiply(xs, 2), 1)


def affine_batch_np(xs: np.ndarray) -> np.ndarray:
    return 2 * xs + 1


def busy_1ms(x: int) -> int:
    end = time.perf_counter() + 0.001
    while time.perf_counter() < end:
        pass
    return x


def total(xs: list) -> int:
    return sum(xs)


def total_arrow(xs: pa.Array) -> int:
    return pc.sum(xs).as_py()


# Hand-written Ray: the same work, chunked by hand.
def chunk_affine(xs: list) -> list:
    return [affine(x) for x in xs]


def chunk_busy(xs: list) -> list:
    return [busy_1ms(x) for x in xs]


def fused_affine(xs: list) -> int:
    return sum(affine(x) for x in xs)


def fused_affine_twice(xs: list) -> int:
    return sum(affine(affine(x)) for x in xs)


def fused_busy(xs: list) -> int:
    return sum(busy_1ms(x) for x in xs)


def arrow_slice(whole: pa.Array, offset: int, length: int) -> pa.Array:
    return affine_batch(whole.slice(offset, length))


def arrow_slice_sum(whole: pa.Array, offset: int, length: int) -> int:
    return pc.sum(affine_batch(whole.slice(offset, length))).as_py()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-cpus", type=int, default=2, help="Ray CPUs, dask workers and pool processes")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions per contestant (min is kept)")
    parser.add_argument("--quick", action="store_true", help="smaller N, for a smoke run")
    parser.add_argument("--cases", default="1,2,3,4,5,naive", help="which cases to run, by number (default: all)")
    parser.add_argument("--only-ray", action="store_true", help="rayflow and hand-written Ray only (no Dask, mp, Ray Data)")
    parser.add_argument("--sizes", default="", help="cases 1 and 2 at these N only, e.g. 10000,1000000 (default: all)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    cpus = args.num_cpus
    cases = set(args.cases.split(","))
    started = time.perf_counter()

    # The pool first: forked before Ray or dask start any thread in this process.
    pool = multiprocessing.Pool(cpus)
    pool.map(affine, range(1000))

    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="error")
    r_affine, r_busy, r_item = ray.remote(chunk_affine), ray.remote(chunk_busy), ray.remote(affine)
    r_fused, r_fused_twice, r_fused_busy = (
        ray.remote(fused_affine),
        ray.remote(fused_affine_twice),
        ray.remote(fused_busy),
    )
    r_arrow, r_arrow_sum = ray.remote(arrow_slice), ray.remote(arrow_slice_sum)
    ray.get([r_item.remote(i) for i in range(200)])  # warm the worker pool

    t_affine = rf.task(affine)
    t_batch = rf.task(batch=True)(affine_batch)
    t_busy = rf.task(busy_1ms)
    t_total = rf.task(total)
    t_total_arrow = rf.task(batch=True)(total_arrow)  # a batch task gets a map's values as one Arrow array

    bench = Bench(args.repeat, only_ray=args.only_ray)

    # Case 5 first: the driver's peak RSS (ru_maxrss) only says something about
    # these runs while no bigger case (a 1e6-item list, dask's graph of it) has
    # raised the peak already.
    memory = {}
    for n in ([10**5, 10**6] if args.quick else [10**6, 10**7]) if "5" in cases else []:

        @rf.flow(name=f"big_{n}")
        def big_flow():
            return t_total_arrow(t_batch.map(i for i in range(n)))

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        bench.case("5 batch=True from a generator", n, {"rayflow": big_flow}, expected=n * n, warm=False)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        memory[n] = {
            "seconds": bench.rows[-1]["rayflow_s"],
            "driver_peak_rss_mb": round(after / 1024, 1),
            "peak_growth_mb": round((after - before) / 1024, 1),
        }

    dask, dask_skipped = Dask.start(cpus) if cases & {"1", "4"} and not args.only_ray else (None, "not in --cases, or --only-ray")
    if dask_skipped:
        print(f"peer dask skipped: {dask_skipped}")

    def ray_lists(data: list, chunks: int, rounds: int = 1) -> Callable[[], int]:
        def run() -> int:
            n = len(data)
            size = chunk_size(n, chunks)
            refs = [r_affine.remote(data[i : i + size]) for i in range(0, n, size)]
            for _ in range(rounds - 1):
                refs = [r_affine.remote(ref) for ref in refs]
            return sum(sum(part) for part in ray.get(refs))

        return run

    def ray_fused(data: list, remote, chunks: int = FUSED_CHUNKS) -> Callable[[], int]:
        def run() -> int:
            n = len(data)
            size = chunk_size(n, chunks)
            return sum(ray.get([remote.remote(data[i : i + size]) for i in range(0, n, size)]))

        return run

    sizes = [10**4, 10**5] if args.quick else [10**4, 10**5, 10**6]
    if args.sizes:
        sizes = [int(float(s)) for s in args.sizes.split(",")]
    for n in [s for s in sizes if s < 10**7] if "1" in cases else []:
        data = list(range(n))
        peers = {}
        if n == 10**6:
            peers = {
                "ray_data_map": ray_data_map(data, affine),
                "ray_data_map_batches": ray_data_map_batches(np.arange(n, dtype=np.int64), affine_batch_np),
            }

        @rf.flow(name=f"affine_{n}")
        def affine_flow():  # the sum folded into the map's chunks (core.reducers)
            return rf.reduce.sum(t_affine.map(data))

        @rf.flow(name=f"affine_task_{n}")
        def affine_task_flow():  # the sum as a task of one's own, which receives every value
            return t_total(t_affine.map(data))

        bench.case(
            "1 trivial map + sum",
            n,
            {
                "rayflow": affine_flow,
                "rayflow_task_sum": affine_task_flow,
                "ray_lists": ray_lists(data, 4 * cpus),
                "ray_fused": ray_fused(data, r_fused),
                "dask_futures": futures_or_none(dask, data, fused_affine, FUSED_CHUNKS),
                "dask_bag": bag_or_none(dask, data, affine, FUSED_CHUNKS),
                "mp": mp_map(pool, data, affine, FUSED_CHUNKS),
                **peers,
            },
            expected=n * n,  # sum(2x + 1 for x < n)
        )

    if "1" in cases and not args.quick and (not args.sizes or 10**7 in sizes):  # 10^7: rayflow, per item and batch=True, against Ray fused and Ray Data map_batches
        n = 10**7  # (Ray Data's per-row map takes about 9 s at 10^6 here: not run at 10^7; nor the Dask and mp peers)
        data = list(range(n))
        arr = pa.array(np.arange(n, dtype=np.int64))

        @rf.flow(name="affine_1e7")
        def big_affine_flow():
            return rf.reduce.sum(t_affine.map(data))

        @rf.flow(name="batch_1e7")
        def big_batch_flow():
            return t_total_arrow(t_batch.map(arr))

        bench.case(
            "1 trivial map + sum",
            n,
            {
                "rayflow": big_affine_flow,
                "rayflow_batch": big_batch_flow,
                "ray_fused": ray_fused(data, r_fused),
                "ray_data_map_batches": ray_data_map_batches(np.arange(n, dtype=np.int64), affine_batch_np),
            },
            expected=n * n,
            warm=False,
        )
        del data, arr

    for n in [s for s in sizes if s < 10**7] if "2" in cases else []:
        arr = pa.array(np.arange(n, dtype=np.int64))

        @rf.flow(name=f"batch_{n}")
        def batch_flow():  # the sum folded into the map's chunks (core.reducers)
            return rf.reduce.sum(t_batch.map(arr))

        @rf.flow(name=f"batch_task_{n}")
        def batch_task_flow():  # the sum as a batch=True task of its own, which receives the map's values
            return t_total_arrow(t_batch.map(arr))

        def arrow_by_hand(remote, chunks: int, fused: bool) -> Callable[[], int]:
            def run() -> int:
                whole = ray.put(arr)  # once; each task slices it zero-copy from the object store
                size = chunk_size(n, chunks)
                parts = ray.get([remote.remote(whole, i, min(size, n - i)) for i in range(0, n, size)])
                return sum(parts) if fused else sum(pc.sum(p).as_py() for p in parts)

            return run

        bench.case(
            "2 batch=True + sum",
            n,
            {
                "rayflow": batch_flow,
                "rayflow_task_sum": batch_task_flow,
                "ray_lists": arrow_by_hand(r_arrow, 4 * cpus, fused=False),
                "ray_fused": arrow_by_hand(r_arrow_sum, 2 * cpus, fused=True),
            },
            expected=n * n,
        )

    if "3" in cases:
        n = 2000 if args.quick else 10**4
        data = list(range(n))

        @rf.flow(name="busy")
        def busy_flow():
            return t_total(t_busy.map(data))

        def busy_by_hand() -> int:
            size = max(1, n // (8 * cpus))
            return sum(sum(p) for p in ray.get([r_busy.remote(data[i : i + size]) for i in range(0, n, size)]))

        bench.case(
            "3 1 ms CPU-bound map",
            n,
            {
                "rayflow": busy_flow,
                "ray_lists": busy_by_hand,
                "ray_fused": ray_fused(data, r_fused_busy),
            },
            expected=n * (n - 1) // 2,
            warm=False,
            ideal=n * 0.001 / cpus,
        )

    if "4" in cases:
        n = 10**5 if args.quick else 10**6
        data = list(range(n))

        @rf.flow(name="chained")
        def chained_flow():
            return rf.reduce.sum(t_affine.map(t_affine.map(data)))

        @rf.flow(name="chained_unfused", fuse=False)
        def unfused_flow():
            return rf.reduce.sum(t_affine.map(t_affine.map(data)))

        @rf.flow(name="single")
        def single_flow():  # the same size, one map: what a fused chain is measured against too
            return rf.reduce.sum(t_affine.map(data))

        def ray_two_pass() -> int:
            """Best hand-written two-pass Ray: chunks of f as lists, then a task per list applying
            g and summing (its lists stay in the object store between the passes)."""
            size = chunk_size(n, FUSED_CHUNKS)
            firsts = [r_affine.remote(data[i : i + size]) for i in range(0, n, size)]
            return sum(ray.get([r_fused.remote(ref) for ref in firsts]))

        bench.case(
            "4 two chained maps + sum",
            n,
            {
                "rayflow": chained_flow,
                "ray_lists": ray_lists(data, 4 * cpus, rounds=2),
                "ray_fused": ray_fused(data, r_fused_twice),
                "ray_two_pass": ray_two_pass,
                "rayflow_unfused": unfused_flow,
                "rayflow_single": lambda: single_flow() + n * n + n,  # sum(2x + 1), made sum(4x + 3)
                "dask_futures": futures_or_none(dask, data, fused_affine_twice, FUSED_CHUNKS),
                "dask_bag": bag_or_none(dask, data, affine, FUSED_CHUNKS, maps=2),
                "mp": mp_map(pool, data, affine, FUSED_CHUNKS, maps=2),
            },
            expected=2 * n * n + n,  # sum(4x + 3 for x < n)
        )

    if "naive" in cases:
        n = 2000 if args.quick else 10**4
        bench.case(
            "naive Ray, one task per item",
            n,
            {"ray_naive": lambda: sum(ray.get([r_item.remote(i) for i in range(n)]))},
            expected=n * n,
            warm=False,
        )

    if dask is not None:
        dask.close()
    pool.close()
    pool.join()
    ray.shutdown()

    print(
        f"min of {args.repeat} per contestant; x best = rayflow / fastest hand-written Ray (lists or fused);"
        " x dfut (Dask futures), x bag (Dask bag), x mp = rayflow / that peer; naive Ray's time is in the Ray lists column"
    )
    bench.rows.sort(key=lambda r: (r["case"], r["n"]))  # case 5 ran first
    print_table(bench.rows)
    print_ray_data(bench.rows)
    for r in bench.rows:
        if r["rayflow_batch_s"]:
            print(f"at N={r['n']}: rayflow per item {r['rayflow_s']} s, batch=True {r['rayflow_batch_s']} s;"
                  f" Ray fused {r['ray_fused_s']} s; Ray Data map_batches {r['ray_data_map_batches_s']} s"
                  f" (rayflow batch=True: x {r['ratio_rayflow_batch_ray_data_map_batches']} of it)")
        if r["rayflow_task_sum_s"]:
            print(f"map + sum at N={r['n']}: rf.reduce.sum {r['rayflow_s']} s, the sum as a task of its own {r['rayflow_task_sum_s']} s")
        if r["ray_two_pass_s"]:
            print(
                f"fused chain at N={r['n']}: {r['rayflow_s']} s = x {r['ratio_ray_two_pass']} two-pass Ray ({r['ray_two_pass_s']} s),"
                f" x {r['ratio_rayflow_single']} one rayflow map ({r['rayflow_single_s']} s),"
                f" x {r['ratio_rayflow_unfused']} the chain unfused ({r['rayflow_unfused_s']} s)"
            )
    for n, m in memory.items():
        print(f"driver peak RSS after N={n}: {m['driver_peak_rss_mb']} MB (grew {m['peak_growth_mb']} MB)")
    elapsed = time.perf_counter() - started
    print(f"total {elapsed:.0f} s")
    print(
        json.dumps(
            {
                "num_cpus": cpus,
                "repeat": args.repeat,
                "quick": args.quick,
                "fused_chunks": FUSED_CHUNKS,
                "peers": {"dask": dask_skipped or "ran", "mp": "ran"},
                "rows": bench.rows,
                "memory": memory,
                "total_s": round(elapsed, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
