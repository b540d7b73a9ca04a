"""RunTracer: turns one run's state events into spans, in the orchestrating actor.

    flow <name>                     the run, from RUNNING to its final state
    ├── limit wait <key>            a tagged task (or map) waiting for a limit's slot
    ├── pause <key>                 a task PAUSED, from its pause to the decision (or timeout)
    ├── task <key>                  one span per attempt (per iteration of a looping task), worker-measured
    ├── task <key>                  a mapped task: launch to final state
    │   ├── chunk <key>[a:b]        one span per chunk (never per item), item range and counts
    │   └── pause <key>[i]          an item paused (rf.pause): its chunk's end to its run again
    └── flow <inner>                a subflow: its first task's start to its final state
        └── task <inner>/<key>      its tasks (and nested subflows) under it

A span id is chosen for each unit of work before it is submitted and sent
along as a W3C traceparent, so spans the user opens inside a task nest
under it; the span itself is written when the work's outcome (with its real
start and end times) comes back.  Retries, timeouts and skips are span
events; failures set the status, ``error.type`` and an ``exception`` event.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from rayflow.core.parameters import is_secret
from rayflow.engine import columns as C
from rayflow.engine.admission import WAITING_FOR_LIMIT
from rayflow.engine.observers import RunObserver
from rayflow.engine.protocol import Work
from rayflow.states import State, StateType
from rayflow.telemetry.config import TelemetrySettings, flush_providers, new_span_id, provider_for

PREFIX = "rayflow."
REJECTED = ".Rejected"  # the error type of an item run again rejected or not approved in time (engine.worker.pause)


def _ns(seconds: float | None) -> int:
    return int((seconds if seconds is not None else time.time()) * 1e9)


def param_attributes(params: Mapping[str, Any]) -> dict[str, Any]:
    """Plain scalars only; secrets always as ***; anything else left out."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if is_secret(value):
            out[f"{PREFIX}param.{name}"] = "***"
        elif isinstance(value, (bool, int, float, str)):
            out[f"{PREFIX}param.{name}"] = value
    return out


class RunTracer(RunObserver):
    def __init__(self, settings: TelemetrySettings, run_id: str, plan: Any):
        provider, self._ids = provider_for(settings)
        self._tracer = provider.get_tracer("rayflow")
        self._settings = settings.values
        self._run_id = run_id
        self._flow_name = plan.flow_name
        self._params = param_attributes(plan.params)
        if getattr(plan, "resumed_from", None):  # the run this one resumes: find its trace by run id
            self._params[f"{PREFIX}resumed_from"] = plan.resumed_from
        if getattr(plan, "attempt", 1) > 1:  # a resumed run's attempt (each attempt is a trace of its own)
            self._params[f"{PREFIX}run_attempt"] = plan.attempt
        self._links = _links(getattr(plan, "resumed_trace", None))
        self._maps = {s.key for s in plan.specs if s.kind == "map"}
        self._subflows = {s.key: s.name for s in plan.specs if s.kind == "subflow"}
        self._groups: dict[str, Any] = {}  # subflow key -> its open span
        self._flow: Any = None
        self._flow_ctx: Any = None
        self._trace_id = 0
        self._attempts: dict[str, tuple[int, int, float]] = {}  # key -> (attempt, span id, submitted)
        self._chunks: dict[int, int] = {}  # work id -> span id
        self._pauses: dict[str, tuple[float, str]] = {}  # paused task key -> (since, message)
        self._item_pauses: dict[tuple[str, int], tuple[float, str]] = {}  # (map key, index) -> (since, message)
        self._map_spans: dict[str, Any] = {}
        self._map_ids: dict[str, int] = {}
        self._loops: dict[str, int] = {}  # key -> iteration its last span was (rf.Loop)
        self._limit_waits: dict[str, tuple[float, str]] = {}  # key -> (since, message) while it waits for a limit

    @property
    def trace_id(self) -> str:
        return f"{self._trace_id:032x}"

    @property
    def span_id(self) -> str | None:
        """The flow span's id (hex), once it is open."""
        return f"{self._flow.get_span_context().span_id:016x}" if self._flow is not None else None

    def _base(self, key: str | None = None) -> dict[str, Any]:
        attrs = {f"{PREFIX}flow": self._flow_name, f"{PREFIX}run_id": self._run_id}
        if key is not None:
            attrs[f"{PREFIX}task_key"] = key
        return attrs

    def _start(self, name: str, parent: Any, start: float | None, span_id: int | None, attrs: dict) -> Any:
        if span_id is None:
            return self._tracer.start_span(name, context=parent, start_time=_ns(start), attributes=attrs)
        with self._ids.span_id(span_id):
            return self._tracer.start_span(name, context=parent, start_time=_ns(start), attributes=attrs)

    # -- the flow ------------------------------------------------------------

    def _on_flow(self, new: State) -> None:
        if new.type is StateType.RUNNING and self._flow is None:
            attrs = {**self._base(), **self._params}
            self._flow = self._tracer.start_span(
                f"flow {self._flow_name}", context=None, start_time=_ns(new.started_at), attributes=attrs, links=self._links
            )
            self._flow_ctx = trace.set_span_in_context(self._flow)
            self._trace_id = self._flow.get_span_context().trace_id
        elif new.is_finished() and self._flow is not None:
            self._finish(self._flow, new)
            self._flow.end(end_time=_ns(new.finished_at))

    def _finish(self, span: Any, state: State) -> None:
        span.set_attribute(f"{PREFIX}state", state.type.value)
        if state.message:
            span.set_attribute(f"{PREFIX}message", state.message[:500])
        if state.is_failed():
            span.set_status(Status(StatusCode.ERROR, state.message[:200]))
            span.set_attribute("error.type", state.error.type if state.error else state.type.value)
        if state.error is not None:
            span.add_event(
                "exception",
                {
                    "exception.type": state.error.type,
                    "exception.message": state.error.message,
                    "exception.stacktrace": state.error.traceback,
                },
                timestamp=_ns(state.finished_at),
            )

    # -- listener and work decoration --------------------------------------------

    def _parent(self, key: str, at: float | None) -> Any:
        """The context a task's span nests in: its subflow's span, else the flow's."""
        group = key.rpartition("/")[0]
        if not group:
            return self._flow_ctx
        return trace.set_span_in_context(self._group_span(group, at))

    def _group_span(self, key: str, at: float | None) -> Any:
        span = self._groups.get(key)
        if span is None:
            attrs = {**self._base(key), f"{PREFIX}subflow": self._subflows.get(key, key)}
            name = f"flow {self._subflows.get(key, key.rsplit('/', 1)[-1])}"
            span = self._groups[key] = self._start(name, self._parent(key, at), at, None, attrs)
        return span

    def _on_subflow(self, key: str, new: State) -> None:
        if not new.is_finished():
            return  # building its value is not a task of the user's
        self._attempts.pop(key, None)
        span = self._group_span(key, new.started_at or new.timestamp)
        self._finish(span, new)
        span.end(end_time=_ns(new.finished_at or new.timestamp))
        del self._groups[key]

    def on_transition(self, *, run_id: str, task_key: str | None, old: State, new: State) -> None:
        if task_key is None:
            self._on_flow(new)
            return
        if "/" in task_key:
            self._parent(task_key, new.timestamp)  # a subflow's span opens with its first event
        if new.type is StateType.PAUSED:
            self._pauses.setdefault(task_key, (new.timestamp, new.message))
        elif task_key in self._pauses:
            self._pause_span(task_key, *self._pauses.pop(task_key), new)
        if new.type is StateType.PENDING and new.message.startswith(WAITING_FOR_LIMIT):
            self._limit_waits.setdefault(task_key, (new.timestamp, new.message))
            return
        if task_key in self._limit_waits:
            self._limit_wait_span(task_key, *self._limit_waits.pop(task_key), new.timestamp)
        if task_key in self._subflows:
            self._on_subflow(task_key, new)
        elif task_key in self._maps:
            self._on_map(task_key, new)
        elif old.type in (StateType.RUNNING, StateType.LOOPED) and new.type is not StateType.RUNNING:
            self._attempt_span(task_key, new, old)
        elif new.is_finished():  # settled without running: skipped, trigger failed, cancelled
            span = self._start(f"task {task_key}", self._parent(task_key, new.timestamp), new.timestamp, None, self._base(task_key))
            span.add_event(new.type.value.lower(), {f"{PREFIX}reason": new.message}, timestamp=_ns(new.timestamp))
            self._finish(span, new)
            span.end(end_time=_ns(new.timestamp))

    def _limit_wait_span(self, key: str, since: float, message: str, until: float) -> None:
        attrs = {**self._base(key), f"{PREFIX}limit": message[len(WAITING_FOR_LIMIT) :].strip(" '")}
        span = self._start(f"limit wait {key}", self._parent(key, since), since, None, attrs)
        span.end(end_time=_ns(until))

    def _pause_span(self, key: str, since: float, message: str, decided: State) -> None:
        """From the pause to its decision: approved (the task runs again), or why it failed."""
        outcome = "approved" if decided.type is StateType.RUNNING else decided.message[:500]
        attrs = {**self._base(key), f"{PREFIX}pause.message": message[:500], f"{PREFIX}pause.outcome": outcome}
        span = self._start(f"pause {key}", self._parent(key, since), since, None, attrs)
        span.end(end_time=_ns(decided.timestamp))

    def _attempt_span(self, key: str, new: State, old: State) -> None:
        """One span per attempt; a looping task's attempt (rf.Loop) one per iteration, from the
        LOOPED state that ended the one before (the first has the attempt's span id)."""
        attempt, span_id, submitted = self._attempts.pop(key, (new.attempt, None, new.timestamp))
        attrs = {**self._base(key), f"{PREFIX}attempt": attempt}
        start = new.started_at or submitted
        if old.type is StateType.LOOPED or new.type is StateType.LOOPED:
            # the iteration: one more than the span before; a retry's first resumes the one that failed
            count = self._loops[key] = self._loops.get(key, 0) + 1 if old.type is StateType.LOOPED else self._loops.get(key, 1)
            attrs[f"{PREFIX}loop_count"] = count
            start = old.finished_at if old.type is StateType.LOOPED and old.finished_at else start
        span = self._start(f"task {key}", self._parent(key, submitted), start, span_id, attrs)
        end = new.finished_at or time.time()
        reason = {f"{PREFIX}reason": new.message[:500]}
        if "timed out" in new.message:
            span.add_event("timeout", reason, timestamp=_ns(end))
        if new.type is StateType.SKIPPED:
            span.add_event("skipped", reason, timestamp=_ns(end))
        if new.type is StateType.LOOPED:
            span.add_event("loop", reason, timestamp=_ns(end))
        if new.type is StateType.RETRYING:
            span.add_event("retry", {**reason, f"{PREFIX}retry_at": new.scheduled_for or 0.0}, timestamp=_ns(end))
        # A retried attempt failed too: its span says so, and says it will be retried.
        self._finish(span, new.model_copy(update={"type": StateType.FAILED}) if new.type is StateType.RETRYING else new)
        if new.type is StateType.RETRYING:
            span.set_attribute(f"{PREFIX}state", "RETRYING")
        span.end(end_time=_ns(end))

    def _on_map(self, key: str, new: State) -> None:
        if new.type is StateType.RUNNING and key not in self._map_spans:
            span_id = self._map_ids.setdefault(key, new_span_id())
            self._map_spans[key] = self._start(f"task {key}", self._parent(key, new.timestamp), new.timestamp, span_id, {**self._base(key), f"{PREFIX}mapped": True})
        elif new.is_finished():
            span = self._map_spans.pop(key, None)
            if span is None:  # settled without running
                span = self._start(f"task {key}", self._parent(key, new.timestamp), new.timestamp, None, {**self._base(key), f"{PREFIX}mapped": True})
            for key_index in [k for k in self._item_pauses if k[0] == key]:  # undecided when the map ended
                self._item_pause_span(*key_index, new.message[:500] or new.type.value, new.finished_at or new.timestamp)
            self._finish(span, new)
            span.end(end_time=_ns(new.finished_at or new.timestamp))

    def _item_pause_span(self, key: str, index: int, outcome: str, until: float) -> None:
        """A map item's pause, from the chunk that paused it to its run again (approved or
        rejected: it runs again to fail saying why), under the map's span."""
        since, message = self._item_pauses.pop((key, index))
        attrs = {**self._base(key), f"{PREFIX}map_index": index, f"{PREFIX}pause.message": message[:500],
                 f"{PREFIX}pause.outcome": outcome}
        parent = self._map_spans.get(key)
        ctx = trace.set_span_in_context(parent) if parent is not None else self._parent(key, since)
        span = self._start(f"pause {key}[{index}]", ctx, since, None, attrs)
        span.end(end_time=_ns(until))

    def _item_pauses_seen(self, key: str, job: Any, summary: Any) -> None:
        """Close the pauses of the items ``summary``'s retry ran again; open those it paused."""
        if summary is None:
            return
        paused = {item for item, *_ in summary.paused}  # paused again (its input refused): still waiting
        if job.indices is not None:
            rejected = {item: (message or "").split(" signal: ", 1)[-1] for item, code, _, kind, message, _ in summary.items
                        if code in C.FINAL_FAILED and (kind or "").endswith(REJECTED)}
            for item in job.indices:
                if item not in paused and (key, job.start + item) in self._item_pauses:
                    outcome = (rejected[item] or "rejected")[:500] if item in rejected else "approved"
                    self._item_pause_span(key, job.start + item, outcome, summary.started_at)
        for item, message, *_ in summary.paused:
            self._item_pauses.setdefault((key, job.start + item), (summary.finished_at, message))

    def on_work(self, *, work: Work) -> Work:
        """Choose the span id of ``work`` now and send its traceparent along with it."""
        span_id = new_span_id()
        if work.job is None:
            self._attempts[work.task_key] = (work.attempt, span_id, time.time())
        else:
            self._chunks[work.work_id] = span_id
        traceparent = f"00-{self._trace_id:032x}-{span_id:016x}-01"
        return dataclasses.replace(work, trace=(traceparent, self._settings))

    def on_chunk(self, *, task_key: str, work: Work, summary: Any, error: Any, facts: Any = None) -> None:
        span_id = self._chunks.pop(work.work_id, None)
        parent = self._map_spans.get(task_key)
        job = work.job
        stop = facts.stop if facts is not None else job.start + job.size  # a budgeted chunk may stop early
        attrs = {
            **self._base(task_key),
            f"{PREFIX}map_index_start": job.start,
            f"{PREFIX}map_index_stop": stop,
            f"{PREFIX}items": summary.size if summary is not None else (len(job.indices) if job.indices else job.size),
        }
        if job.indices is not None:
            attrs[f"{PREFIX}retried_items"] = len(job.indices)
        if getattr(summary, "behind", None):  # a fused stage (core.fusion): the map it ran behind
            attrs[f"{PREFIX}fused_behind"] = summary.behind
        if job.slots is not None:  # a tagged map's chunk: the limits' slots it ran with, and its wait for them
            attrs[f"{PREFIX}limit_slots"] = job.slots
            attrs[f"{PREFIX}limit_wait_seconds"] = round(job.waited, 3)
        start = summary.started_at if summary is not None else None
        ctx = trace.set_span_in_context(parent) if parent is not None else self._parent(task_key, start)
        span = self._start(f"chunk {task_key}[{job.start}:{stop}]", ctx, start, span_id, attrs)
        end = summary.finished_at if summary is not None else time.time()
        if summary is None:
            span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
            span.set_attribute("error.type", error.type if error is not None else "lost")
        else:
            for code, n in summary.counts.items():
                span.set_attribute(f"{PREFIX}items.{C.CODES[code].value.lower()}", n)
            if summary.cached:
                span.set_attribute(f"{PREFIX}items.cached", summary.cached)
            failed = sum(n for code, n in summary.counts.items() if code in C.FINAL_FAILED)
            if failed:
                span.set_status(Status(StatusCode.ERROR, f"{failed} item(s) failed"))
                first = summary.errors[0][1] if summary.errors else ""
                span.set_attribute("error.type", first.split(":", 1)[0] or "ItemFailed")
            if summary.retry or any(retryable for _, _, retryable, _ in summary.failed):
                span.add_event("retry", {f"{PREFIX}items": len(summary.retry) + len(summary.failed)}, timestamp=_ns(end))
            skipped = summary.counts.get(C.SKIPPED, 0)
            if skipped:
                span.add_event("skipped", {f"{PREFIX}items": skipped}, timestamp=_ns(end))
            timed_out = summary.counts.get(C.TIMED_OUT, 0)
            if timed_out:
                span.add_event("timeout", {f"{PREFIX}items": timed_out}, timestamp=_ns(end))
        span.end(end_time=_ns(end))
        self._item_pauses_seen(task_key, job, summary)


def flush_all(timeout: float = 2.0) -> None:
    flush_providers(timeout)


def _links(recorded: Any) -> list[trace.Link]:
    """A link to the flow span of the run this one resumes, when that run was traced."""
    if not recorded:
        return []
    try:
        trace_id, span_id = int(recorded[0], 16), int(recorded[1], 16)
    except (TypeError, ValueError, IndexError):
        return []
    context = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    return [trace.Link(context, {f"{PREFIX}link": "resumes"})]
