"""Where the milliseconds of a warm one-task run go: a timeline across driver, actor and worker.

    python benchmarks/run_timeline.py [--runs 7] [--num-cpus 2]

Marks (time.perf_counter_ns: CLOCK_MONOTONIC, one clock for every process of the machine) are
put around the functions each process runs, by wrapping them: in the driver directly, in the
Ray workers (the FlowRunActor and the task's worker) through ``worker_process_setup_hook``.
Every mark is one O_APPEND write to a file, read back after each run.  A one-task flow is run
``--runs`` times warm; the run with the least total time is printed as a timeline (ms since the
flow was called), then each step's median over all runs.  The wrapping costs a few us a mark.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time

import ray

import rayflow as rf

MARKS = os.path.join(tempfile.gettempdir(), f"rayflow-timeline-{os.getpid()}.log")


def install(where: str) -> None:
    """Wrap the functions each process runs so that each call writes a start and an end mark."""
    import importlib

    fd = os.open(MARKS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    role = where

    def mark(name: str) -> None:
        os.write(fd, f"{time.perf_counter_ns()} {role} {name}\n".encode())

    def wrap(owner, attr: str, label: str) -> None:
        inner = getattr(owner, attr)

        @functools.wraps(inner)
        def wrapped(*args, **kwargs):
            mark(f"> {label}")
            try:
                return inner(*args, **kwargs)
            finally:
                mark(f"< {label}")

        setattr(owner, attr, wrapped)

    targets = {
        "driver": [
            ("rayflow.core.flow", "Flow", "build", "trace graph (cached)"),
            ("rayflow.runtime.driver.runner", None, "refuse_taken_run_id", "refuse_taken_run_id"),
            ("rayflow.runtime.driver.runner", None, "compile_plan", "compile_plan"),
            ("rayflow.runtime.driver.runner", None, "connect", "connect"),
            ("rayflow.runtime.driver.runner", None, "check_resources", "check_resources"),
            ("rayflow.runtime.driver.runner", None, "driver_actor", "driver_actor"),
            ("rayflow.runtime.driver.runner", None, "settings_from_env", "settings_from_env"),
            ("rayflow.runtime.driver.runner", None, "rayflow_home", "rayflow_home"),
            ("rayflow.runtime.driver.runner", None, "MapProgress", "MapProgress"),
            ("rayflow.runtime.driver.runner", None, "FlowRun", "FlowRun()"),
            ("rayflow.engine.driver.flow_run", "FlowRun", "result", "FlowRun.result (fetch value)"),
        ],
        "worker": [
            ("rayflow.runtime.actor.executor", "RayExecutor", "__init__", "start_run: RayExecutor()"),
            ("rayflow.runtime.actor.flow_run_actor", "FlowRunActor", "_cluster_cpus", "cluster_cpus"),
            ("rayflow.runtime.limits.client", "RayLimits", "__init__", "RayLimits()"),
            ("rayflow.store.recorder", "HistoryRecorder", "__init__", "HistoryRecorder()"),
            ("rayflow.engine.orchestrator", "Orchestrator", "__init__", "Orchestrator()"),
            ("rayflow.runs.assembly", "ObservedRun", "start", "ObservedRun.start"),
            ("rayflow.engine.orchestrator", "Orchestrator", "run", "Orchestrator.run"),
            ("rayflow.engine.orchestrator", "Orchestrator", "launch", "launch"),
            ("rayflow.runtime.actor.executor", "RayExecutor", "submit", "executor.submit (.remote)"),
            ("rayflow.runtime.actor.executor", "RayExecutor", "_collect_ready", "collect (ray.wait+get)"),
            ("rayflow.engine.orchestrator", "Orchestrator", "on_completion", "on_completion"),
            ("rayflow.engine.orchestrator", "Orchestrator", "summary", "summary()"),
            ("rayflow.runs.assembly", "ObservedRun", "close", "ObservedRun.close"),
            ("rayflow.store.recorder", "HistoryRecorder", "close", "recorder.close (waits for the write)"),
            ("rayflow.store.history", "RunStore", "write", "RunStore.write (SQLite)"),
            ("rayflow.runtime.actor.executor", None, "execute", "task: execute()"),
        ],
    }
    for module_name, cls, attr, label in targets[where]:
        try:
            module = importlib.import_module(module_name)
            owner = getattr(module, cls) if cls else module
            wrap(owner, attr, label)
        except Exception:  # noqa: BLE001 - a renamed function: its mark is missing, no more
            pass
    if where == "driver":
        for attr in ("get", "put"):
            wrap(ray, attr, f"ray.{attr}")
        mark("installed")
    else:
        mark(f"installed pid {os.getpid()}")
    globals()["mark"] = mark


def noop() -> int:
    return 1


def worker_hook() -> None:
    install("worker")


def read_marks(since: int) -> list[tuple[int, str, str]]:
    out = []
    with open(MARKS) as f:
        for line in f:
            at, role, name = line.rstrip("\n").split(" ", 2)
            if int(at) >= since and not name.startswith("installed"):
                out.append((int(at), role, name))
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    ray.init(
        num_cpus=args.num_cpus, include_dashboard=False, logging_level="error",
        runtime_env={"worker_process_setup_hook": worker_hook},
    )
    install("driver")

    task = rf.task(noop)

    @rf.flow
    def one():
        return task()

    one()
    one()  # warm: the actor exists, the graph is cached, the workers are up
    runs = []
    for _ in range(args.runs):
        time.sleep(0.6)  # the recorder thread of the last run is idle again
        start = time.perf_counter_ns()
        mark("> flow()")
        one()
        mark("< flow()")
        end = time.perf_counter_ns()
        time.sleep(0.05)
        runs.append((end - start, read_marks(start)))
    ray.get(ray.remote(lambda: 1).remote())
    best_total, best = min(runs, key=lambda r: r[0])
    t0 = best[0][0]
    print(f"best of {args.runs} warm one-task runs: {best_total / 1e6:.2f} ms (ms since flow() was called)")
    for at, role, name in best:
        print(f"{(at - t0) / 1e6:8.3f}  {role:<7} {name}")
    spans: dict[str, list[float]] = {}
    for _, marks in runs:
        opened: dict[tuple[str, str], int] = {}
        for at, role, name in marks:
            key = (role, name[2:])
            if name.startswith(">"):
                opened[key] = at
            elif key in opened:
                spans.setdefault(f"{role:<7} {name[2:]}", []).append((at - opened.pop(key)) / 1e6)
    print("\nmedian ms per call over all runs (nested calls included in their callers):")
    for label, values in spans.items():
        print(f"{statistics.median(values):8.3f}  {label}  (x{len(values) / len(runs):g} a run)")
    ray.shutdown()
    os.unlink(MARKS)


if __name__ == "__main__":
    main()
