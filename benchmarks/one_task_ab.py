"""The warm one-task run of run_overhead.py, alone, for A/B runs of several checkouts.

    PYTHONPATH=<checkout> RAYFLOW_HOME=<dir> python benchmarks/one_task_ab.py [--repeat 40] [--label X]
    ... one_task_ab.py --old-style   # the statistic run_overhead.py printed up to e09821c

Uses only ``rf.task`` and ``rf.flow``, so it runs on every rayflow since the first
round of issues: run it with PYTHONPATH at each checkout, alternating between them
(A B A B), and give each checkout its own RAYFLOW_HOME (the history's schema moved).
Prints one JSON line (times in ms):

- default: after the first run (it creates the actor) and 5 unrecorded warm-ups,
  ``--repeat`` rounds of one flow then one ``ray.get(f.remote(1))``; min and median
  of each side, and the extra (rayflow - Ray). Then the CPU of a run: user+system of
  this process and all its descendants (driver, actor, workers, Ray's daemons, read
  from /proc) over ``--repeat`` runs in a row, less Ray's idle rate measured for 3 s
  before, per run, for the flow and for the plain task.
- ``--old-style``: run_overhead.py's one-task case as it was from 4bdf1c5 to e09821c:
  the first run, then the median of 5 flows in a row straight after it, then the
  median of 5 Ray tasks.

It stops unless the driver and a Ray worker import rayflow from the same checkout: Ray puts the
driver's working directory first on its workers' path, so run it from a directory that holds no
other rayflow (the checkout measured, or /tmp), not from another checkout's root.
benchmarks/one_task_history.md is what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import ray

import rayflow as rf

TICK = os.sysconf("SC_CLK_TCK")


def noop(i: int) -> int:
    return i


def once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_tree(root: int) -> float:
    """CPU seconds (user+system) of ``root`` and all its descendants, from /proc."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += children.get(pid, [])
    return total


def cpu_block(fn, n: int) -> tuple[float, float]:
    cpu, start = cpu_tree(os.getpid()), time.perf_counter()
    for _ in range(n):
        fn()
    return cpu_tree(os.getpid()) - cpu, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--label", default="")
    parser.add_argument("--old-style", action="store_true")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    remote_noop = ray.remote(noop)
    ray.get([remote_noop.remote(i) for i in range(200)])  # warm the worker pool for both sides
    worker_rayflow = ray.get(ray.remote(lambda: __import__("rayflow").__file__).remote())
    if os.path.dirname(worker_rayflow) != os.path.dirname(rf.__file__):
        # Ray puts the driver's working directory first on its workers' path: run from outside any checkout
        raise SystemExit(f"a Ray worker imports {worker_rayflow}, the driver {rf.__file__}: run from another directory")
    task = rf.task(noop)

    @rf.flow
    def one():
        return task(1)

    def plain():
        return ray.get(remote_noop.remote(1))

    ms = lambda seconds: round(seconds * 1000, 2)  # noqa: E731
    out = {"label": args.label, "rayflow": os.path.dirname(rf.__file__),
           "worker_rayflow": os.path.dirname(worker_rayflow), "load1": os.getloadavg()[0]}
    out["first_s"] = round(once(one), 3)  # creates the actor
    if args.old_style:
        warm = [once(one) for _ in range(5)]
        hand = [once(plain) for _ in range(5)]
        out.update(flow_med5=ms(statistics.median(warm)), ray_med5=ms(statistics.median(hand)),
                   extra_med5=ms(statistics.median(warm) - statistics.median(hand)),
                   flow_samples=[ms(x) for x in warm])
    else:
        for _ in range(5):
            one(), plain()
        flow, hand = [], []
        for _ in range(args.repeat):  # round-robin: both sides see the same load
            flow.append(once(one))
            hand.append(once(plain))
        cpu, start = cpu_tree(os.getpid()), time.perf_counter()
        time.sleep(3)
        idle_rate = (cpu_tree(os.getpid()) - cpu) / (time.perf_counter() - start)
        flow_cpu, flow_wall = cpu_block(one, args.repeat)
        hand_cpu, hand_wall = cpu_block(plain, args.repeat)
        cpu_flow = (flow_cpu - idle_rate * flow_wall) / args.repeat
        cpu_ray = (hand_cpu - idle_rate * hand_wall) / args.repeat
        out.update(flow_min=ms(min(flow)), flow_med=ms(statistics.median(flow)),
                   ray_min=ms(min(hand)), ray_med=ms(statistics.median(hand)),
                   extra_min=ms(min(flow) - min(hand)),
                   extra_med=ms(statistics.median(flow) - statistics.median(hand)),
                   cpu_flow_ms=ms(cpu_flow), cpu_ray_ms=ms(cpu_ray), cpu_extra_ms=ms(cpu_flow - cpu_ray),
                   idle_cpu_rate=round(idle_rate, 3),
                   flow_samples=[ms(x) for x in flow], ray_samples=[ms(x) for x in hand])
    out["load1_end"] = os.getloadavg()[0]
    print(json.dumps(out))
    ray.shutdown()


if __name__ == "__main__":
    main()
