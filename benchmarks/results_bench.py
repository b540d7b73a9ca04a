"""What keeping results costs and saves: persistence on a map, resume and cache hits.

    python benchmarks/results_bench.py [--n 1000000] [--repeat 3] [--num-cpus 2]

Same process, Ray already up, run history on, the result store in a fresh
directory; min of --repeat runs.  Prints a table, then one JSON object on the
last line.

- the trivial map of map_bench (f(x) = 2x + 1 over N items, then a sum) with
  persist off and on: what writing every chunk's results costs;
- resuming a run of it whose map was stored whole but whose sum failed: the
  map's chunks are loaded, not run;
- the same map cached per item (rf.cache.inputs): cold (every item keyed,
  run and written), fully cached, and with 100 new items appended;
- a map of 2,000 items that sleep 1 ms each, cold and fully cached;
- a plain task that takes ~0.5 s, cold and from the cache (rf.cache.inputs).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

import ray

import rayflow as rf


def affine(x: int) -> int:
    return 2 * x + 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10**6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    home = pathlib.Path(tempfile.mkdtemp(prefix="rayflow-results-bench-"))
    os.environ["RAYFLOW_HOME"] = str(home)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="error")
    data = list(range(args.n))
    fail = home / "fail"

    @rf.task
    def total(xs: list) -> int:
        if fail.exists():
            raise RuntimeError("the sum fails this time")
        return sum(xs)

    plain = rf.task(affine)
    kept = rf.task(persist=True)(affine)

    @rf.flow(name="off")
    def off():
        return total(plain.map(data))

    @rf.flow(name="on")
    def on():
        return total(kept.map(data))

    def best(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    rows = {}
    rows["map_persist_off_s"] = best(lambda: off.run().result())
    rows["map_persist_on_s"] = best(lambda: on.run().result())

    resumes = []
    for _ in range(args.repeat):  # a resumed run that succeeded cannot be resumed again: a new one each time
        fail.write_text("")
        failed = on.run()
        fail.unlink()
        start = time.perf_counter()
        resumed = rf.resume(failed.run_id, flow=on)
        assert resumed.result() == args.n * args.n
        resumes.append(time.perf_counter() - start)
    rows["resume_loading_the_map_s"] = min(resumes)

    keyed = rf.task(cache_key_fn=rf.cache.inputs)(affine)
    more = data + list(range(args.n, args.n + 100))

    def cached_map(name: str, items: list):
        @rf.flow(name=name)
        def cached_map_flow():
            return total(keyed.map(items))

        return cached_map_flow

    colds, hits, news = [], [], []
    for i in range(args.repeat + 1):  # the first round warms up
        name = f"cached_map_{i}"  # a fresh cache folder per round
        start = time.perf_counter()
        cached_map(name, data).run().result()
        colds.append(time.perf_counter() - start)
        start = time.perf_counter()
        run = cached_map(name, data).run()
        run.result()
        hits.append(time.perf_counter() - start)
        assert f"({args.n} from the cache)" in run.task_states["affine"].message, run.task_states["affine"].message
        start = time.perf_counter()
        run = cached_map(name, more).run()
        run.result()
        news.append(time.perf_counter() - start)
        assert f"({args.n} from the cache)" in run.task_states["affine"].message
    rows["map_cached_cold_s"], rows["map_cached_hit_s"], rows["map_cached_100_new_s"] = min(colds[1:]), min(hits[1:]), min(news[1:])

    @rf.task(cache_key_fn=rf.cache.inputs)
    def sleepy(x: int) -> int:
        time.sleep(0.001)
        return x

    def sleepy_flow(name: str):
        @rf.flow(name=name)
        def sleepy_map():
            return sleepy.map(range(2000))

        return sleepy_map

    colds, hits = [], []
    for i in range(args.repeat):
        start = time.perf_counter()
        sleepy_flow(f"sleepy_{i}").run().result()
        colds.append(time.perf_counter() - start)
        start = time.perf_counter()
        sleepy_flow(f"sleepy_{i}").run().result()
        hits.append(time.perf_counter() - start)
    rows["sleepy_map_cold_s"], rows["sleepy_map_cached_s"] = min(colds), min(hits)

    @rf.task(cache_key_fn=rf.cache.inputs)
    def slow_sum(n: int) -> int:
        time.sleep(0.5)
        return sum(range(n))

    @rf.flow(name="cached")
    def cached(n: int = 1000):
        return slow_sum(n)

    colds, hits = [], []
    for i in range(args.repeat):
        start = time.perf_counter()
        cached.run(n=1000 + i)
        colds.append(time.perf_counter() - start)
        start = time.perf_counter()
        run = cached.run(n=1000 + i)
        hits.append(time.perf_counter() - start)
        assert run.task_states["slow_sum"].type.value == "CACHED"
    rows["plain_task_cold_s"] = min(colds)
    rows["plain_task_cached_s"] = min(hits)
    rows["persist_ratio"] = round(rows["map_persist_on_s"] / rows["map_persist_off_s"], 2)
    rows["resume_vs_cold_ratio"] = round(rows["resume_loading_the_map_s"] / rows["map_persist_off_s"], 2)
    rows["map_cached_hit_vs_uncached_ratio"] = round(rows["map_cached_hit_s"] / rows["map_persist_off_s"], 2)
    rows["map_cached_cold_vs_uncached_ratio"] = round(rows["map_cached_cold_s"] / rows["map_persist_off_s"], 2)
    stored = sum(p.stat().st_size for p in (home / "results").rglob("*") if p.is_file())

    print(f"N = {args.n}, min of {args.repeat}, {args.num_cpus} CPUs, store {home / 'results'} ({stored / 1e6:.1f} MB written)")
    print(f"{'case':58s} {'seconds':>8s}")
    for name, label in [
        ("map_persist_off_s", "trivial map + sum, persist off"),
        ("map_persist_on_s", "trivial map + sum, persist on (every chunk written)"),
        ("resume_loading_the_map_s", "resume: the map's chunks loaded, the sum run"),
        ("map_cached_cold_s", "trivial map cached per item, cold (keyed, run, written)"),
        ("map_cached_hit_s", "the same, every item from the cache"),
        ("map_cached_100_new_s", "the same with 100 new items (only they run)"),
        ("sleepy_map_cold_s", "2,000 items of 1 ms, cached per item, cold"),
        ("sleepy_map_cached_s", "the same, every item from the cache"),
        ("plain_task_cold_s", "a 0.5 s plain task, cold (run + cache write)"),
        ("plain_task_cached_s", "the same from the cache"),
    ]:
        print(f"{label:58s} {rows[name]:8.3f}")
    print(f"persist on/off: {rows['persist_ratio']}x; resume/cold: {rows['resume_vs_cold_ratio']}x; "
          f"map cached cold/uncached: {rows['map_cached_cold_vs_uncached_ratio']}x, hit/uncached: {rows['map_cached_hit_vs_uncached_ratio']}x")
    print(json.dumps({"n": args.n, "num_cpus": args.num_cpus, **{k: round(v, 4) if isinstance(v, float) else v for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
