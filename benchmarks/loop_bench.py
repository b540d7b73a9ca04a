"""What one iteration of a looping task (``raise rf.Loop``) costs, next to a plain task call.

    python benchmarks/loop_bench.py [--loops 1000] [--chain 20] [--repeat 3] [--runners local,ray]

Per runner, the min of ``--repeat`` runs of:

1. ``loop``: a flow of one trivial task that loops ``--loops`` times (``max_loops`` set to fit);
2. ``once``: the same flow whose task returns on its first run;
3. ``chain``: a flow of ``--chain`` trivial tasks, each taking the one before's value.

Per iteration: (loop - once) / (loops - 1), everything an iteration costs: the worker's loop,
the LOOPED state the orchestrator records, its history row and its span.  Per plain task call:
(chain - once) / (chain - 1), what a task after another costs (submit, run, report, states).
Prints a table, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import rayflow as rf


@rf.task(max_loops=1_000_000)
def spin(loops: int) -> int:
    count = rf.context().loop_count
    if count < loops:
        raise rf.Loop(result=count)
    return count


@rf.task
def step(x: int) -> int:
    return x + 1


@rf.flow
def looping(loops: int = 1000) -> int:
    return spin(loops)


@rf.flow
def chained(n: int = 20) -> int:
    value = step(0)
    for _ in range(n - 1):
        value = step(value)
    return value


def best(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=1000)
    parser.add_argument("--chain", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runners", default="local,ray")
    args = parser.parse_args()
    out = {}
    for runner in args.runners.split(","):
        loop_flow, chain_flow = looping.with_options(runner=runner), chained.with_options(runner=runner)
        assert loop_flow.run(loops=args.loops).result() == args.loops  # warm: Ray's workers started
        loop = best(lambda: loop_flow.run(loops=args.loops), args.repeat)
        once = best(lambda: loop_flow.run(loops=1), args.repeat)
        chain = best(lambda: chain_flow.run(n=args.chain), args.repeat)
        out[runner] = {
            "loop_s": round(loop, 4), "once_s": round(once, 4), "chain_s": round(chain, 4),
            "per_iteration_ms": round((loop - once) / (args.loops - 1) * 1e3, 4),
            "per_task_call_ms": round((chain - once) / (args.chain - 1) * 1e3, 4),
        }
    print(f"{'runner':8} {'loop s':>8} {'once s':>8} {'chain s':>8} {'per iteration ms':>17} {'per task ms':>12}")
    for runner, r in out.items():
        print(f"{runner:8} {r['loop_s']:8.3f} {r['once_s']:8.3f} {r['chain_s']:8.3f} {r['per_iteration_ms']:17.4f} {r['per_task_call_ms']:12.4f}")
    print(json.dumps({"loops": args.loops, "chain": args.chain, **out}))


if __name__ == "__main__":
    main()
