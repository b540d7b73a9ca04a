"""CPU per task, by process, of a flow of N trivial independent tasks against hand-written Ray.

    python benchmarks/many_cpu.py [--tasks 1000] [--runs 5] [--num-cpus 2] [--profile] [--json]

Both sides run in one Ray session, round-robin.  Around each run, the CPU seconds (user + system,
``/proc/PID/stat``) of every process of the session are read: the driver, the FlowRunActor, the
task workers (the raylet's other children), the raylet and the GCS.  Printed: each side's min
wall time and its median CPU ms per task by process (the CPU of a run changes less with the
machine's load than its wall time does).  ``--profile`` runs cProfile in the actor (around
``Orchestrator.run``, the run's thread) and in every task worker (its whole main thread, from
the worker's start) and prints the top functions of each, by own time, per task: the profiler
slows every process, so read its shares, not its times; it counts each thread's CPU time
(``time.thread_time``), not its waits.

To A/B another checkout, run from a directory holding no ``rayflow`` package with ``PYTHONPATH``
naming the checkout (Ray's workers put the driver's working directory first on their path), and
alternate the invocations.
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import json
import os
import pstats
import statistics
import tempfile
import time

import ray

import rayflow as rf

TAG = f"rayflow-manycpu-{os.getpid()}"
PROFILE_ENV = "RAYFLOW_MANYCPU_PROFILE"
TICK = os.sysconf("SC_CLK_TCK")


def _hook() -> None:
    """Every Ray worker: the CPU time of each run's thread in the actor (``Orchestrator.run``),
    appended to a file; with --profile, cProfile around that run (the actor) and of the whole
    main thread (a task worker), dumped every 200 works and at each run's end."""
    prefix = os.environ.get(PROFILE_ENV, "")
    if not prefix:
        return
    import functools
    import time

    from rayflow.engine import orchestrator
    from rayflow.runtime.actor import executor

    profile = prefix.endswith("+profile")
    prefix = prefix.removesuffix("+profile")
    pid = os.getpid()
    actor = cProfile.Profile(time.thread_time) if profile else None
    run = orchestrator.Orchestrator.run

    @functools.wraps(run)
    def measured_run(self, *args, **kwargs):
        start = time.thread_time()
        if actor is not None:
            actor.enable()
        try:
            return run(self, *args, **kwargs)
        finally:
            if actor is not None:
                actor.disable()
                actor.dump_stats(f"{prefix}-actor-{pid}.prof")
            with open(f"{prefix}-thread.log", "a") as f:
                f.write(f"{time.thread_time() - start}\n")

    orchestrator.Orchestrator.run = measured_run
    if not profile:
        return
    worker = cProfile.Profile(time.thread_time)
    count = [0]
    inner = executor.execute

    @functools.wraps(inner)
    def execute(*args, **kwargs):
        count[0] += 1
        if count[0] % 200 == 0:
            worker.dump_stats(f"{prefix}-worker-{pid}.prof")
            worker.enable()
        return inner(*args, **kwargs)

    executor.execute = execute
    worker.enable()


def noop(i: int) -> int:
    return i


def _children(parent: int) -> list[int]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                text = f.read()
        except OSError:
            continue
        if int(text.rsplit(")", 1)[1].split()[1]) == parent:
            out.append(int(stat.split("/")[2]))
    return out


def _cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return 0.0


def _threads(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid``, summed by thread name."""
    out: dict[str, float] = {}
    for stat in glob.glob(f"/proc/{pid}/task/*/stat"):
        try:
            with open(stat) as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def _role(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().decode(errors="replace")
    except OSError:
        return "gone"
    return "actor" if "FlowRunActor" in cmd else "workers"


def _last_thread_cpu(prefix: str) -> float:
    try:
        with open(f"{prefix}-thread.log") as f:
            return float(f.read().split()[-1])
    except (OSError, IndexError):
        return 0.0


class Meter:
    def __init__(self) -> None:
        node = ray._private.worker._global_node
        self.raylet = node.all_processes["raylet"][0].process.pid
        self.gcs = node.all_processes["gcs_server"][0].process.pid

    def snapshot(self) -> dict[int, float]:
        pids = [os.getpid(), self.raylet, self.gcs, *_children(self.raylet)]
        return {pid: _cpu(pid) for pid in pids}

    def by_role(self, before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
        out = {"driver": 0.0, "actor": 0.0, "workers": 0.0, "raylet": 0.0, "gcs": 0.0}
        for pid, end in after.items():
            used = end - before.get(pid, 0.0)
            role = {os.getpid(): "driver", self.raylet: "raylet", self.gcs: "gcs"}.get(pid) or _role(pid)
            if role in out:
                out[role] += used
        out["total"] = sum(out.values())
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    parser.add_argument("--threads", action="store_true", help="the actor's CPU by thread name")
    args = parser.parse_args()
    prefix = os.path.join(tempfile.gettempdir(), TAG)
    ray.init(
        num_cpus=args.num_cpus, include_dashboard=False, logging_level="error",
        runtime_env={"worker_process_setup_hook": _hook,
                     "env_vars": {PROFILE_ENV: prefix + ("+profile" if args.profile else "")}},
    )
    n = args.tasks
    remote_noop = ray.remote(noop)
    ray.get([remote_noop.remote(i) for i in range(200)])
    task = rf.task(noop)

    @rf.flow(name=f"many_cpu_{n}")
    def many():
        return [task(i) for i in range(n)]

    assert many() == list(range(n))
    many()
    meter = Meter()
    sides = {"rayflow": lambda: many(), "ray": lambda: ray.get([remote_noop.remote(i) for i in range(n)])}
    walls: dict[str, list[float]] = {side: [] for side in sides}
    cpus: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    threads: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    actor = next((pid for pid in _children(meter.raylet) if _role(pid) == "actor"), None)
    for _ in range(args.runs):
        for side, run in sides.items():
            time.sleep(0.3)  # the last run's history write and Ray's own clean-up are done
            before, before_threads = meter.snapshot(), _threads(actor) if actor else {}
            start = time.perf_counter()
            run()
            walls[side].append(time.perf_counter() - start)
            time.sleep(0.2)  # the history rows written after the answer count as the run's
            cpus[side].append(meter.by_role(before, meter.snapshot()))
            after_threads = _threads(actor) if actor else {}
            threads[side].append({k: v - before_threads.get(k, 0.0) for k, v in after_threads.items()})
            if side == "rayflow":
                cpus[side][-1]["actor run thread"] = _last_thread_cpu(prefix)
    result: dict[str, object] = {"tasks": n, "runs": args.runs, "load": os.getloadavg()[0]}
    for side in sides:
        result[f"{side}_wall_min_s"] = round(min(walls[side]), 4)
        result[f"{side}_cpu_ms_per_task"] = {
            role: round(statistics.median(c[role] for c in cpus[side]) * 1000 / n, 3) for role in cpus[side][0]
            if role != "total"
        }
        result[f"{side}_cpu_ms_per_task"]["total"] = round(statistics.median(c["total"] for c in cpus[side]) * 1000 / n, 3)
        result[f"{side}_cpu_ms_per_task_min"] = {
            role: round(min(c[role] for c in cpus[side]) * 1000 / n, 3) for role in cpus[side][0]
        }
    result["ratio"] = round(min(walls["rayflow"]) / min(walls["ray"]), 2)
    ray.shutdown()
    if os.path.exists(f"{prefix}-thread.log"):
        os.unlink(f"{prefix}-thread.log")
    if not args.json:
        print(f"{n} tasks, {args.runs} runs each, load {result['load']:.1f}")
        for side in sides:
            print(f"{side:<8} wall min {result[f'{side}_wall_min_s']:.4f} s; CPU ms per task (median): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in result[f"{side}_cpu_ms_per_task"].items()))
    print(json.dumps(result))
    if args.threads:
        for side in sides:
            print(f"{side}: the actor's threads, CPU ms per task (median):",
                  {k: round(statistics.median(t.get(k, 0.0) for t in threads[side]) * 1000 / n, 3)
                   for k in sorted(threads[side][-1], key=lambda k: -threads[side][-1][k])[:8]})
    if args.profile:
        time.sleep(0.5)
        for path in sorted(glob.glob(f"{prefix}-*.prof")):
            stats = pstats.Stats(path)
            calls = max((v[0] for k, v in stats.stats.items() if k[2] == "execute" and "executor.py" in k[0]), default=0)
            print(f"\n=== {os.path.basename(path)}: {stats.total_tt * 1000:.1f} ms profiled; execute() calls {calls}")
            stats.sort_stats("tottime").print_stats(args.top)
            os.unlink(path)


if __name__ == "__main__":
    main()
