"""Where a map's milliseconds go: a per-run timeline of driver, actor and workers, its chunks, and
cProfile of each process.

    python benchmarks/map_profile.py [--case batch|sum] [--n 1000000] [--runs 5] [--profile]

``batch``: ``rf.reduce.sum(batch_affine.map(arrow array))`` as in map_bench.py case 2
(``batch_task``: summed by a batch task of its own, ``total_arrow``);
``sum``: ``rf.reduce.sum(affine.map(list))`` as in case 1.  Marks (time.perf_counter_ns: one
clock for every process of the machine) are put around the functions each process runs by
wrapping them, in the driver directly, in the Ray workers (the FlowRunActor and the tasks'
workers) through ``worker_process_setup_hook``.  The run with the least total time is printed
as a timeline (ms since the flow was called), with every chunk's size, then the sums per step
over all runs.  ``--profile`` also runs cProfile around the driver's call, the actor's
``Orchestrator.run`` and each work in the workers (all runs), and prints each role's top
functions by own time (the profiler slows every process: read its shares, not its times).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import glob
import os
import pstats
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

import rayflow as rf

TAG = f"rayflow-mapprof-{os.getpid()}"
MARKS = os.path.join(tempfile.gettempdir(), f"{TAG}.log")
PROFILE_ENV = "RAYFLOW_MAPPROF_PROFILE"


def install(role: str) -> None:
    """Wrap the functions each process runs so that each call writes a start and an end mark."""
    import importlib

    fd = os.open(MARKS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    profiler = cProfile.Profile() if os.environ.get(PROFILE_ENV) else None
    pid = os.getpid()

    def mark(name: str) -> None:
        os.write(fd, f"{time.perf_counter_ns()} {role}:{pid} {name}\n".encode())

    def wrap(owner, attr: str, label: str, profiled: bool = False, describe=None) -> None:
        inner = getattr(owner, attr)

        @functools.wraps(inner)
        def wrapped(*args, **kwargs):
            extra = describe(*args) if describe else ""
            mark(f"> {label}{extra}")
            if profiled and profiler is not None:
                profiler.enable()
            try:
                return inner(*args, **kwargs)
            finally:
                if profiled and profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(os.path.join(tempfile.gettempdir(), f"{TAG}-{role}-{pid}.prof"))
                mark(f"< {label}")

        setattr(owner, attr, wrapped)

    def work_size(payload, work, *values, **_):
        job = work.job
        return f" {work.task_key} #{work.work_id} size={job.size if job else '-'}" + (
            f" retry={len(job.indices)}" if job is not None and job.indices is not None else ""
        )

    targets = {
        "driver": [
            ("rayflow.runtime.driver.runner", None, "compile_plan", "compile_plan", False, None),
            ("rayflow.runtime.driver.runner", None, "check_resources", "check_resources", False, None),
            ("rayflow.runtime.driver.runner", None, "_objects_put", "objects_put", False, None),
            ("rayflow.engine.driver.flow_run", "FlowRun", "result", "FlowRun.result", False, None),
        ],
        "worker": [
            ("rayflow.engine.orchestrator", "Orchestrator", "run", "Orchestrator.run", True, None),
            ("rayflow.runtime.actor.executor", "RayExecutor", "submit", "submit", False, None),
            ("rayflow.runtime.actor.executor", "RayExecutor", "_collect_ready", "collect", False, None),
            ("rayflow.runtime.actor.flow_run_actor", "FlowRunActor", "start_run", "start_run", False, None),
            ("rayflow.engine.orchestrator", "Orchestrator", "launch", "launch", False, lambda self, key: f" {key}"),
            ("rayflow.engine.orchestrator", "Orchestrator", "on_completion", "on_completion", False,
             lambda self, c: f" {c.work.task_key} #{c.work.work_id}"),
            ("rayflow.runtime.actor.executor", None, "_packed", "pack report", False, None),
            ("rayflow.runs.assembly", "ObservedRun", "close_history", "close_history", False, None),
            ("rayflow.runtime.actor.executor", None, "execute", "execute", True, work_size),
            ("rayflow.runtime.actor.executor", None, "execute_fused", "execute_fused", True, work_size),
        ],
    }
    for module_name, cls, attr, label, profiled, describe in targets[role]:
        try:
            module = importlib.import_module(module_name)
            wrap(getattr(module, cls) if cls else module, attr, label, profiled, describe)
        except Exception:  # noqa: BLE001 - a renamed function: its mark is missing, no more
            pass
    globals()["mark"] = mark
    globals()["profiler"] = profiler


def worker_hook() -> None:
    install("worker")


def affine(x: int) -> int:
    return 2 * x + 1


def affine_batch(xs: pa.Array) -> pa.Array:
    return pc.add(pc.multiply(xs, 2), 1)


def total_arrow(xs: pa.Array) -> int:
    return pc.sum(xs).as_py()


def read_marks(since: int) -> list[tuple[int, str, str]]:
    out = []
    with open(MARKS) as f:
        for line in f:
            at, role, name = line.rstrip("\n").split(" ", 2)
            if int(at) >= since:
                out.append((int(at), role, name))
    return sorted(out)


def spans(marks: list[tuple[int, str, str]]) -> list[tuple[int, int, str, str]]:
    """(start, end, role, label) of every closed call."""
    opened: dict[tuple[str, str], list[tuple[int, str]]] = {}
    out = []
    for at, role, name in marks:
        label = name[2:].split(" ")[0]
        if name.startswith(">"):
            opened.setdefault((role, label), []).append((at, name[2:]))
        elif opened.get((role, label)):
            start, full = opened[(role, label)].pop()
            out.append((start, at, role, full))
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=("batch", "batch_task", "sum"), default="batch")
    parser.add_argument("--n", type=int, default=10**6)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="cProfile every process (slows them)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="tottime", help="pstats order of the profiles (cumtime: what each call holds)")
    parser.add_argument("--all", action="store_true", help="the actor's submit and collect calls in the timeline too")
    args = parser.parse_args()
    if args.profile:
        os.environ[PROFILE_ENV] = "1"
    ray.init(
        num_cpus=args.num_cpus, include_dashboard=False, logging_level="error",
        runtime_env={"worker_process_setup_hook": worker_hook, "env_vars": {PROFILE_ENV: os.environ.get(PROFILE_ENV, "")}},
    )
    install("driver")
    n = args.n
    if args.case.startswith("batch"):
        arr = pa.array(np.arange(n, dtype=np.int64))
        t_batch, t_total = rf.task(batch=True)(affine_batch), rf.task(batch=True)(total_arrow)
        total = t_total if args.case == "batch_task" else rf.reduce.sum

        @rf.flow(name=f"prof_batch_{n}")
        def flow():
            return total(t_batch.map(arr))
    else:
        data = list(range(n))
        t_affine = rf.task(affine)

        @rf.flow(name=f"prof_sum_{n}")
        def flow():
            return rf.reduce.sum(t_affine.map(data))

    assert flow() == n * n
    assert flow() == n * n  # warm: the actor exists, the graph is cached, the workers are up
    driver_prof = cProfile.Profile() if args.profile else None
    runs = []
    for _ in range(args.runs):
        time.sleep(0.3)
        start = time.perf_counter_ns()
        mark("> flow()")
        if driver_prof is not None:
            driver_prof.enable()
        flow()
        if driver_prof is not None:
            driver_prof.disable()
        mark("< flow()")
        end = time.perf_counter_ns()
        time.sleep(0.1)
        runs.append((end - start, read_marks(start)))
    best_total, best = min(runs, key=lambda r: r[0])
    t0 = best[0][0]
    print(f"{args.case} n={n}: runs {[round(t / 1e6, 1) for t, _ in runs]} ms; best {best_total / 1e6:.2f} ms")
    print("timeline of the best run (ms since flow() was called; start..end, duration):")
    roles: dict[str, str] = {}
    for start, end, role, label in spans(best):
        if label.startswith(("submit", "collect")) and not args.all:
            continue
        short = roles.setdefault(role, role.split(":")[0] + str(len(roles)))
        print(f"{(start - t0) / 1e6:8.2f} .. {(end - t0) / 1e6:8.2f} {(end - start) / 1e6:7.2f}  {short:<8} {label}")
    for what in ("submit", "collect"):
        calls = [(s, e) for s, e, _, label in spans(best) if label.startswith(what)]
        if calls:
            print(f"  {what}: {len(calls)} calls, {sum(e - s for s, e in calls) / 1e6:.2f} ms in all")
    works = [(e - s) for s, e, _, label in spans(best) if label.startswith("execute")]
    print(f"  works: {len(works)}, {sum(works) / 1e6:.2f} ms inside execute() in all")
    print(f"  chunk sizes: {[label.split('size=')[1] for _, _, _, label in spans(best) if 'size=' in label]}")
    ray.shutdown()
    if args.profile:
        time.sleep(0.5)
        driver_prof.dump_stats(os.path.join(tempfile.gettempdir(), f"{TAG}-driver-0.prof"))
        for role in ("driver", "worker"):
            files = glob.glob(os.path.join(tempfile.gettempdir(), f"{TAG}-{role}-*.prof"))
            for path in files:
                stats = pstats.Stats(path)
                if role == "worker":
                    funcs = {f[2] for f in stats.stats}
                    title = "actor (Orchestrator.run)" if "run" in funcs and any("orchestrator" in f[0] for f in stats.stats) else "task worker"
                else:
                    title = "driver (flow())"
                print(f"\n=== {title}, pid file {os.path.basename(path)}: {stats.total_tt * 1000:.1f} ms profiled")
                stats.sort_stats(args.sort).print_stats(args.top)
                os.unlink(path)
    os.unlink(MARKS)


if __name__ == "__main__":
    main()
