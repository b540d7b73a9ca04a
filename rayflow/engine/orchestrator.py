"""The event loop of one flow run, independent of where tasks execute.

State, all of it explicit on the instance:

- ``states`` / ``history``: task key -> current State / every State, in order
- ``blocking``: task key -> number of its dependencies not yet finished
- ``ready``: keys whose dependencies have all finished, waiting to launch
- ``running``: task key -> the Work of its attempt in flight (plain tasks)
- ``deadlines``: task key -> (work id, time) its running attempt times out
- ``lengths``: task key -> items in its value, for the maps that consume it
- ``maps``: the MapCoordinator, which owns one MapRun per running mapped task
- ``scheduled``: heap of (due time, seq, task key) retries waiting for their delay
- ``retries``: attempts and retries spent per task key (engine.retries)
- ``handles``: task key -> executor handle of the value it produced
- ``writes``: the write-behind works in flight (engine.writes)
- ``gating``: limits by tag: the run's gate and the chunks waiting for slots (engine.admission)
- ``pauses``: the paused tasks, waiting for a person's decision (engine.pauses)

One step: resubmit retries that are due, act on paused tasks' decisions, launch every ready
task (or settle it without running: unmet case, skipped upstream, trigger, merge, manual_only),
time out attempts past their deadline, then wait for executor events and apply them.  This loop
is the only retry authority: a retry delay is a heap entry here, never a sleep in a worker.

User errors (their exception, a timeout, ``rf.Fail``) use ``retries``, system errors ``system_retries``.
Persisted results are written behind (engine.writes): the run ends when all are; one failing fails it.

Every collaborator is a constructor argument (executor, observers, tag gate, feeder,
pause book); ``runs.assembly.assemble_run`` is the one place both runners build one.

Observers (``engine.observers.RunObserver``) watch the run through one set of keyword-only
hooks.  The state handlers are the first observer: their ``amend`` runs inside ``transition``
and may replace the new state; the loop then follows the state it got.  Maps are delegated to
the MapCoordinator, which returns ``MapActions`` that ``_apply`` carries out.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rayflow.engine.admission import GATE_RETRY_SECONDS, Gating, waiting_message
from rayflow.engine.executor import Completion, Executor, Started, system_failure
from rayflow.engine.handlers import StateHandlers
from rayflow.engine.maps.coordinator import MapActions, MapCoordinator
from rayflow.engine.observers import HOOKS, RunObserver, overridden
from rayflow.engine.pauses import PauseBook, PauseDesk
from rayflow.engine.plan import Plan
from rayflow.engine.policy import (
    after_retry_signal, final_flow_state, settle_before_run, settle_merge, settle_subflow, subflow_span,
)
from rayflow.engine.retries import RetryLedger
from rayflow.engine.protocol import AttemptResult, RunSummary, Work, pack_inputs
from rayflow.engine.writes import WriteBehind
from rayflow.states import State, StateType

__all__ = ["Orchestrator", "RunSummary", "final_flow_state"]


class Orchestrator:
    def __init__(
        self,
        plan: Plan,
        executor: Executor,
        run_id: str,
        *,
        observers: tuple[RunObserver, ...] = (),
        poll_interval: float = 0.2,
        clock: Callable[[], float] = time.time,
        cpus: int = 2,
        feeder: Any = None,
        gate: Any = None,
        pauses: PauseBook | None = None,
    ):
        """``feeder``: asked for items of generator inputs (``request(stream_id, count)``: the
        items now as (handle, count, exhausted), or None when they come later through
        ``push_stream``).  ``gate``: limits by tag (engine.admission.TagGate), None when no
        task of the plan has tags: a tagged task waits for a slot of each limit its tags name
        before it is submitted, so a waiting task holds no worker.  ``pauses``: engine.pauses."""
        self.plan = plan
        self.executor = executor
        self.run_id = run_id
        self.poll_interval = poll_interval
        self.clock = clock
        # A State made without a timestamp gets time.time() from pydantic; with another clock
        # injected (a test's fake clock), transition() stamps it from that clock instead.
        self._stamp = clock is not time.time
        pending = State(type=StateType.PENDING, timestamp=clock())
        self.flow_state = pending
        keys = [s.key for s in plan.specs]
        self.states: dict[str, State] = dict.fromkeys(keys, pending)
        self.history: dict[str, list[State]] = {k: [v] for k, v in self.states.items()}
        self.blocking: dict[str, int] = {
            s.key: len([d for d in s.dependencies if d not in s.streaming]) for s in plan.specs
        }
        self.ready: deque[str] = deque(k for k, n in self.blocking.items() if n == 0)
        self.running: dict[str, Work] = {}
        self.deadlines: dict[str, tuple[int, float]] = {}
        self.lengths: dict[str, int | None] = {}
        self.feeder = feeder
        self.observers: tuple[RunObserver, ...] = ()
        self._attach(StateHandlers(plan, self), *observers)
        self._work_ids = itertools.count(1)
        self.maps = MapCoordinator(plan, cpus=cpus, clock=clock, put=executor.put, next_work_id=self.next_work_id)
        self.scheduled: list[tuple[float, int, str]] = []
        self.gating = Gating(gate)
        self.retries = RetryLedger(plan, clock)
        self.pauses = PauseDesk(pauses, clock, resumed=plan.attempt > 1)
        self.handles: dict[str, Any] = {}
        self.writes = WriteBehind(plan, executor, run_id, self.next_work_id)
        self._shares_values = bool(getattr(executor, "shares_values", False))  # in-process: write inline
        self.unfinished = len(keys)
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._cancel_requested = threading.Event()

    def _attach(self, *observers: RunObserver) -> None:
        """The observers, in order (engine.observers); only while the Orchestrator is built."""
        self.observers += observers
        for hook in HOOKS:
            setattr(self, f"_{hook}", overridden(self.observers, hook))

    # -- transitions ---------------------------------------------------------

    def transition(self, key: str, new: State) -> State:
        """Move ``key`` to ``new`` (as its handlers may amend it); returns the state it got."""
        old = self.states[key]
        for amend in self._amend:
            new = amend(task_key=key, old=old, new=new)
        if self._stamp and "timestamp" not in new.model_fields_set:
            new = new.model_copy(update={"timestamp": self.clock()})
        with self._lock:
            self.states[key] = new
            self.history[key].append(new)
        if new.type is not StateType.RUNNING:
            self.gating.stopped(key)  # the attempt stopped running (or never started): its slots
        if new.is_finished() and not old.is_finished():
            self.unfinished -= 1
            self.running.pop(key, None)
            self.deadlines.pop(key, None)
            for child in self.plan.downstream[key]:
                if key in self.plan.by_key[child].streaming:
                    continue
                self.blocking[child] -= 1
                if self.blocking[child] == 0:
                    self.ready.append(child)
        for hook in self._on_transition:
            hook(run_id=self.run_id, task_key=key, old=old, new=new)
        return new

    def set_flow_state(self, new: State) -> State:
        old = self.flow_state
        for amend in self._amend:
            new = amend(task_key=None, old=old, new=new)
        if self._stamp and "timestamp" not in new.model_fields_set:
            new = new.model_copy(update={"timestamp": self.clock()})
        self.flow_state = new
        for hook in self._on_transition:
            hook(run_id=self.run_id, task_key=None, old=old, new=new)
        return new

    def follow(self, key: str, state: State) -> None:
        """Act on a state a transition produced: wait out a retry, or nothing."""
        if state.is_finished():
            return
        if state.type in (StateType.RETRYING, StateType.SCHEDULED, StateType.PENDING):
            due = state.scheduled_for if state.scheduled_for is not None else self.clock()
            heapq.heappush(self.scheduled, (due, next(self._seq), key))
        elif state.type is StateType.RUNNING and key not in self.running:
            heapq.heappush(self.scheduled, (self.clock(), next(self._seq), key))

    # -- launching -----------------------------------------------------------

    def next_work_id(self) -> int:
        return next(self._work_ids)

    def prepare(self, work: Work) -> Work:
        options, job = self.plan.by_key[work.task_key].options, work.job
        approval = self.pauses.item_approvals(work.task_key, job.start, job.indices, job.size) if job else work.approval
        fused = tuple(dataclasses.replace(stage, work=self.prepare(stage.work)) for stage in work.fused)
        work = dataclasses.replace(
            work, run_id=self.run_id, log_prints=options.log_prints, write_inline=self._shares_values, approval=approval, fused=fused
        )
        for hook in self._on_work:
            work = hook(work=work)
        return work

    def _apply(self, actions: MapActions) -> None:
        """Carry out what the map coordinator decided."""
        for work_id in actions.cancel:
            if self.gating.chunk_ended(work_id):  # else it was never submitted
                self.executor.cancel(work_id)
        for spec, work, handles in actions.submit:
            if self.gating.holds(spec):
                self.gating.offer(spec, work, handles, self.clock())
            elif work.fused:  # a chunk with the maps fused behind it (core.fusion)
                self.executor.submit(spec, self.prepare(work), handles, tuple(self.plan.by_key[s.work.task_key] for s in work.fused))
            else:
                self.executor.submit(spec, self.prepare(work), handles)
        if actions.submit and self.gating.waiting:
            self._admit_chunks()
        if self.feeder is not None:
            for stream_id, count in actions.requests:
                items = self.feeder.request(stream_id, count)
                if items is not None:
                    self.push_stream(stream_id, *items)
        for key, state, handle in actions.settled:
            if self.states[key].is_finished():
                continue
            if handle is not None:
                self.handles[key] = handle
            self.follow(key, self.transition(key, state))
        for work, report, handle in actions.replay:  # fused stages' results, taken now
            self.on_completion(Completion(work, report, handle))

    def _admit_chunks(self) -> None:
        """Submit the tagged maps' chunks the limits have slots for; label maps left waiting."""
        now = self.clock()
        admitted, changed = self.gating.admit(now)
        for spec, work, handles in admitted:
            self.executor.submit(spec, self.prepare(work), handles)
        for key, limit in changed.items():
            if not self.states[key].is_finished():  # a map's label only: nothing is scheduled for it
                waiting = State(type=StateType.PENDING, message=waiting_message(limit), timestamp=now)
                self.transition(key, waiting if limit else State(type=StateType.RUNNING, timestamp=now))

    def launch(self, key: str) -> None:
        """A task whose blocking dependencies finished: settle it, or start it."""
        spec = self.plan.by_key[key]
        blocking = tuple(k for k in spec.dependencies if k not in spec.streaming)
        upstream = self.maps.upstream_states(self.states, blocking)
        settled = settle_before_run(spec, upstream, self.maps.skip_view(self.states, blocking))
        settled = settled if settled is not None else self.pauses.before_run(key, spec.options.trigger)
        if settled is None and spec.kind == "map":
            settled = self.maps.settle_streaming(spec, self.states)
            if settled is None:
                self.transition(key, State(type=StateType.RUNNING, timestamp=self.clock()))
                self._apply(self.maps.launch(spec, self.handles, self.lengths))
                return
        if settled is None and spec.kind == "subflow":
            settled = settle_subflow(spec, self.states)  # else: run, to build its value
            if settled is not None:
                settled = settled.model_copy(update=self._subflow_span(key, self.clock()))
        if settled is None and spec.kind == "merge":
            settled, branch = settle_merge(spec, self.states)
            if branch is not None:
                self.handles[key] = self.handles.get(branch)
        if settled is not None:
            self.follow(key, self.transition(key, settled))
            return
        self.submit(key)

    def submit(self, key: str) -> None:
        spec = self.plan.by_key[key]
        attempt = self.retries.attempts[key] + 1
        now = self.clock()
        waiting_for = self.gating.task_waits_for(spec)
        if waiting_for is not None:  # no slot: PENDING, named, and asked again shortly
            message = waiting_message(waiting_for)
            if self.states[key].message != message:
                self.transition(key, State(type=StateType.PENDING, attempt=attempt, message=message, timestamp=now))
            heapq.heappush(self.scheduled, (now + GATE_RETRY_SECONDS, next(self._seq), key))
            return
        state = self.transition(key, State(type=StateType.RUNNING, attempt=attempt, timestamp=now))
        if state.type is not StateType.RUNNING:
            self.follow(key, state)
            return
        self.retries.attempts[key] = attempt
        layout, handles = pack_inputs([self.handles.get(k) for k in spec.value_keys], batch=spec.options.batch, partials=spec.partials)
        extra = {"max_loops": spec.options.max_loops, "looped": self.retries.looped.get(key), "approval": self.pauses.approval(key)}  # rf.Loop, rf.pause
        self.running[key] = work = self.prepare(Work(self.next_work_id(), key, attempt, layout, report_length=spec.report_length, **extra))
        if (here := self.maps.fold_here(spec, work)) is not None:  # an rf.reduce's parts, combined here: no worker
            return self.on_completion(here)
        self.executor.submit(spec, work, handles)

    # -- outcomes ------------------------------------------------------------

    def on_started(self, event: Started) -> None:
        work = next((w for w in self.running.values() if w.work_id == event.work_id), None)
        timeout = self.plan.by_key[work.task_key].options.timeout if work is not None else None
        if timeout is not None:
            self.deadlines[work.task_key] = (work.work_id, event.at + timeout)

    def on_completion(self, completion: Completion) -> None:
        if completion.work.job is not None and (completion := self.maps.receive(completion)) is None:
            return  # a fused stage's result, waiting for its map to adopt its chunk, or not taken
        work = completion.work
        if completion.report is not None:
            for hook in self._on_report:
                hook(work=work, report=completion.report)
        if work.persist is not None:
            self.writes.written(completion)
            return
        if work.job is not None:
            self.gating.chunk_ended(work.work_id)  # its slots go back
            owned = self.maps.owns(work.work_id)  # else stale: cancelled, or its map ended
            actions = self.maps.finish_work(work, completion.report, completion.handle, completion.system_error)
            if owned:  # with what the map made of it (its items' facts)
                facts = actions.facts[0] if actions.facts else None
                for hook in self._on_chunk:
                    hook(task_key=work.task_key, work=work, summary=completion.report, error=completion.system_error, facts=facts)
            self._apply(actions)
            if owned and completion.report is not None:
                self.writes.write(work.task_key, completion.report.persist, completion.handle)
                for item, message, schema, timeout in completion.report.paused:  # rf.pause in items
                    self.pauses.pause(work.task_key, message, schema, timeout, {}, index=work.job.start + item)
            return
        current = self.running.get(work.task_key)
        if current is None or current.work_id != work.work_id:
            return  # a stale attempt: timed out, cancelled or superseded
        result = completion.report
        if result is None:
            error = completion.system_error
            now = self.clock()
            result = system_failure(work.task_key, work.attempt, error, now, now)
        self._finish_attempt(result, completion.handle)

    def _finish_attempt(self, result: AttemptResult, handle: Any) -> None:
        key = result.task_key
        del self.running[key]
        self.deadlines.pop(key, None)
        for looped in self.retries.loops(result):  # rf.Loop: one LOOPED state per iteration that looped
            self.transition(key, looped)
        timing = {"attempt": result.attempt, "started_at": result.started_at, "finished_at": result.finished_at}
        if self.plan.by_key[key].kind == "subflow":
            timing.update(self._subflow_span(key, result.finished_at))
        if result.type in (StateType.SUCCESS, StateType.CACHED):  # CACHED: the stored value, not run
            self.handles[key] = handle
            self.lengths[key] = result.length
            self.writes.write(key, result.persist, handle)
            new = State(type=result.type, message=result.message, **timing)
        elif result.type is StateType.SKIPPED:
            new = State(type=StateType.SKIPPED, message=result.message, **timing)
        elif result.type is StateType.PAUSED:  # rf.pause: its worker is free, it waits for a decision
            new = self.pauses.pause(key, result.message, *(result.pause or (None, None)), timing)
        elif result.type is StateType.RETRYING:  # rf.Retry: retried even past `retries`, spends none
            delay = after_retry_signal(self.plan.by_key[key].options, self.retries.app_failures[key], result.retry_delay)
            new = self.retries.retrying(result.message, delay, timing)
        else:
            new = self.retries.after_failure(key, result, timing)
        self.follow(key, self.transition(key, new))

    def _subflow_span(self, key: str, end: float) -> dict[str, float | None]:
        return subflow_span([self.states[k] for k in self.plan.by_key[key].members], end)

    def time_out(self, key: str) -> None:
        work_id, deadline = self.deadlines.pop(key)
        options = self.plan.by_key[key].options
        self.executor.cancel(work_id)
        attempt = self.running.pop(key).attempt
        message = f"timed out after {options.timeout:g}s"
        timing = {"attempt": attempt, "started_at": deadline - options.timeout, "finished_at": self.clock()}
        new = self.retries.spend(key, message, timing) or State(type=StateType.TIMED_OUT, message=message, **timing)
        self.follow(key, self.transition(key, new))

    # -- the loop ------------------------------------------------------------

    def start(self) -> None:
        if self.flow_state.type is StateType.PENDING:
            self.set_flow_state(State(type=StateType.RUNNING, started_at=self.clock()))

    def step(self, timeout: float | None = None) -> None:
        if self._cancel_requested.is_set():
            self._cancel_outstanding()
            return
        self._apply(self.maps.drain_streams())
        now = self.clock()
        self._apply(self.maps.pump_due(now))
        if self.gating.due_at is not None and self.gating.due_at <= now:
            self._admit_chunks()
        while self.scheduled and self.scheduled[0][0] <= now:
            _, _, key = heapq.heappop(self.scheduled)
            if not self.states[key].is_finished():
                self.submit(key)
        self.pauses.settle(now, self)  # decided pauses: run again (an item: told its decision), or FAILED
        while self.ready:
            self.launch(self.ready.popleft())
        self._apply(self.maps.pump_deferred())  # maps launched with the maps fused behind them
        for key, (_, deadline) in list(self.deadlines.items()):
            if deadline <= now:
                self.time_out(key)
        if self.done or self.ready:
            return
        for event in self.executor.wait(self._wait_time(timeout)):
            (self.on_started if isinstance(event, Started) else self.on_completion)(event)

    def _wait_time(self, timeout: float | None) -> float:
        wait = self.poll_interval if timeout is None else timeout
        now = self.clock()
        if self.scheduled:
            wait = min(wait, max(0.0, self.scheduled[0][0] - now))
        timeouts = (deadline for _, deadline in self.deadlines.values())
        for due in (self.maps.next_due(), self.gating.due_at, self.pauses.next_due(), *timeouts):
            if due is not None:
                wait = min(wait, max(0.0, due - now))
        return 0.0 if self.maps.has_stream_input() else wait

    @property
    def done(self) -> bool:
        return self.unfinished == 0 and not self.writes.pending

    def run(self) -> RunSummary:
        self.start()
        while not self.done:
            self.step()
        final = final_flow_state(self.plan, self.states, started_at=self.flow_state.started_at, now=self.clock())
        self.set_flow_state(self.writes.final(final))
        return self.summary()

    # -- what other threads may call: the actor's methods, the driver's feeder --------

    def request_cancel(self) -> None:
        """Ask the loop (possibly running in another thread) to cancel the run."""
        self._cancel_requested.set()

    def push_stream(self, stream_id: int, handle: Any, count: int, exhausted: bool) -> None:
        """Items of a generator input arrived; the loop takes them on its next step."""
        self.maps.push_stream(stream_id, handle, count, exhausted)

    def progress(self) -> dict[str, dict[str, Any]]:
        """Each map's item counts now, as a consistent snapshot."""
        return self.maps.progress()

    def release_values(self) -> None:
        """Forget the value handles: whoever holds the summary keeps them alive now."""
        self.handles.clear()

    def _cancel_outstanding(self) -> None:  # in the loop's thread
        self._apply(self.maps.cancel())
        self.gating.cancel()
        for work in list(self.running.values()):
            self.executor.cancel(work.work_id)
        self.running.clear()
        self.deadlines.clear()
        self.scheduled.clear()
        self.writes.drop()
        for key, state in list(self.states.items()):
            if not state.is_finished():
                self.transition(key, State(type=StateType.CANCELLED, message="run cancelled"))

    def summary(self) -> RunSummary:
        with self._lock:
            history = {k: list(v) for k, v in self.history.items()}
            return RunSummary(self.run_id, self.plan.flow_name, self.flow_state, dict(self.states), history, dict(self.handles))

