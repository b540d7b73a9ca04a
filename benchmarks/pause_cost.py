"""The cost of a pause on a run: from ``rf.approve`` to the paused task running again (and to
its end), with its driver alive, on the in-process runner and on Ray.

    python benchmarks/pause_cost.py [local|ray] [repeats]

The decision is read by the run's orchestrator from the run history every
``engine.pauses.POLL_SECONDS`` (0.2 s) while a task is paused, so about half of that on average.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time

import rayflow as rf
from rayflow.store import RunStore
from rayflow.store.approvals import PauseStore


@rf.task
def gate() -> int:
    rf.pause("go?")
    return 1


@rf.flow
def paused_flow():
    return gate()


def once(runner: str, run_id: str) -> tuple[float, float]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(paused_flow.with_options(runner=runner, run_id=run_id).run()))
    thread.start()
    store = RunStore()
    def shown_paused() -> bool:  # as a person sees it: the history shows the task PAUSED
        run = store.run(run_id)
        return bool(run) and any(t["state"] == "PAUSED" for t in run["transitions"] if t["task_key"] == "gate")

    while PauseStore(store).pause(run_id, "gate", None) is None or not shown_paused():
        time.sleep(0.01)
    asked = time.time()
    rf.approve(run_id, "gate")
    thread.join()
    rows = [t for t in store.run(run_id)["transitions"] if t["task_key"] == "gate"]
    running_again = [t["at"] for t in rows if t["state"] == "RUNNING"][-1]
    return running_again - asked, rows[-1]["at"] - asked


def main() -> None:
    runner = sys.argv[1] if len(sys.argv) > 1 else "local"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    import os

    os.environ.setdefault("RAYFLOW_HOME", tempfile.mkdtemp())
    if runner == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
        once(runner, "warm-up")
    results = [once(runner, f"pause-cost-{i}") for i in range(repeats)]
    again = [r[0] for r in results]
    done = [r[1] for r in results]
    print(f"{runner}: approve -> running again: median {statistics.median(again) * 1000:.0f} ms, "
          f"max {max(again) * 1000:.0f} ms; approve -> task ended: median {statistics.median(done) * 1000:.0f} ms "
          f"({repeats} runs)")


if __name__ == "__main__":
    main()
