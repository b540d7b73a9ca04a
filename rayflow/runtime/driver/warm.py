"""A task worker started beside a new FlowRunActor, so that a run's first task does not wait
for two processes to start one after the other.

A fresh driver (``rayflow run``, a submitted run's job, whose working dir and runtime env no
worker has yet) starts its FlowRunActor, a process that imports the engine before the run
begins; only then does the actor submit the first task, and Ray starts a second process for
it, which imports rayflow's worker code before the task runs.  ``start_worker`` submits, as
the actor is created, a task that needs no CPU and imports what a task's function brings
into its worker (``runtime.actor.executor``): Ray starts that worker while the actor starts,
and hands it, idle and warm, to the run's first task (a worker serves any task of its job and
runtime env).  Nothing waits for it; a cluster that schedules it elsewhere or late costs one
idle worker, which Ray reaps.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


def _ready() -> list[str]:
    """Run in the new worker: import what a task's function brings (the engine's worker side);
    the rayflow modules the worker then holds (for tests: no one else fetches them)."""
    import sys

    import rayflow.runtime.actor.executor  # noqa: F401

    return sorted(name for name in sys.modules if name.startswith("rayflow."))


_warm_up = ray.remote(num_cpus=0, max_retries=0)(_ready)


def start_worker(node_id: str) -> Any:
    """A worker for this job started (and warmed) on ``node_id`` (soft: elsewhere if Ray must);
    the task's reference, which no one needs to wait for."""
    return _warm_up.options(
        name="rayflow worker warm-up", scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=True),
    ).remote()
