"""The orchestrator's side of mapped tasks: launching MapRuns, feeding them, finishing them.

``MapCoordinator`` owns every MapRun of a run.  A map is launched like any
task once its *blocking* dependencies have finished; upstream maps it
consumes chunk by chunk are not blocking, so it starts while they still run.
Whenever a chunk finishes, its map and the maps streaming from it are
pumped: new works are created within each map's ``max_in_flight``.

The coordinator decides and the orchestrator acts: every method that changes
something returns ``MapActions`` (works to submit, items to ask a generator
feeder for, maps that ended with their state and value, works to cancel),
which the orchestrator applies.  It holds no reference to the orchestrator;
what it reads of the run (the plan, upstream values and lengths, task
states) is passed in, and the only things it calls are ``put`` (store a
value, for a failed chunk's placeholder result), ``next_work_id`` and the
injected ``clock``.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rayflow.core.reducers import OPS
from rayflow.engine import columns as C
from rayflow.engine.columns import ChunkResult, encode_values
from rayflow.engine.executor import Completion
from rayflow.engine.maps.item_states import ItemStates
from rayflow.engine.maps.feeds import MapFeed, StreamFeed, WholeFeed
from rayflow.engine.maps.run import MapRun
from rayflow.engine.maps.stages import StageBook
from rayflow.engine.plan import Plan, TaskSpec
from rayflow.engine.policy import FAIL, RETRY
from rayflow.engine.protocol import AttemptResult, ChunkJob, ChunkSummary, MapHandle, Piece, Stage, Work, WorkFacts
from rayflow.states import ErrorInfo, State, StateType, error_text


@dataclass
class MapActions:
    """What the coordinator wants done, in the order the orchestrator applies it."""

    cancel: list[int] = field(default_factory=list)  # work ids
    submit: list[tuple[TaskSpec, Work, list[Any]]] = field(default_factory=list)  # with flat input handles
    requests: list[tuple[int, int]] = field(default_factory=list)  # (stream id, items) to ask the feeder for
    settled: list[tuple[str, State, MapHandle | None]] = field(default_factory=list)  # maps that ended
    facts: list[WorkFacts] = field(default_factory=list)  # what the finished works did (observers record it)
    replay: list[tuple[Work, ChunkSummary, Any]] = field(default_factory=list)  # fused stages' results now taken

    def __bool__(self) -> bool:
        return bool(self.cancel or self.submit or self.requests or self.settled or self.replay)


class MapCoordinator:
    def __init__(
        self,
        plan: Plan,
        *,
        cpus: int,
        clock: Callable[[], float],
        put: Callable[[Any], Any],
        next_work_id: Callable[[], int],
    ):
        self.plan = plan
        self.cpus = cpus
        self.clock = clock
        self.put = put
        self.next_work_id = next_work_id
        self.maps: dict[str, MapRun] = {}
        self.values: dict[str, list[Any]] = {}  # map key -> handles of its whole (non-mapped) inputs
        self.jobs: dict[int, tuple[str, ChunkJob]] = {}  # work id -> (map key, job) in flight
        self.settled: set[str] = set()  # maps whose end was reported
        self.streams: dict[int, StreamFeed] = {}
        self.stream_owner: dict[int, str] = {}
        self.stream_inbox: collections.deque[tuple[int, Any, int, bool]] = collections.deque()
        self.children: dict[str, list[str]] = collections.defaultdict(list)
        self.fuse_next = {a: b for chain in plan.fused for a, b in zip(chain, chain[1:])}  # core.fusion
        self.stages = StageBook()
        self.deferred: list[str] = []  # maps launched before the map fused behind them (pump_deferred)
        self._out = MapActions()
        # progress() is called on other threads (the Ray actor answers the driver's progress
        # bar while the run loop goes on): it reads self.maps and each MapRun's counts, total
        # and done under this lock, which the loop holds wherever it changes them.  A lock
        # rather than a snapshot the loop publishes: publishing would cost the loop work per
        # chunk whether anyone asks or not, while an uncontended lock costs about 0.1 us, and
        # progress() holds it only for O(maps), since a MapRun keeps its counts totalled.
        self.lock = threading.Lock()
        for spec in plan.specs:
            for key in spec.streaming:
                self.children[key].append(spec.key)

    def _take(self) -> MapActions:
        out, self._out = self._out, MapActions()
        return out

    # -- launching -----------------------------------------------------------

    def settle_streaming(self, spec: TaskSpec, states: Mapping[str, State]) -> State | None:
        """A map whose element-wise upstream map ended without running is settled the same way."""
        for key in spec.streaming:
            state = states[key]
            if state.is_finished() and key not in self.maps:
                if state.is_skipped():
                    return State(type=StateType.SKIPPED, message=f"upstream map {key} was skipped")
                return State(type=StateType.TRIGGER_FAILED, message=f"upstream map {key} ended {state.type.value}")
        return None

    def launch(self, spec: TaskSpec, handles: Mapping[str, Any], lengths: Mapping[str, int | None]) -> MapActions:
        """Start a MapRun for ``spec`` from the finished upstream values ``handles`` (and their ``lengths``)."""
        objects = [self.put(o) for o in spec.objects]
        self.values[spec.key] = [handles.get(k) for k in spec.value_keys]
        sources: list[Any] = []
        for source in spec.sources:
            if source.kind == "const":
                sources.append(WholeFeed(source.name, "column", objects[source.index], source.length))
            elif source.kind in ("node", "flatten_node"):
                length = lengths.get(source.key)
                if length is None:
                    message = (
                        f"MappingError: the result of task '{source.key}' (argument '{source.name}') "
                        "cannot be mapped over: it is not a list or another sized collection"
                    )
                    self.settled.add(spec.key)
                    self._out.settled.append((spec.key, State(type=StateType.FAILED, message=message), None))
                    return self._take()
                kind = "value" if source.kind == "node" else "flatten_value"
                sources.append(WholeFeed(source.name, kind, handles[source.key], length))
            elif source.kind in ("map", "flatten_map"):
                upstream = source.key
                sources.append(MapFeed(source.name, lambda k=upstream: self.maps.get(k), source.kind == "flatten_map", upstream))
            else:
                stream = StreamFeed(source.name, source.index)
                self.streams[source.index] = stream
                self.stream_owner[source.index] = spec.key
                sources.append(stream)
        # A chunk asking for a fraction of a CPU (num_cpus=0.25, as I/O-bound work may) shares
        # one: the map counts that many more CPUs, so enough chunks are in flight to fill them.
        share = spec.options.num_cpus
        cpus = self.cpus if share is None or share >= 1 or share <= 0 else int(self.cpus / share)
        # A map consumed chunk by chunk leaves room for its consumers: Ray hands a worker
        # back only when the queue of tasks sharing its inputs runs dry.  One whose consumer
        # runs fused behind its chunks (core.fusion) needs none.
        unfused = self.children.get(spec.key) and spec.key not in self.fuse_next
        in_flight = cpus if unfused else max(2, 2 * cpus)
        run = MapRun(
            spec.key, spec.options, sources, max_in_flight=in_flight, cpus=cpus, clock=self.clock,
            preset=spec.resume_chunks, at_once=spec.items_at_once,
            budgeted=spec.key not in self.fuse_next,  # a fused chain's stages are cut where its first chunks are
        )
        with self.lock:
            self.maps[spec.key] = run
        if self.fuse_next.get(spec.key, spec.key) in self.maps:
            self._pump(spec.key)
        else:  # its chunks go fused behind it if the map it feeds launches in this step too
            self.deferred.append(spec.key)
        return self._take()

    def pump_deferred(self) -> MapActions:
        """Pump the maps launched in this step whose fused next map was not running yet."""
        while self.deferred:
            self._pump(self.deferred.pop(0))
        return self._take()

    # -- dispatch ------------------------------------------------------------

    def _pump(self, key: str) -> None:
        run = self.maps.get(key)
        if run is None:
            return
        spec = self.plan.by_key[key]
        with self.lock:  # may end the map (done, total)
            jobs = run.next_jobs(self.clock())
        for job, piece_handles in jobs:
            stage = self.stages.expected(key, job.start, job.start + job.size) if job.indices is None and not job.deaths else None
            if stage is None:
                self._submit(spec, job, piece_handles)
                continue
            self.jobs[stage] = (key, job)  # adopted: it ran fused behind its upstream chunk
            held = self.stages.adopted(stage)
            if held is not None:
                self._out.replay.append(_taken(*held, job))
        self._request_stream(run)
        if run.done and key not in self.settled:
            self.settled.add(key)
            self._out.settled.append((key, run.final_state(), run.handle()))
            for child in self.children.get(key, ()):
                self._pump(child)

    def _submit(self, spec: TaskSpec, job: ChunkJob, piece_handles: list[Any]) -> None:
        work = Work(work_id=self.next_work_id(), task_key=spec.key, attempt=1, job=job)
        handles = self.values[spec.key] + piece_handles
        if spec.key in self.fuse_next and job.indices is None and not job.load and not job.deaths:
            work, more = self._fuse(spec, work)
            handles += more
        self.jobs[work.work_id] = (spec.key, job)
        self._out.submit.append((spec, work, handles))

    def _fuse(self, spec: TaskSpec, work: Work) -> tuple[Work, list[Any]]:
        """``work`` (a chunk's first run) with the maps fused behind it (core.fusion) that are
        running, and their own input handles; each stage is expected where its map cuts the chunk."""
        job, stages, handles = work.job, [], []
        key, previous, start, size = spec.key, work.work_id, job.start, job.size
        while (after := self.fuse_next.get(key)) is not None:
            run = self.maps.get(after)
            if run is None or run.done or run.fatal is not None or self.plan.by_key[after].resource_wait is not None:
                break
            values = self.values[after]
            flat = run.sources[0].flat
            if flat:  # through rf.flatten: where its items start is known once every earlier chunk ended
                start = self._flat_start(key, start) if not stages else None
                if start is None:
                    break
                size = -1  # as many as the previous stage's chunk holds: the worker says (execute_fused)
            stage_job = ChunkJob(
                map_key=after, chunk=-1, start=start, size=size,
                sources=((Piece("flatten_chunk" if flat else "chunk", (len(values),), 0, size),),),
                upstream=(None if flat else key,),
            )
            stage = Stage(Work(self.next_work_id(), after, 1, job=stage_job), 1 + len(values))
            self.stages.add(previous, stage.work.work_id, after, start, None if size < 0 else start + size)
            stages.append(stage)
            handles += values
            key, previous = after, stage.work.work_id
        return dataclasses.replace(work, fused=tuple(stages)), handles

    def _flat_start(self, key: str, start: int) -> int | None:
        """Where the items of map ``key``'s chunk at ``start`` begin in its flattening: known when
        every chunk before it is final (None otherwise)."""
        before = [c for c in self.maps[key].chunks if c.start < start]
        return sum(c.flat_count for c in before) if all(c.final for c in before) else None

    def receive(self, completion: Completion) -> Completion | None:
        """A chunk work's completion as the orchestrator is to take it: a fused stage's with the
        job its map adopted it as; None while it waits for adoption, or for a stage not taken."""
        work = completion.work
        if not self.stages.receive(work, completion.report, completion.handle, work.work_id in self.jobs):
            return None
        if work.job.chunk < 0:
            return Completion(*_taken(work, completion.report, completion.handle, self.jobs[work.work_id][1]))
        return completion

    def fold_here(self, spec: TaskSpec, work: Work) -> Completion | None:
        """A folded rf.reduce (core.reducers) whose map's chunks all reported their parts: combined
        here, with no worker (the parts are numbers); None: it runs in a worker as any task does
        (a part is missing, or the combine raised: the worker raises it again, with its traceback)."""
        run = self.maps.get(spec.value_keys[0]) if spec.fold_here and len(spec.value_keys) == 1 else None
        parts = run.reduce_parts() if run is not None and work.report_length is None else None
        if parts is None:
            return None
        started = time.time()
        try:
            value = OPS[spec.partials][0](parts)
        except Exception:  # noqa: BLE001 - e.g. the min of no items
            return None
        report = AttemptResult(spec.key, work.attempt, StateType.SUCCESS, started_at=started, finished_at=time.time())
        return Completion(work, report, self.put(value))

    def _request_stream(self, run: MapRun) -> None:
        for stream, want in run.stream_requests():
            stream.requested = stream.received() + want
            self._out.requests.append((stream.stream_id, want))

    def push_stream(self, stream_id: int, handle: Any, count: int, exhausted: bool) -> None:
        """Items of a generator input arrived (from any thread); ``drain_streams`` takes them."""
        self.stream_inbox.append((stream_id, handle, count, exhausted))

    def has_stream_input(self) -> bool:
        return bool(self.stream_inbox)

    def drain_streams(self) -> MapActions:
        while self.stream_inbox:
            stream_id, handle, count, exhausted = self.stream_inbox.popleft()
            self.streams[stream_id].push(handle, count, exhausted)
            self._pump(self.stream_owner[stream_id])
        return self._take()

    def pump_due(self, now: float) -> MapActions:
        """Resubmit the item retries whose delay has passed."""
        for key, run in list(self.maps.items()):
            due = run.next_due()
            if due is not None and due <= now:
                self._pump(key)
        return self._take()

    def next_due(self) -> float | None:
        dues = [d for run in self.maps.values() if (d := run.next_due()) is not None]
        return min(dues) if dues else None

    # -- outcomes ------------------------------------------------------------

    def owns(self, work_id: int) -> bool:
        """Whether ``work_id`` is a chunk still in flight (not cancelled, not finished)."""
        return work_id in self.jobs

    def finish_work(self, work: Work, report: ChunkSummary | None, handle: Any, error: ErrorInfo | None) -> MapActions:
        entry = self.jobs.pop(work.work_id, None)
        if entry is None:
            self.stages.settled(work.work_id, False, False)
            return self._take()  # cancelled
        key, job = entry
        run = self.maps[key]
        if report is not None:
            with self.lock:
                self._out.facts.append(run.on_summary(report, handle, self.clock()))
            chunk = run.by_id.get(job.chunk)
            self.stages.settled(work.work_id, report.fed, chunk is not None and chunk.final)
        else:
            self.stages.settled(work.work_id, False, False)
            with self.lock:  # a split changes the map's chunks
                decision = run.on_lost(job) if error is not None and error.system else FAIL
            if decision == FAIL:
                self._out.facts.append(self._fail_lost(run, job, error))
            else:  # run again, whole or in halves: none of its items is final yet
                self._out.facts.append(WorkFacts(job.start, job.start + job.size, {}))
            if decision == RETRY:  # only this work runs again
                again = dataclasses.replace(job, deaths=job.deaths + 1)
                self._submit(self.plan.by_key[key], again, self._piece_handles(run, job))
                return self._take()
        for child in self.children.get(key, ()):  # consumers first: their chunks queue ahead
            self._pump(child)
        self._pump(key)
        return self._take()

    def _fail_lost(self, run: MapRun, job: ChunkJob, error: ErrorInfo | None) -> WorkFacts:
        """Every item of a lost work fails with its error, which names the item when it ran alone."""
        with self.lock:
            run.release(job)
        n = len(job.indices) if job.indices is not None else job.size
        kind = error.type if error is not None else "builtins.RuntimeError"
        message = lost_message(job, error, split=run.splits)
        failed = ChunkResult(
            values=encode_values([None] * n),
            codes=np.full(n, C.FAILED, dtype=np.int8),
            attempts=np.array(job.attempts or [1] * n, dtype=np.int16),
            errors=dict.fromkeys(range(n), (kind, message, "")),
            indices=np.array(job.indices, dtype=np.int64) if job.indices is not None else None,
        )
        placeholder = self.put(failed)
        with self.lock:
            return run.settle_lost(job, placeholder, error_text(kind, message), kind)

    def _piece_handles(self, run: MapRun, job: ChunkJob) -> list[Any]:
        chunk = run.by_id[job.chunk]
        handles: list[Any] = []
        for source in run.sources:
            for _, objs, _, _ in source.pieces(chunk.start, chunk.stop) or []:
                handles.extend(objs)
        return handles

    def cancel(self) -> MapActions:
        """Stop every map: the works in flight are to be cancelled; no map reports an end."""
        self._out.cancel.extend(self.jobs)
        self.jobs.clear()
        self.stages.clear()
        self.deferred.clear()
        with self.lock:
            for key, run in self.maps.items():
                run.cancel()
                self.settled.add(key)
        return self._take()

    # -- views ---------------------------------------------------------------

    def upstream_states(self, states: Mapping[str, State], keys: tuple[str, ...]) -> Mapping[str, State]:
        """What a non-mapped task's trigger sees: every item's state for a mapped upstream."""
        expanded: dict[str, Any] = {}
        for key in keys:
            run = self.maps.get(key)
            if run is None or run.options.min_success_ratio < 1.0 or run.fatal is not None:
                expanded[key] = states[key]
            else:
                expanded[key] = run
        return ItemStates(expanded)

    def skip_view(self, states: Mapping[str, State], keys: tuple[str, ...]) -> dict[str, State]:
        """What the skip rule sees: a map is skipped only when every one of its items was."""
        view = {}
        for key in keys:
            run = self.maps.get(key)
            all_skipped = run is not None and run.total and run.counts().get(StateType.SKIPPED, 0) == run.total
            view[key] = State(type=StateType.SKIPPED, message="every item was skipped") if all_skipped else states[key]
        return view

    def progress(self) -> dict[str, dict[str, Any]]:
        """Per map: total items, final items per state, done; safe to call from any thread."""
        with self.lock:
            return {
                key: {"total": run.total, "counts": {t.value: n for t, n in run.counts().items()}, "done": run.done,
                      "cached": run.cached}
                for key, run in self.maps.items()
            }


def _taken(work: Work, report: ChunkSummary, handle: Any, job: ChunkJob) -> tuple[Work, ChunkSummary, Any]:
    """A fused stage's completion as the chunk its map adopted it as."""
    return dataclasses.replace(work, job=job), dataclasses.replace(report, chunk=job.chunk), handle


RAY_LINES = 3  # of Ray's account of a dead worker, kept in the items' error


def lost_message(job: ChunkJob, error: ErrorInfo | None, *, split: int) -> str:
    """Why the items of a lost work failed: the item (or items) running when the worker died, and Ray's word.

    ``split``: the works the map has split so far (when several items failed together, it
    says why they were not narrowed down).
    """
    if error is None or not error.system:
        return error.message if error is not None else "work lost"
    deaths = job.deaths + 1
    said = "\n".join(error.message.splitlines()[:RAY_LINES])  # an OOM kill's report goes on for 50 lines
    items = [job.start + i for i in job.indices] if job.indices is not None else range(job.start, job.start + job.size)
    if len(items) == 1:
        times = f", alone ({deaths} works holding it died)" if deaths > 1 else ""
        return f"the worker died while running item {items[0]}{times}: {said}"
    shown = f"items {items[0]}-{items[-1]}" if items[-1] - items[0] == len(items) - 1 else f"{len(items)} items"
    why = f"; not narrowed down: this map split {split} lost works already" if split else ""
    return f"the worker died while running {shown} ({deaths} times{why}): {said}"
