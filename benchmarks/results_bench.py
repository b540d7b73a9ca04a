"""What keeping results costs and saves: persistence on a map, resume and cache hits.

    python benchmarks/results_bench.py [--n 1000000] [--repeat 3] [--num-cpus 2]

Same process, Ray already up, run history on, the result store in a fresh
directory; min of --repeat runs.  Prints a table, then one JSON object on the
last line.

- the trivial map of map_bench (f(x) = 2x + 1 over N items, then a sum) with
  persist off and on: what writing every chunk's results costs;
- resuming a run of it whose map was stored whole but whose sum failed: the
  map's chunks are loaded, not run (the per-chunk analogue of a cache hit:
  mapped tasks are not cached yet);
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

    fail.write_text("")
    failed = on.run()
    fail.unlink()
    resumes = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        resumed = rf.resume(failed.run_id, flow=on)
        assert resumed.result() == args.n * args.n
        resumes.append(time.perf_counter() - start)
    rows["resume_loading_the_map_s"] = min(resumes)

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
    stored = sum(p.stat().st_size for p in (home / "results").rglob("*") if p.is_file())

    print(f"N = {args.n}, min of {args.repeat}, {args.num_cpus} CPUs, store {home / 'results'} ({stored / 1e6:.1f} MB written)")
    print(f"{'case':52s} {'seconds':>8s}")
    for name, label in [
        ("map_persist_off_s", "trivial map + sum, persist off"),
        ("map_persist_on_s", "trivial map + sum, persist on (every chunk written)"),
        ("resume_loading_the_map_s", "resume: the map's chunks loaded, the sum run"),
        ("plain_task_cold_s", "a 0.5 s plain task, cold (run + cache write)"),
        ("plain_task_cached_s", "the same from the cache"),
    ]:
        print(f"{label:52s} {rows[name]:8.3f}")
    print(f"persist on/off: {rows['persist_ratio']}x; resume/cold: {rows['resume_vs_cold_ratio']}x")
    print(json.dumps({"n": args.n, "num_cpus": args.num_cpus, **{k: round(v, 4) if isinstance(v, float) else v for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
