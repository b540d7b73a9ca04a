"""ResourceWaits: the RayExecutor's side of a task no node fits yet (runs in the FlowRunActor).

The driver's ``check_resources`` (runtime.driver.resources) refused what can never fit and gave
the rest a bounded wait (``TaskSpec.resource_wait``); this keeps that wait per work.  What a
task asks of a node (``task_request``) and how it reads (``describe``) are here too: both
sides use them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rayflow.core.options import TaskOptions

RESOURCE_WAIT_ENV = "RAYFLOW_RESOURCE_WAIT"
EPSILON = 1e-6  # Ray keeps resource amounts to 1/10000


def task_request(options: TaskOptions) -> dict[str, float]:
    """What Ray schedules the task's Ray task by: one CPU unless ``num_cpus`` says otherwise."""
    request: dict[str, float] = {"CPU": 1.0 if options.num_cpus is None else float(options.num_cpus)}
    if options.num_gpus:
        request["GPU"] = float(options.num_gpus)
    if options.memory:
        request["memory"] = float(options.memory)
    for name, amount in (options.resources or {}).items():
        request[name] = float(amount)
    return {name: amount for name, amount in request.items() if amount > EPSILON}


def describe(resources: Mapping[str, float]) -> str:
    """``{'CPU': 2, 'memory': 15.5 GiB, 'foo': 1}``: what a person reads; Ray's internal
    resources (``node:<ip>``, the object store) left out."""
    parts = []
    first = {"CPU": 0, "GPU": 1, "memory": 2}
    for name, amount in sorted(resources.items(), key=lambda item: (first.get(item[0], 3), item[0])):
        if name.startswith("node:") or name == "object_store_memory" or name.startswith("accelerator_type:"):
            continue
        if name == "memory":
            text = f"{amount / 2**30:.3g} GiB" if amount >= 2**30 else f"{amount / 2**20:.3g} MiB"
        else:
            text = f"{amount:g}"
        parts.append(f"'{name}': {text}")
    return "{" + ", ".join(parts) + "}"




@dataclass
class _Waiting:
    work: Any
    key: str
    request: Mapping[str, float]
    wait: float
    deadline: float
    forward: bool  # the orchestrator wants this work's start too (a task with a timeout)


class ResourceWaits:
    """Works of tasks no node fits yet (``TaskSpec.resource_wait``): each must be placed on a
    node within its wait.  The first of a task's works to start shows a node fits: the others
    then wait only for busy resources, without a deadline.  The first to pass its deadline
    fails the task's other waiting works too, and any work of it submitted later at once."""

    def __init__(self, clock: Any = time.monotonic):
        self.clock = clock
        self._waiting: dict[int, _Waiting] = {}
        self._placed: set[str] = set()
        self._given_up: dict[str, str] = {}  # task key -> the message its works fail with
        self._lock = threading.Lock()  # starts arrive on the actor's other threads

    def track(self, spec: Any, work: Any, *, forward: bool) -> bool:
        """Whether the worker must report this work's start (it waits with a deadline)."""
        if spec.resource_wait is None or spec.key in self._placed or work.persist is not None:
            return False
        with self._lock:
            self._waiting[work.work_id] = _Waiting(
                work, spec.key, task_request(spec.options), spec.resource_wait, self.clock() + spec.resource_wait, forward
            )
        return True

    def given_up(self, key: str) -> str | None:
        """The message a task's works fail with once one of them waited in vain."""
        return self._given_up.get(key)

    def started(self, work_id: int) -> bool:
        """A work began; True when the orchestrator wants to hear of it too (or it was not tracked)."""
        with self._lock:
            entry = self._waiting.pop(work_id, None)
            if entry is None:
                return True
            self._placed.add(entry.key)
            for other in [w for w, e in self._waiting.items() if e.key == entry.key]:
                del self._waiting[other]
        return entry.forward

    def finished(self, work_id: int) -> None:
        """A work ended (its start may not have been heard of yet): it was placed, so it ran."""
        self.started(work_id)

    def forget(self, work_id: int) -> None:
        """A work was cancelled: it waits no more, and says nothing about its task."""
        with self._lock:
            self._waiting.pop(work_id, None)

    def next_deadline(self) -> float | None:
        with self._lock:
            return min((e.deadline for e in self._waiting.values()), default=None)

    def expired(self) -> list[tuple[Any, str]]:
        """(work, message) for every work whose wait is over, and its task's other waiting works."""
        now = self.clock()
        with self._lock:
            late = {e.key for e in self._waiting.values() if e.deadline <= now}
            out = []
            for work_id, entry in list(self._waiting.items()):
                if entry.key not in late:
                    continue
                del self._waiting[work_id]
                if entry.key not in self._given_up:
                    self._given_up[entry.key] = (
                        f"task '{entry.key}' asks for {describe(entry.request)} but no node of this Ray cluster "
                        f"had that after waiting {entry.wait:g}s: no node that fits was added (resource_wait "
                        f"or {RESOURCE_WAIT_ENV} sets the wait)"
                    )
                out.append((entry.work, self._given_up[entry.key]))
        return out
