"""The messages that cross processes: what the orchestrator sends a worker, and what comes back.

Both sides import this module and nothing else of each other's.  Out: a
``Work`` (a task attempt, or a ``ChunkJob`` of a map) with a flat list of
input handles.  Back: an ``AttemptResult`` or a ``ChunkSummary`` (small; the
value itself stays with the executor), errors described by ``describe_error``.

An executor receives a ``Work`` and a flat list of handles; it passes the
handles to the worker as top-level arguments (so Ray resolves them there,
zero-copy for Arrow and numpy data) and the worker rebuilds the structure
from ``Work.layout`` / ``ChunkJob.pieces``.  A mapped task's value is a
``MapHandle``: per-chunk metadata whose handles point at ChunkResults.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import traceback
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from rayflow.signals import Fail, Loop, Pause, Retry, Signal, Skip
from rayflow.states import ErrorInfo, State, StateType

ASYNC_CONCURRENCY = 32  # items of an async task's chunk at once, unless concurrency= says


@dataclass(frozen=True)
class ChunkHandle:
    start: int
    stop: int
    handles: tuple[Any, ...]  # the chunk's first ChunkResult, then its retries'
    flat_start: int = 0  # for flatten consumers: where its items start in the flattened sequence
    flat_stop: int = 0


@dataclass(frozen=True)
class MapHandle:
    """The value of a mapped task: its chunks, in item order."""

    chunks: tuple[ChunkHandle, ...]
    total: int


@dataclass(frozen=True)
class Piece:
    """Items [lo, hi) of one input object (or of a chunk's merged results)."""

    kind: str  # column | value | chunk | flatten_value | flatten_chunk
    objs: tuple[int, ...]  # indices into the flat handle list
    lo: int
    hi: int


@dataclass(frozen=True)
class ChunkJob:
    map_key: str
    chunk: int  # chunk index within the map
    start: int  # global index of the chunk's first item
    size: int  # items in the chunk
    sources: tuple[tuple[Piece, ...], ...]  # per mapped source: the pieces giving its items
    indices: tuple[int, ...] | None = None  # a retry: only these items of the chunk
    attempts: tuple[int, ...] | None = None  # attempt number of each item run (None: all 1)
    load: tuple[str, ...] = ()  # a resumed run: the chunk's stored results (first run, then patches) to load
    deaths: int = 0  # works holding these items that died with their worker so far (policy.after_worker_death)
    slots: int | None = None  # a tagged map: its items run at most this many at once (the limits' slots granted)
    waited: float = 0.0  # seconds it waited for those slots (its span says so)
    upstream: tuple[str | None, ...] = ()  # per source: the map its items come from element-wise (why an item is gated)
    looped: tuple[tuple[int, bytes], ...] = ()  # a retry: (item, pickled (loop_count, loop_result)) of items stopped mid-loop
    # A first run cut before the map measured anything (maps.sizer): seconds after which it may stop
    # with its first items done, the rest left to the map (0: it runs whole).  A worker that cannot
    # stop a chunk midway (a timeout, async, threads, a cache) runs its first BUDGET_PROBE items only.
    budget: float = 0.0


BUDGET_PROBE = 64  # items a budgeted chunk runs where its worker cannot stop it at its budget


@dataclass(frozen=True)
class Work:
    work_id: int
    task_key: str
    attempt: int
    layout: tuple[Any, ...] = ()  # plain tasks: per upstream, ("value", i) or ("map", chunk handle indices)
    job: ChunkJob | None = None
    report_length: str | None = None  # "len" / "flat": report the value's length for a consuming map
    trace: Any = None  # (W3C traceparent, telemetry settings) when the run is traced
    run_id: str = ""
    log_prints: bool = False  # capture print() as log records of the run
    persist: tuple[str, str] | None = None  # a write-behind: (store, name) to write its one input to
    write_inline: bool = False  # write a persisted value before reporting (values shared in-process)
    max_loops: int = 1000  # a plain task: the iterations it may run (rf.Loop: engine.worker.looping)
    looped: bytes | None = None  # a retry of a looping task: (loop_count, loop_result) it resumes at, pickled
    approval: tuple | None = None  # an approved pause: (the approved input, JSON; None) for rf.pause to return
    fused: tuple[Stage, ...] = ()  # a map chunk's fused consumers, in chain order (engine.fusion)


@dataclass(frozen=True)
class Stage:
    """A map fused behind a chunk's work (engine.fusion): its own Work (task key, work id, and
    a job over the same item range whose one source is the previous stage's ChunkResult, the
    last of its values), run in the same worker call when the previous stage's chunk is final
    on its first run.  ``inputs``: its handles after the head's: its payload (put there by the
    executor, ``stage_arguments``), then its unmapped upstream values."""

    work: Work
    inputs: int


def stage_arguments(work: Work, handles: list[Any], payloads: list[Any]) -> list[Any]:
    """A fused work's flat arguments: the head's handles, then per stage its payload and values
    (``handles`` holds the head's, then each stage's values, without payloads)."""
    own = sum(stage.inputs - 1 for stage in work.fused)
    out = list(handles[: len(handles) - own])
    position = len(out)
    for stage, payload in zip(work.fused, payloads):
        out.append(payload)
        out.extend(handles[position : position + stage.inputs - 1])
        position += stage.inputs - 1
    return out


def pack_inputs(inputs: list[Any], *, batch: bool = False, partials: str | None = None) -> tuple[tuple[Any, ...], list[Any]]:
    """A layout plus the flat handles for a plain task's upstream inputs.

    A map's value is laid out as its chunks' result handles: ``"map"`` (the worker makes
    the list of successful values) or, for a ``batch=True`` task, ``"map_batch"`` (one
    column of them, as a batch task's chunk gets it), or for an ``rf.reduce`` folded into
    the map's chunks, ``"map_partial:OP"`` (the chunks' parts, core.reducers).
    """
    flat: list[Any] = []
    layout: list[Any] = []
    for handle in inputs:
        if isinstance(handle, MapHandle):
            chunks = []
            for ch in handle.chunks:
                chunks.append(tuple(range(len(flat), len(flat) + len(ch.handles))))
                flat.extend(ch.handles)
            layout.append((f"map_partial:{partials}" if partials else "map_batch" if batch else "map", tuple(chunks)))
        else:
            layout.append(("value", len(flat)))
            flat.append(handle)
    return tuple(layout), flat


@dataclass(frozen=True)
class ResultPolicy:
    """What a plain task does with the result store (travels in its payload; None: nothing)."""

    store: str  # the store's location: a directory or a pyarrow filesystem URI
    flow_name: str
    task_name: str
    persist: bool  # write the value under runs/<run id>/<task key>
    cache_key_fn: Any = None  # look up / write under cache/<flow>/<task key>/<key>
    cache_expiration: float | None = None  # seconds a cached result counts
    refresh_cache: bool = False
    lineage_key: str = ""  # the task's code, constants and upstream lineage (rayflow.cache)
    load_from: str | None = None  # a resumed run: the stored result to load instead of running


@dataclass(frozen=True)
class ItemCachePolicy:
    """A mapped task's per-item cache (travels in its payload; engine.worker.item_cache)."""

    store: str
    flow_name: str
    task_key: str
    task_name: str
    key_fn: Any  # rf.cache.inputs / lineage (keyed in bulk) or any key function (called per item)
    lineage_key: str = ""
    segments: tuple[str, ...] = ()  # the snapshot of stored segments to look items up in, oldest first


# -- what comes back -------------------------------------------------------------


@dataclass(frozen=True)
class AttemptResult:
    task_key: str
    attempt: int
    type: StateType  # SUCCESS, CACHED, FAILED, or SKIPPED / RETRYING when the task raised a signal
    started_at: float
    finished_at: float
    message: str = ""
    error: ErrorInfo | None = None
    exception_bytes: bytes | None = None
    retryable: bool = True  # False when the exception is not one of the task's retry_on types
    retry_delay: float | None = None  # from rf.Retry(delay=...)
    length: int | None = None  # items in the value, when a map consumes it
    logs: tuple[tuple, ...] = ()  # records captured while it ran (engine.worker.logs)
    artifacts: tuple[tuple, ...] = ()  # rf.artifacts calls while it ran (engine.worker.artifacts)
    persist: tuple[str, str] | None = None  # (store, name) the value is to be written to, behind
    result_path: str | None = None  # where the value is stored (persisted, or the cache entry it came from)
    loops: tuple[tuple[float, float, str], ...] = ()  # rf.Loop: (start, end, message) of each iteration that looped
    loop_state: bytes | None = None  # a failed attempt that looped: where its retry resumes (Work.looped)
    pause: tuple | None = None  # PAUSED by rf.pause: (input's JSON schema or None, timeout seconds or None)

    def exception(self) -> BaseException | None:
        if self.exception_bytes is None:
            return None
        try:
            return cloudpickle.loads(self.exception_bytes)
        except Exception:  # the exception's class is not importable here
            return None


_RAYFLOW_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# The event loop an async task's coroutine runs on (asyncio.run, the loop's own frames) is
# engine too, above the user's first frame.
_ENGINE_DIRS = (_RAYFLOW_DIR, os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep)


def describe_error(exc: BaseException, *, system: bool = False) -> ErrorInfo:
    """A system error keeps every frame: there the engine's own frames are the story."""
    cls = type(exc)
    return ErrorInfo(
        type=f"{cls.__module__}.{cls.__qualname__}",
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)) if system else format_user_traceback(exc),
        system=system,
    )


def format_user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` and of the exceptions chained to it, each from the user's first frame."""
    described = traceback.TracebackException.from_exception(exc)
    pending, seen = [described], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.stack = _drop_engine_frames(current.stack)
        pending.extend(t for t in (current.__cause__, current.__context__) if t is not None)
        pending.extend(getattr(current, "exceptions", None) or ())  # an ExceptionGroup's members
    return "".join(described.format())


def _drop_engine_frames(stack: traceback.StackSummary) -> traceback.StackSummary:
    """Without rayflow's (and the event loop's) frames above the user's first one; kept whole
    when all are rayflow's (its own error)."""
    for i, frame in enumerate(stack):
        if not os.path.abspath(frame.filename).startswith(_ENGINE_DIRS):
            return traceback.StackSummary.from_list(stack[i:]) if i else stack
    return stack


def signal_message(signal: Signal) -> str:
    name = type(signal).__name__
    return f"{name} signal: {signal.message}" if signal.message else f"{name} signal"


@dataclass(frozen=True)
class SignalOutcome:
    type: StateType  # SKIPPED, RETRYING, PAUSED or FAILED
    message: str
    retryable: bool  # a FAILED outcome that the task's retries may retry
    delay: float | None = None  # rf.Retry(delay=...)


def signal_outcome(signal: Signal) -> SignalOutcome:
    """How a signal raised by user code becomes a state: one rule, for tasks and map items alike."""
    message = signal_message(signal)
    if isinstance(signal, Skip):
        return SignalOutcome(StateType.SKIPPED, message, False)
    if isinstance(signal, Retry):
        return SignalOutcome(StateType.RETRYING, message, True, signal.delay)
    if isinstance(signal, Loop):  # only where no loop runs it (engine.worker.looping): a batch=True task
        return SignalOutcome(StateType.FAILED, f"{message} (rf.Loop cannot loop a batch=True task)", False)
    if isinstance(signal, Pause):
        return SignalOutcome(StateType.PAUSED, signal.message or "paused", False)
    return SignalOutcome(StateType.FAILED, message, isinstance(signal, Fail))  # Fail, or a bare Signal: not retried


MAX_REPORTED_ERRORS = 20  # per chunk, in the summary; all are kept in the ChunkResult


@dataclass
class ChunkSummary:
    """What the orchestrator learns about a chunk: counts and the items needing a decision."""

    work_id: int
    map_key: str
    chunk: int
    size: int
    started_at: float
    finished_at: float
    counts: dict[int, int]  # code -> number of items
    failed: list[tuple[int, int, bool, int]] = field(default_factory=list)  # (item, code, retryable, attempt)
    retry: list[tuple[int, float | None, int]] = field(default_factory=list)  # rf.Retry: (item, delay, attempt)
    errors: list[tuple[int, str]] = field(default_factory=list)  # first few (item, "Type: message")
    flat_count: int = 0  # items the successful values hold, for rf.flatten consumers
    indices: tuple[int, ...] | None = None
    logs: tuple[tuple, ...] = ()  # records captured while it ran (engine.worker.logs)
    artifacts: tuple[tuple, ...] = ()  # rf.artifacts calls while it ran (engine.worker.artifacts)
    loaded: bool = False  # the chunk's stored results were loaded (a resumed run), nothing ran
    cached: int = 0  # items whose values came from the cache (counted SUCCESS in ``counts``)
    overhead: float = 0.0  # seconds of one-off costs in the run (a cache index loaded, a segment written)
    persist: tuple[str, str] | None = None  # (store, name) the chunk's result is to be written to, behind
    # (item, code, attempt, error type, message, traceback) per item that did not succeed, and per
    # item of a retry (its successes too): the items the history records one row each for; a retry
    # whose items have no error or reason gives them as ``ran_again`` instead
    items: list[tuple[int, int, int, str | None, str | None, str | None]] = field(default_factory=list)
    ran_again: tuple[Any, Any] | None = None  # a retry: (codes int8, attempts int16) of its ``indices``, no tuple per item
    paused: list[tuple[int, str, Any, float | None]] = field(default_factory=list)  # rf.pause: (item, message, schema, timeout)
    loops: dict[int, bytes] | None = None  # items that stopped mid-loop: item -> where its retry resumes (ChunkJob.looped)
    node: str | None = None  # the Ray node it ran on (set by the runtime; None in process): the chunk record's node
    fed: bool = False  # its result went on to the next fused stage in the same worker call (core.fusion)
    behind: str | None = None  # a fused stage: the map whose chunk it ran behind, in the same worker call
    # a first run's part of the folded rf.reduce (ChunkResult.partial) when it is a number or none:
    # with every chunk's, the orchestrator combines them itself (maps.run.MapRun.reduce_parts)
    partial: tuple | None = None


def settles_first_run(summary: ChunkSummary, retries: int) -> bool:
    """Whether a chunk's first run leaves every item final, as ``maps.outcomes`` decides it with
    no retry spent yet: no ``rf.Retry`` and no pause, and no failure the task's ``retries`` would
    retry.  A fused stage runs on such a chunk only (engine.fusion), and the orchestrator checks
    the same of the chunk before it takes the stage's result."""
    if summary.retry or summary.paused:
        return False
    return retries == 0 or not any(retryable for _, _, retryable, _ in summary.failed)


@dataclass(frozen=True)
class WorkFacts:
    """What one finished or lost work of a map chunk did, as the engine decided it (maps.outcomes):
    the items of the chunk range [start, stop) it made final, by state name (CACHED apart from
    SUCCESS), with RETRYING counting the items it sent to run again less those it ran again
    (so a map's counts are the sum of its works' ``counts``); how many it sent to run again;
    and per item that did not succeed or was run again, its row: (map index, state name,
    attempts, error type, message, traceback)."""

    start: int
    stop: int
    counts: dict[str, int]
    retried: int = 0
    items: tuple[tuple[int, str, int, str | None, str | None, str | None], ...] = ()


@dataclass(frozen=True)
class WriteReport:
    """A write-behind's outcome: where the value was written, or why it was not."""

    task_key: str
    path: str | None
    error: str | None = None
    logs: tuple[tuple, ...] = ()


# -- from the orchestrator to whoever runs it (a FlowRunActor's caller, the local runner) ---------


@dataclass
class RunSummary:
    """What a finished (or live) run reports: picklable, no executor inside."""

    run_id: str
    flow_name: str
    state: State
    task_states: dict[str, State]
    history: dict[str, list[State]]
    handles: dict[str, Any] = field(default_factory=dict)

    def without_handles(self) -> RunSummary:
        return RunSummary(self.run_id, self.flow_name, self.state, self.task_states, self.history)


@dataclass(frozen=True)
class LiveTask:
    state: str  # a StateType's value
    attempt: int
    started_at: float | None
    finished_at: float | None
    message: str | None


@dataclass(frozen=True)
class LiveStatus:
    """A live run's status as its driver's actor has it (``rayflow show`` of a run going on)."""

    run_id: str
    flow: str
    state: str  # a StateType's value
    tasks: dict[str, LiveTask]
    maps: dict[str, dict[str, Any]]  # map key -> its item counts (MapCoordinator.progress)

    @classmethod
    def of(cls, summary: RunSummary, maps: dict[str, dict[str, Any]]) -> LiveStatus:
        tasks = {
            key: LiveTask(state.type.value, state.attempt, state.started_at, state.finished_at, state.message)
            for key, state in summary.task_states.items()
        }
        return cls(summary.run_id, summary.flow_name, summary.state.type.value, tasks, maps)

    def as_dict(self) -> dict[str, Any]:
        """As plain data: what the CLI prints (and ``--json`` writes)."""
        tasks = {key: dataclasses.asdict(task) for key, task in self.tasks.items()}
        return {"run_id": self.run_id, "flow": self.flow, "state": self.state, "tasks": tasks, "maps": self.maps}
