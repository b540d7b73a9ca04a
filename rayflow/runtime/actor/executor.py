"""RayExecutor: each unit of work (a task attempt, a map chunk) is one Ray task.

Each Work runs ``engine.worker.execute.execute`` with two returns: the value, which
stays in the object store and reaches downstream tasks as an ObjectRef (Ray
resolves it into the argument on the worker), and the small report
(AttemptResult or ChunkSummary, as plain-pickle bytes where it pickles so),
which the orchestrator fetches.  The value
comes first on purpose: Ray stores returns in order, so a value that cannot
be serialised fails the report too and is charged to the work that made it.

The task's resource options go to ``.options()``.  The orchestrator is the
one retry authority, so Ray's own retries are off (``max_retries=0``): a dead
worker comes back as a system error, which the orchestrator retries under
the task's ``system_retries`` and records in the history.  For a task with a
timeout the worker tells the actor when the attempt really starts
(``attempt_started``), so time queued for resources does not count; at the
deadline the Ray task is force-cancelled, which kills its worker process and
frees its CPUs.  A task that no node fits yet while an autoscaler may add one
(``TaskSpec.resource_wait``, see runtime.driver.resources) has its works' starts
reported too: one not placed within the wait is cancelled and fails the task
with an UnsatisfiableResourcesError.  On a cluster of several nodes every work reports the
node it started on, and the works of a node Ray declares dead are force-cancelled and lost
(system errors, retried by the engine: see node_watch).  A map's payload (its function and
unmapped arguments) is put in the object store once and shared by all its chunks.
"""

from __future__ import annotations

import itertools
import os
import pickle
import time
from collections.abc import Callable
from typing import Any

from rayflow.states import ErrorInfo, StateType, error_text

import ray
from ray.exceptions import RayError, RayTaskError

from rayflow.engine.worker.execute import execute
from rayflow.engine.worker.fused import execute_fused
from rayflow.engine.executor import Completion, QueuedStarts, fused_completions
from rayflow.engine.plan import TaskSpec
from rayflow.engine.protocol import AttemptResult, ChunkSummary, Work, describe_error, stage_arguments
from rayflow.runtime.actor.node_watch import NodeTable, NodeWatch, node_died, not_started, stop_quietly
from rayflow.runtime.actor.resource_waits import ResourceWaits
from rayflow.telemetry import worker_context

BIG_PAYLOAD = 64 * 1024  # bytes; larger payloads (and every map's) are put in the object store once
WINDOW = 256  # pending reports a step asks Ray about (the oldest)
SWEEP_SECONDS = 0.02  # how often a step asks about every pending report, while more are pending
BATCH = 16  # reports a step waits for while BATCH_FROM or more are pending: fewer, fuller steps ...
BATCH_FROM = 64
BATCH_SECONDS = 0.002  # ... for this long at most, once one is ready


def _execute_remote(payload: bytes, head: tuple[Work, Any, str], *values: Any) -> tuple[Any, Any]:
    """``head``: (work, notifier, run id) in one argument: Ray serialises each argument on its
    own (a msgpack envelope and a pickle each, some 0.1 ms in the actor per argument)."""
    work, notifier, run_id = head
    started = None
    if notifier is not None:  # its node too: a work on a node Ray declares dead is failed (node_watch)
        node = ray.get_runtime_context().get_node_id()
        notifier.attempt_started.remote(run_id, work.work_id, time.time(), node)
        started = lambda at: notifier.attempt_started.remote(run_id, work.work_id, at)  # noqa: E731 - rf.Loop's iterations
    with worker_context(work.trace):  # the user's own spans nest under this work's span
        value, report = execute(payload, work, *values, started=started)
    if isinstance(report, ChunkSummary):  # a chunk's record says which node ran it
        report.node = ray.get_runtime_context().get_node_id()
    return value, _packed(report)


def _execute_packed(blob: bytes, *values: Any) -> tuple[Any, Any]:
    """``_execute_remote`` of a work that reports no start, its payload, work and run id in one
    plain-pickle ``bytes`` argument (``_packed_head``): Ray ships bytes as they are, where a tuple
    holding a Work goes through its msgpack envelope and cloudpickle on both sides (some 0.1 ms
    in the actor and 0.15 ms in the worker, per task)."""
    payload, work, run_id = pickle.loads(blob)
    return _execute_remote(payload, (work, None, run_id), *values)


def _packed_head(payload: Any, work: Work, run_id: str) -> bytes | None:
    """The one argument of ``_execute_packed``; None where it cannot be: a payload in the object
    store (an ObjectRef: Ray must resolve it), or a work plain pickle refuses."""
    if not isinstance(payload, bytes):
        return None
    try:
        return pickle.dumps((payload, work, run_id), protocol=5)
    except Exception:  # noqa: BLE001 - any pickling failure: the two-argument way, Ray's serialiser
        return None


def _execute_fused_remote(payload: bytes, head: tuple[Work, Any, str], *values: Any) -> tuple[Any, ...]:
    """A map chunk with its fused stages (core.fusion): each stage's value, then every report."""
    work, notifier, run_id = head
    node = ray.get_runtime_context().get_node_id()
    if notifier is not None:  # the node watch's: where it runs (node_watch)
        notifier.attempt_started.remote(run_id, work.work_id, time.time(), node)
    values_out, reports = execute_fused(payload, work, *values, around=lambda stage: worker_context(stage.trace))
    for report in reports:
        if report is not None:
            report.node = node
    return (*values_out, _packed(reports))


def _packed(report: Any) -> Any:
    """The report as plain-pickle bytes: Ray's own serialiser took some 30 us more per report
    (and about as much again to read it in the actor).  One that plain pickle refuses (a class
    only cloudpickle can ship) goes as it is; ``_unpacked`` reads either."""
    try:
        return pickle.dumps(report, protocol=5)
    except Exception:  # noqa: BLE001 - any pickling failure: Ray's serialiser has the last word
        return report


def _unpacked(report: Any) -> Any:
    return pickle.loads(report) if isinstance(report, bytes) else report


_DEFAULTS = {"num_returns": 2, "max_retries": 0, "retry_exceptions": False}
_remote_execute = ray.remote(**_DEFAULTS)(_execute_remote)
_remote_packed = ray.remote(**_DEFAULTS)(_execute_packed)
_remote_fused = ray.remote(max_retries=0, retry_exceptions=False)(_execute_fused_remote)
# A persisted value written behind its task: not the task's resources (a GPU task's write needs no
# GPU); Ray's locality-aware scheduling runs it where the value is, when it can.
_remote_write = _remote_execute.options(name="rayflow write-behind")


_VALID: set[str] = set()  # the option sets Ray's .options() has validated


def _named_remote(name: str, options: dict[str, Any], function: Any = _remote_execute) -> Any:
    """``function.options(name=name, **options)``, less its cost per task: ``.options()``
    builds a class and validates every option on each call (some 0.1 ms in the actor, per task
    of a flow, as each task has its own name).  Each option set is validated by ``.options()``
    once; a task then calls ``RemoteFunction._remote`` with its name, as ``.options()``'s
    wrapper does.  A task with a runtime_env keeps ``.options()`` (it serialises that env)."""
    if "runtime_env" in options:
        return function.options(name=name, **options)
    signature = repr(sorted(options.items()))
    if signature not in _VALID:
        function.options(name=name, **options)  # raises on an option Ray refuses
        _VALID.add(signature)
    return _Named(function, name, options)


class _Named:
    def __init__(self, function: Any, name: str, options: dict[str, Any]) -> None:
        self.function = function
        self.options = {**_DEFAULTS, **options, "name": name}

    def remote(self, *args: Any) -> Any:
        return self._call(self.options, args)

    def named(self, name: str, *args: Any) -> Any:
        return self._call({**self.options, "name": name}, args)

    def _call(self, options: dict[str, Any], args: tuple[Any, ...]) -> Any:
        return self.function._remote(
            args=args, kwargs=None, serialized_runtime_env_info=self.function._serialized_base_runtime_env_info,
            **options,
        )


def _lost(exc: BaseException) -> Any:
    if isinstance(exc, RayTaskError):
        # The user's exceptions are caught inside execute(), so this is the Ray task around
        # it: an argument that would not deserialise here, or a value that would not
        # serialise.  Retrying cannot help, so it is not a system error.
        cause = getattr(exc, "cause", None) or exc
        error = describe_error(cause)
        message = (
            "its arguments or its return value could not be (de)serialised by Ray: "
            f"{error_text(type(cause).__name__, str(cause))}"
        )
        return error.model_copy(update={"message": message, "system": False})
    return describe_error(exc, system=True)  # worker died for good, object lost, cancelled


def _not_placed(work: Work, message: str) -> Completion:
    """A work that never ran: no node had its resources in time (see runtime.driver.resources)."""
    error = ErrorInfo(type="rayflow.exceptions.UnsatisfiableResourcesError", message=message)
    if work.job is not None:  # a map's chunk: its items fail with this error
        return Completion(work, None, None, error)
    now = time.time()
    report = AttemptResult(
        task_key=work.task_key, attempt=work.attempt, type=StateType.FAILED, started_at=now, finished_at=now,
        message=message, error=error, retryable=False,
    )
    return Completion(work, report, None)


def _consume(value_ref: ray.ObjectRef | tuple[ray.ObjectRef, ...]) -> None:
    """The value of a work whose report failed (its worker died, its value could not be pickled)
    holds the same error: read it, so that Ray does not print it again as an "Unhandled error"
    when the reference goes (a fused work: each stage's)."""
    for ref in value_ref if isinstance(value_ref, tuple) else (value_ref,):
        try:
            ray.get(ref, timeout=0)
        except (RayError, TimeoutError):
            pass


class RayExecutor(QueuedStarts):
    def __init__(self, run_id: str = "", notifier: Any = None, nodes: NodeTable | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.notifier = notifier  # the FlowRunActor's handle, told when timed works start
        self._pending: dict[ray.ObjectRef, tuple[Work, ray.ObjectRef]] = {}  # report ref -> (work, value ref)
        self._swept_at = float("-inf")  # monotonic time _collect_ready last asked Ray about every pending report
        self._payloads: dict[str, Any] = {}
        self._remotes: dict[Any, Any] = {}  # task key (or options id) -> its remote (made once: _cached)
        self._remotes_died: frozenset[str] = frozenset()  # the dead nodes the remotes avoid
        self.waits = ResourceWaits()
        self.watch = NodeWatch(nodes)  # works on a node Ray declared dead (a cluster of several nodes)
        self._not_placed: list[Completion] = []  # works failed without running: they were never placed

    def _payload(self, spec: TaskSpec) -> Any:
        if spec.kind != "map" and len(spec.payload) < BIG_PAYLOAD:
            return spec.payload
        if spec.key not in self._payloads:
            self._payloads[spec.key] = ray.put(spec.payload)
        return self._payloads[spec.key]

    def _cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """The remote ``key``, made once per set of dead nodes to avoid: that set only grows, so
        the remotes made for an earlier one (their options never wanted again) are forgotten."""
        died = self.watch.table.died
        if died is not self._remotes_died:
            self._remotes_died, self._remotes = died, {}
        remote = self._remotes.get(key)
        if remote is None:
            remote = self._remotes[key] = make()
        return remote

    def _remote(self, spec: TaskSpec) -> Any:
        return self._cached(spec.key, lambda: _named_remote(spec.key, self._ray_options(spec)))

    def _packed_remote(self, spec: TaskSpec) -> Any:
        """The remote of ``_execute_packed`` for a plain task's options, made once per options
        object (the tasks of one ``@rf.task`` share theirs, frozen): each task's name goes with
        its call (``_Named.remote``), not one remote made per task (some 10 us each)."""
        options = spec.options
        _, remote = self._cached(("packed", id(options)), lambda: (options, _named_remote("", self._ray_options(spec), _remote_packed)))
        return remote  # (the options held with it: their id is not reused while it is cached)

    def _ray_options(self, spec: TaskSpec) -> dict[str, Any]:
        """A task's Ray options; a map's chunks spread over the nodes of a cluster of several
        (Ray's default packs them onto the node they are submitted from while it has room); no
        work on a node seen dead (node_watch: its stuck leases hold Ray's slots of the task)."""
        options = {**spec.options.ray_options(), **self.watch.selector()}
        if spec.kind == "map" and os.environ.get("RAYFLOW_MAP_SPREAD", "1") != "0" and self.watch.table.several():
            options["scheduling_strategy"] = "SPREAD"
        return options

    def _fused_remote(self, spec: TaskSpec, stages: int) -> Any:
        return self._cached(f"{spec.key}\0fused{stages}", lambda: _remote_fused.options(
            name=spec.key, num_returns=stages + 2, **self._ray_options(spec)))

    def _write_remote(self) -> Any:
        if not self.watch.table.died:
            return _remote_write
        return self._cached("\0write", lambda: _remote_write.options(**self.watch.selector()))

    def submit(self, spec: TaskSpec, work: Work, handles: list[Any], stages: tuple[TaskSpec, ...] = ()) -> None:
        if work.persist is not None:  # a write-behind: default resources, wherever Ray puts it
            watched = self.notifier is not None and self.watch.track(work.work_id, forward=False)
            head = (work, self.notifier if watched else None, self.run_id)
            value_ref, report_ref = self._write_remote().remote(b"", head, *handles)
            self._pending[report_ref] = (work, value_ref)
            return
        timed = spec.options.timeout is not None and work.job is None
        given_up = self.waits.given_up(spec.key)
        if given_up is not None:
            self._not_placed.append(_not_placed(work, given_up))
            return
        if work.fused:  # a map chunk with its fused stages: resources alike, no resource wait (core.fusion)
            args = stage_arguments(work, handles, [self._payload(stage) for stage in stages])
            watched = self.notifier is not None and self.watch.track(work.work_id, forward=False)
            head = (work, self.notifier if watched else None, self.run_id)
            refs = self._fused_remote(spec, len(work.fused)).remote(self._payload(spec), head, *args)
            self._pending[refs[-1]] = (work, tuple(refs[:-1]))
            return
        tracked = self.waits.track(spec, work, forward=timed)
        watched = self.notifier is not None and self.watch.track(work.work_id, forward=timed or tracked)
        notifier = self.notifier if timed or tracked or watched else None
        payload = self._payload(spec)
        blob = _packed_head(payload, work, self.run_id) if notifier is None and spec.options.runtime_env is None else None
        if blob is not None:
            value_ref, report_ref = self._packed_remote(spec).named(spec.key, blob, *handles)
        else:
            value_ref, report_ref = self._remote(spec).remote(payload, (work, notifier, self.run_id), *handles)
        self._pending[report_ref] = (work, value_ref)

    def notify_started(self, work_id: int, at: float, node: str | None = None) -> None:
        wanted = self.watch.started(work_id, node)  # else only the node watch wanted to know
        if self.waits.started(work_id) and wanted:  # else only its resource wait wanted to know
            super().notify_started(work_id, at)

    def _in_flight(self) -> bool:
        return bool(self._pending or self._not_placed)

    def _collect(self, timeout: float | None) -> list[Completion]:
        out, self._not_placed = self._not_placed, []
        deadline = self.waits.next_deadline()
        check = self.watch.next_check()
        wake = min((at for at in (deadline, check) if at is not None), default=None)
        if out:
            timeout = 0
        elif wake is not None:
            timeout = max(0.0, min(timeout if timeout is not None else float("inf"), wake - self.waits.clock()))
        if self._pending:
            out += self._collect_ready(timeout)
        if deadline is not None:
            out += self._give_up_waits()
        if check is not None:
            out += self._lost_with_nodes()
        return out

    def _lost_with_nodes(self) -> list[Completion]:
        """The works on a node Ray declared dead, and those that may be stuck on it, never
        started: force-cancelled, and lost as system errors (see node_watch)."""
        lost, unstarted = self.watch.check()
        out = []
        for ref, (work, _) in list(self._pending.items()) if lost or unstarted else ():
            if work.work_id in lost:
                error = node_died(lost[work.work_id])
            elif work.work_id in unstarted and not ray.wait([ref], timeout=0)[0]:  # (ended meanwhile: read as such)
                error = not_started(self.watch.table.died)
            else:
                continue
            del self._pending[ref]
            self.waits.forget(work.work_id)
            self.watch.finished(work.work_id)
            stop_quietly(ray.cancel, ref)
            out.append(Completion(work, None, None, error))
        return out

    def _give_up_waits(self) -> list[Completion]:
        out = []
        for work, message in self.waits.expired():
            for ref, (pending, _) in list(self._pending.items()):
                if pending.work_id == work.work_id:
                    del self._pending[ref]
                    self.watch.finished(work.work_id)
                    ray.cancel(ref, force=True)
                    out.append(_not_placed(work, message))
        return out

    def _collect_ready(self, timeout: float | None) -> list[Completion]:
        """The works whose reports are ready, waiting up to ``timeout`` for the first.

        A step asks Ray about the oldest WINDOW pending reports (a dict keeps the order they
        were submitted in, about the order Ray runs them), and about all of them only every
        SWEEP_SECONDS: a ray.wait costs some 0.2 us per reference, and asking about every
        pending report on every step made a flow's cost per task grow with its size.  A
        report ready beyond the window is seen at the next sweep at the latest.

        With BATCH_FROM or more reports pending (a wide flow: its works queue for CPUs anyway), a
        step that finds fewer than BATCH ready waits up to BATCH_SECONDS for more: a step costs
        the actor some 0.1-0.3 ms (two ray.wait calls and the orchestrator's step), and trivial
        tasks ended about one per step.  A short flow's steps do not wait."""
        window = list(itertools.islice(self._pending, WINDOW))
        whole = len(window) == len(self._pending)
        if not whole and time.monotonic() - self._swept_at >= SWEEP_SECONDS:
            window, whole, self._swept_at = list(self._pending), True, time.monotonic()
        ready, _ = ray.wait(window, num_returns=len(window), timeout=0)
        if len(ready) < BATCH and timeout != 0:
            bounded = timeout if whole else SWEEP_SECONDS if timeout is None else min(timeout, SWEEP_SECONDS)
            if len(self._pending) >= BATCH_FROM:
                oldest = window[:BATCH_FROM]  # a blocking ray.wait costs per reference and per ms: the likeliest
                more, _ = ray.wait(oldest, num_returns=BATCH, timeout=BATCH_SECONDS if bounded is None else min(BATCH_SECONDS, bounded))
                ready = more if len(more) > len(ready) else ready
            if not ready:
                ready, _ = ray.wait(window, num_returns=1, timeout=bounded)
        if not ready:
            return []
        try:
            reports = ray.get(ready)  # one call for every ready report
        except RayError:
            out = []
            for ref in ready:  # find the broken ones
                done = self._complete(ref)
                out += done if isinstance(done, list) else [done]
            return out
        out = []
        for ref, report in zip(ready, reports):
            work, value_ref = self._pending.pop(ref)
            self.waits.finished(work.work_id)
            self.watch.finished(work.work_id)
            if work.fused:
                out += fused_completions(work, list(value_ref), _unpacked(report))
            else:
                out.append(Completion(work, _unpacked(report), value_ref))
        return out

    def _complete(self, ref: ray.ObjectRef) -> Completion | list[Completion]:
        work, value_ref = self._pending.pop(ref)
        self.waits.finished(work.work_id)
        self.watch.finished(work.work_id)
        try:
            report = ray.get(ref)
        except RayError as exc:  # the worker died, an object was lost, a value could not be stored
            _consume(value_ref)
            return Completion(work, None, None, _lost(exc))
        if work.fused:
            return fused_completions(work, list(value_ref), _unpacked(report))
        return Completion(work, _unpacked(report), value_ref)

    def cancel(self, work_id: int) -> None:
        """Force-cancel: a running work's worker process is killed, a queued one never starts."""
        for ref, (work, _) in list(self._pending.items()):
            if work.work_id == work_id:
                del self._pending[ref]
                self.waits.forget(work_id)
                self.watch.finished(work_id)
                ray.cancel(ref, force=True)

    def put(self, value: Any) -> Any:
        return value if isinstance(value, ray.ObjectRef) else ray.put(value)

    def fetch(self, handles: list[Any]) -> list[Any]:
        return ray.get(list(handles))
