"""FlowRunActor: the thin Ray shell around engine.Orchestrator (runs in the actor's process).

One actor per driver process (``num_cpus=0``, pinned to the driver's node,
fate-sharing with the driver) hosts every run that driver starts: start_run's
thread drives the run for its first ``wait`` seconds, then, if it has not
ended, a thread of its own.  Creating it costs a worker process once; after that a short
run costs one actor call (start_run, which runs it to its end and hands the
value handles over), and its driver's first read of the history,
``ray.shutdown()`` or exit one more (history_written: see ``_end``).  The actor is named
``rayflow-driver-<id>`` in the ``rayflow`` namespace, so any process joined
to the cluster can find a live run by its id (runtime.driver.actors.find_run)
and read its status or cancel it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import ray

from rayflow.exceptions import UnknownRunError

if TYPE_CHECKING:
    from rayflow.engine.plan import Plan
    from rayflow.engine.protocol import RunSummary
    from rayflow.runs import ObservedRun
    from rayflow.runtime.actor.executor import RayExecutor
    from rayflow.telemetry import TelemetrySettings

logger = logging.getLogger(__name__)
NAMESPACE = "rayflow"
NAME_PREFIX = "rayflow-driver-"
KEEP_FINISHED = 200  # finished runs whose status stays queryable from other processes
ANSWER_FIRST_SECONDS = 0.003  # a short run's history closes this long after its answer left start_run


class _DriverFeeder:
    """Generator inputs live in the driver: their requests wait here until it polls."""

    def __init__(self) -> None:
        self._requests: dict[int, int] = {}
        self._changed = threading.Condition()

    def request(self, stream_id: int, count: int) -> None:
        """Noted for the driver; its items come later, through ``stream_push``."""
        with self._changed:
            self._requests[stream_id] = count
            self._changed.notify_all()

    def wait(self, timeout: float) -> dict[int, int]:
        with self._changed:
            if not self._requests:
                self._changed.wait(timeout)
            out, self._requests = self._requests, {}
        return out


class _Closer:
    """Closes ended runs' histories in daemon threads kept for the next ones: a short run's
    answer leaves start_run without waiting for a thread to start, nor for the disk."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0  # threads waiting for a close, or about to
        self._lock = threading.Lock()

    def submit(self, close: Callable[[], None]) -> None:
        with self._lock:
            spawn = self._idle == 0
            self._idle -= 0 if spawn else 1
        self._queue.put(close)
        if spawn:
            threading.Thread(target=self._work, name="rayflow-history-close", daemon=True).start()

    def _work(self) -> None:
        while True:
            close = self._queue.get()
            try:
                close()
            except BaseException:  # noqa: BLE001 - close_history never raises; this thread must not end
                logger.warning("rayflow: closing a run's history failed", exc_info=True)
            with self._lock:
                self._idle += 1


class _Slot:
    def __init__(self, observed: ObservedRun, executor: RayExecutor):
        self.observed = observed
        self.executor = executor  # told when an attempt with a timeout starts
        self.orchestrator = observed.orchestrator
        self.done = threading.Event()
        self.written = threading.Event()  # its history is written (or given up), after done
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None


def _engine() -> None:
    """Import what a run needs (the engine, with numpy and pyarrow): done by the actor's
    ``__init__``, not by this module, so that a driver creates the actor without importing
    them (a submitted run's driver creates it as soon as it has joined Ray: runtime.driver.warm)."""
    import rayflow.runs  # noqa: F401
    import rayflow.runtime.actor.executor  # noqa: F401
    import rayflow.runtime.limits.client  # noqa: F401
    import rayflow.telemetry  # noqa: F401


@ray.remote(num_cpus=0, max_concurrency=256)
class FlowRunActor:
    def __init__(self) -> None:
        _engine()
        self._runs: OrderedDict[str, _Slot] = OrderedDict()
        self._cancel_on_arrival: set[str] = set()  # cancel_run came before its start_run
        self._lock = threading.Lock()
        self._cpus: tuple[float, int] = (0.0, 1)  # (when read, cluster CPUs): a GCS call, so cached
        self._closer = _Closer()

    def _cluster_cpus(self) -> int:
        read_at, cpus = self._cpus
        if time.monotonic() - read_at > 30:
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            self._cpus = (time.monotonic(), cpus)
        return cpus

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def start_run(
        self,
        run_id: str,
        plan: Plan,
        telemetry: TelemetrySettings | None = None,
        home: str | None = None,
        wait: float = 0.0,
    ) -> tuple[str | None, RunSummary | None]:
        """Start the run; returns its trace id (when it is traced) and, if it ends within ``wait``
        seconds, its summary as ``wait_run`` gives it: a short run costs the driver one round
        trip to the actor, not two.  This call's own thread drives the run for those ``wait``
        seconds, and a thread of its own goes on with it if it has not ended: a short run's
        path starts and wakes no thread."""
        with self._lock:
            earlier = self._runs.get(run_id)
            if earlier is not None and (not earlier.done.is_set() or plan.attempt <= earlier.orchestrator.plan.attempt):
                # only an ended run's resume (a later attempt) reuses its id
                raise ValueError(f"a run with id {run_id!r} already exists in this driver")
            from rayflow.runs import assemble_run
            from rayflow.runtime.actor.executor import RayExecutor
            from rayflow.runtime.limits.client import RayLimits

            executor = RayExecutor(run_id, ray.get_runtime_context().current_actor)
            streams = any(src.kind == "stream" for spec in plan.specs for src in spec.sources)
            observed = assemble_run(
                plan, executor, run_id, cpus=self._cluster_cpus(), telemetry=telemetry, home=home,
                limits=RayLimits(), feeder=_DriverFeeder() if streams else None, defer_writer=True,
            )
            orchestrator = observed.orchestrator
            slot = _Slot(observed, executor)
            self._runs[run_id] = slot
            if run_id in self._cancel_on_arrival:
                self._cancel_on_arrival.discard(run_id)
                orchestrator.request_cancel()
        observed.start()
        if wait <= 0 or not self._drive_for(slot, time.monotonic() + wait):
            threading.Thread(target=self._drive, args=(slot,), name=f"run-{run_id}", daemon=True).start()
            if wait <= 0:  # (else _drive_for did it)
                self._after_submit(slot)
            return observed.trace_id, None
        return observed.trace_id, self._answer(slot, 0)  # (this slot: a trim may drop its id by now)

    def _drive_for(self, slot: _Slot, deadline: float) -> bool:
        """Run the loop in this thread until the run ends (True) or ``deadline`` (False: the
        caller hands the rest to ``_drive``, which goes on at the next step)."""
        orchestrator = slot.orchestrator
        try:
            orchestrator.start()
            if not orchestrator.done:
                orchestrator.step(0.0)  # the first tasks submitted, no wait: then what can wait
            self._after_submit(slot)
            while not orchestrator.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                orchestrator.step(min(left, orchestrator.poll_interval))
            slot.summary = orchestrator.run()  # its loop is done: run() only concludes it
        except BaseException as exc:  # noqa: BLE001 - an engine bug must reach the driver, not hang it
            slot.error = exc
        try:
            self._end(slot, close=lambda: self._closer.submit(lambda: self._close_history(slot, after=ANSWER_FIRST_SECONDS)))
        except BaseException:  # noqa: BLE001 - as in _drive's thread: the run's answer still reaches the driver
            logger.warning("rayflow: finishing run %s failed", slot.orchestrator.run_id, exc_info=True)
        return True

    def _after_submit(self, slot: _Slot) -> None:
        """What a run's start need not wait for, done while its first tasks start in workers."""
        slot.observed.start_writer()
        with self._lock:
            self._trim()

    def _drive(self, slot: _Slot) -> None:
        try:
            slot.summary = slot.orchestrator.run()  # (goes on where _drive_for stopped, if it did)
        except BaseException as exc:  # noqa: BLE001 - an engine bug must reach the driver, not hang it
            slot.error = exc
        self._end(slot, close=lambda: self._close_history(slot))

    @staticmethod
    def _end(slot: _Slot, close: Callable[[], None]) -> None:
        try:
            slot.observed.finish()  # slots of limits back before the driver hears of the end
        finally:
            slot.done.set()
            # The answer does not wait for the disk: the last rows are written after it, and the
            # driver waits for them (history_written) before it reads the history, shuts Ray
            # down or exits (runtime.driver.history_wait).
            close()

    @staticmethod
    def _close_history(slot: _Slot, after: float = 0.0) -> None:
        """Bounded in time; gives up (keeping the rows in a file, or logging what was lost) on a
        failing store.  ``after``: start that late, so that the answer's serialisation in
        start_run's thread does not queue for the GIL behind the history's rows (a 5 ms switch interval)."""
        time.sleep(after)
        try:
            slot.observed.close_history()
        finally:
            slot.written.set()

    def _trim(self) -> None:
        finished = [k for k, s in self._runs.items() if s.written.is_set()]
        for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._runs[key]

    def _slot(self, run_id: str) -> _Slot:
        try:
            return self._runs[run_id]
        except KeyError:
            raise UnknownRunError(f"no run {run_id!r} in this driver", run_id=run_id) from None

    def wait_run(self, run_id: str, timeout: float) -> RunSummary | None:
        """The final summary, or None if still running after ``timeout``.  The first caller to get
        it gets the value handles too and holds them from then on (a driver borrows what its run's
        actor owns): the actor keeps only the states, with no ``release`` call to wait for."""
        return self._answer(self._slot(run_id), timeout)

    def _answer(self, slot: _Slot, timeout: float) -> RunSummary | None:
        if not slot.done.wait(timeout):
            return None
        if slot.error is not None:
            raise slot.error
        with self._lock:
            summary = slot.summary
            if summary is not None and summary.handles:
                slot.summary = summary.without_handles()
                slot.orchestrator.release_values()
        return summary

    def history_written(self, run_ids: list[str], timeout: float) -> list[str]:
        """Wait until the history of each of these ended runs is written; returns those still
        being written after ``timeout`` seconds (a run not here: nothing to wait for)."""
        deadline = time.monotonic() + timeout
        slots = [(run_id, self._runs.get(run_id)) for run_id in run_ids]
        return [
            run_id for run_id, slot in slots
            if slot is not None and not slot.written.wait(max(0.0, deadline - time.monotonic()))
        ]

    def release(self, run_id: str) -> None:
        """Keep only the states (``wait_run`` does this as it hands the handles over)."""
        slot = self._runs.get(run_id)
        if slot is not None and slot.summary is not None:
            slot.summary.handles = {}
            slot.orchestrator.release_values()

    def status(self, run_id: str) -> RunSummary | None:
        """A snapshot of the run's states without value handles; None if not here."""
        slot = self._runs.get(run_id)
        if slot is None:
            return None
        return (slot.summary or slot.orchestrator.summary()).without_handles()

    def attempt_started(self, run_id: str, work_id: int, at: float, node: str | None = None) -> None:
        """Called by a worker when a work that must report its start begins, on ``node``: an attempt
        of a task with a timeout, one waiting for resources, any work on a cluster of several nodes."""
        slot = self._runs.get(run_id)
        if slot is not None:
            slot.executor.notify_started(work_id, at, node)

    def stream_requests(self, run_id: str, timeout: float) -> dict[int, int] | None:
        """Items each generator input should send now; None once the run is over."""
        slot = self._slot(run_id)
        feeder = slot.orchestrator.feeder
        if slot.done.is_set() or feeder is None:
            return None
        return feeder.wait(timeout)

    def stream_push(self, run_id: str, stream_id: int, refs: list, count: int, exhausted: bool) -> None:
        """Items of a generator input, put in the object store by the driver."""
        slot = self._slot(run_id)
        slot.orchestrator.push_stream(stream_id, refs[0] if refs else None, count, exhausted)

    def progress(self, run_id: str) -> dict | None:
        slot = self._runs.get(run_id)
        return None if slot is None else slot.orchestrator.progress()

    def flush(self, timeout: float) -> None:
        """Export queued spans, waiting ``timeout`` seconds at most."""
        from rayflow.telemetry import flush_all

        flush_all(timeout)

    def cancel_run(self, run_id: str) -> None:
        """Cancel the run; a run not here yet is cancelled as it starts (calls to this threaded
        actor may run out of order: a driver's Ctrl-C during start_run can overtake it)."""
        with self._lock:
            slot = self._runs.get(run_id)
            if slot is None:
                self._cancel_on_arrival.add(run_id)
                return
        slot.orchestrator.request_cancel()

    def run_ids(self) -> list[str]:
        return list(self._runs)
