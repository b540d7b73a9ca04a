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

``start_actor``: ``rayflow run`` on a cluster whose address it knows (``--address``, the flow's
own, or RAY_ADDRESS, which every Ray job's driver has: a submitted run) joins it and creates
the actor (and this worker) as soon as the flow is loaded, before it builds the graph and
imports the engine to compile the plan: the actor's process starts meanwhile, not after.
"""

from __future__ import annotations

import os
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


def start_actor(options: Any) -> bool:
    """Join Ray and create this driver's FlowRunActor now, for a run on Ray (``options``: the
    flow's) whose cluster address is known; whether it did.  The run then finds both
    (``runner.RayRunner``: its ``connect`` and ``driver_actor`` are no-ops by then).  Errors
    are those the run's own join would raise."""
    from rayflow.runtime.driver.actors import driver_actor
    from rayflow.runtime.driver.cluster import connect

    if options.runner != "ray" or not (options.address or os.environ.get("RAY_ADDRESS")):
        return False
    from rayflow.store.history import refuse_taken_run_id

    refuse_taken_run_id(options)  # a run refused joins no cluster and makes no actor
    connect(options.address)
    driver_actor()
    return True
