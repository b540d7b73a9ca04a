"""The event loop of one flow run, independent of where tasks execute.

State, all of it explicit on the instance:

- ``states``: task key -> current State (every key from the start, PENDING)
- ``history``: task key -> every State it went through, in order
- ``blocking``: task key -> number of its dependencies not yet finished
- ``ready``: keys whose dependencies have all finished, waiting to launch
- ``running``: task key -> attempt number of the attempt in flight
- ``handles``: task key -> executor handle of the value it produced

One step: launch every ready task (or settle it without running when its
trigger does not pass), wait for finished attempts, ``finish_task`` each.
A finished task unblocks its downstream tasks.  The run is over when every
task is finished; the flow's state then comes from its reference tasks.

Listeners are called on every transition, in order, with keyword arguments
(``run_id``, ``task_key``, ``old``, ``new``); they are how the run journal,
live status and, later, state handlers and traces observe the run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rayflow.engine.executor import Completion, Executor
from rayflow.engine.plan import Plan
from rayflow.states import State, StateType
from rayflow.triggers import failed_upstreams

Listener = Callable[..., None]


@dataclass
class RunSummary:
    """What a finished (or live) run reports: picklable, no executor inside."""

    run_id: str
    flow_name: str
    state: State
    task_states: dict[str, State]
    history: dict[str, list[State]]
    handles: dict[str, Any] = field(default_factory=dict)


class Orchestrator:
    def __init__(
        self,
        plan: Plan,
        executor: Executor,
        run_id: str,
        *,
        listeners: tuple[Listener, ...] = (),
        poll_interval: float = 0.2,
    ):
        self.plan = plan
        self.executor = executor
        self.run_id = run_id
        self.listeners = listeners
        self.poll_interval = poll_interval
        self.flow_state = State(type=StateType.PENDING)
        self.states: dict[str, State] = {s.key: State(type=StateType.PENDING) for s in plan.specs}
        self.history: dict[str, list[State]] = {k: [v] for k, v in self.states.items()}
        self.blocking: dict[str, int] = {s.key: len(s.dependencies) for s in plan.specs}
        self.ready: deque[str] = deque(k for k, n in self.blocking.items() if n == 0)
        self.running: dict[str, int] = {}
        self.handles: dict[str, Any] = {}
        self.unfinished = len(plan.specs)
        self._lock = threading.Lock()
        self._cancel_requested = threading.Event()

    # -- transitions ---------------------------------------------------------

    def set_state(self, key: str, new: State) -> None:
        with self._lock:
            old = self.states[key]
            self.states[key] = new
            self.history[key].append(new)
        if new.is_finished() and not old.is_finished():
            self.unfinished -= 1
            for child in self.plan.downstream[key]:
                self.blocking[child] -= 1
                if self.blocking[child] == 0:
                    self.ready.append(child)
        for listener in self.listeners:
            listener(run_id=self.run_id, task_key=key, old=old, new=new)

    def set_flow_state(self, new: State) -> None:
        old, self.flow_state = self.flow_state, new
        for listener in self.listeners:
            listener(run_id=self.run_id, task_key=None, old=old, new=new)

    # -- the loop ------------------------------------------------------------

    def launch(self, key: str) -> None:
        """Submit ``key``'s first attempt, or settle it if its trigger does not pass."""
        spec = self.plan.by_key[key]
        upstream_states = {k: self.states[k] for k in spec.dependencies}
        if not spec.options.trigger(upstream_states):
            failed = failed_upstreams(upstream_states)
            reason = f"upstream task(s) failed: {', '.join(failed)}" if failed else "trigger did not pass"
            self.set_state(key, State(type=StateType.TRIGGER_FAILED, message=reason))
            return
        self.submit(key, attempt=1)

    def submit(self, key: str, attempt: int) -> None:
        spec = self.plan.by_key[key]
        inputs = [self.handles[k] for k in spec.upstream]
        self.running[key] = attempt
        self.set_state(key, State(type=StateType.RUNNING, attempt=attempt))
        self.executor.submit(spec, attempt, inputs)

    def finish_task(self, completion: Completion) -> None:
        result = completion.result
        if self.running.get(result.task_key) != result.attempt:
            return  # a stale attempt (cancelled or superseded)
        del self.running[result.task_key]
        if result.type is StateType.SUCCESS:
            self.handles[result.task_key] = completion.handle
        self.set_state(
            result.task_key,
            State(
                type=result.type,
                message=result.message,
                attempt=result.attempt,
                started_at=result.started_at,
                finished_at=result.finished_at,
                error=result.error,
                exception=result.exception(),
            ),
        )

    def start(self) -> None:
        self.set_flow_state(State(type=StateType.RUNNING, started_at=time.time()))

    def step(self, timeout: float | None = None) -> None:
        while self.ready and not self._cancel_requested.is_set():
            self.launch(self.ready.popleft())
        if self._cancel_requested.is_set():
            self._cancel_outstanding()
            return
        if self.unfinished == 0:
            return
        for completion in self.executor.wait(self.poll_interval if timeout is None else timeout):
            self.finish_task(completion)

    @property
    def done(self) -> bool:
        return self.unfinished == 0

    def run(self) -> RunSummary:
        self.start()
        while not self.done:
            self.step()
        self.set_flow_state(final_flow_state(self.plan, self.states, started_at=self.flow_state.started_at))
        return self.summary()

    def request_cancel(self) -> None:
        """Ask the loop (possibly running in another thread) to cancel the run."""
        self._cancel_requested.set()

    def _cancel_outstanding(self) -> None:
        for key in list(self.running):
            self.executor.cancel(key)
        self.running.clear()
        for key, state in list(self.states.items()):
            if not state.is_finished():
                self.set_state(key, State(type=StateType.CANCELLED, message="run cancelled"))

    # -- reporting -----------------------------------------------------------

    def summary(self) -> RunSummary:
        with self._lock:
            return RunSummary(
                run_id=self.run_id,
                flow_name=self.plan.flow_name,
                state=self.flow_state,
                task_states=dict(self.states),
                history={k: list(v) for k, v in self.history.items()},
                handles=dict(self.handles),
            )


def final_flow_state(plan: Plan, states: Mapping[str, State], *, started_at: float | None = None) -> State:
    """FAILED if any reference task failed (CANCELLED if the run was cancelled), else SUCCESS."""
    now = time.time()
    refs = {k: states[k] for k in plan.reference_keys}
    if any(s.type is StateType.CANCELLED for s in states.values()):
        return State(type=StateType.CANCELLED, message="run cancelled", started_at=started_at, finished_at=now)
    failed = [k for k, s in refs.items() if s.is_failed()]
    if failed:
        first = refs[failed[0]]
        detail = f"{failed[0]}: {first.type.value}" + (f" ({first.message})" if first.message else "")
        return State(
            type=StateType.FAILED,
            message=f"{len(failed)} reference task(s) failed; {detail}",
            started_at=started_at,
            finished_at=now,
        )
    return State(type=StateType.SUCCESS, message="all reference tasks succeeded", started_at=started_at, finished_at=now)
