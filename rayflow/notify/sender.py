"""Deliveries in the background: a bounded queue and a few daemon threads in the process where a
handler runs (the run's actor, or the driver for runner="local").

A run never waits on a delivery: ``submit`` only queues it (a full queue drops it, with a
warning).  Each attempt has its channel's timeout; a failed attempt is retried a bounded number
of times, after a short backoff.  A delivery that fails for good is a WARNING in the run's logs
(``log``).  At a run's end ``flush`` waits a little (``FLUSH_SECONDS``) for the run's deliveries;
those still under way are named in the run's logs and go on in the background."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rayflow.states import error_text

logger = logging.getLogger("rayflow.notify")

QUEUE_SIZE = 1000
THREADS = 4
FLUSH_SECONDS = 1.0  # at a run's end, how long its deliveries under way may hold it
BACKOFF_SECONDS = 0.5  # before the first retry, doubled after each


@dataclass(eq=False)
class Delivery:
    send: Callable[[], None]  # one attempt; raises on failure
    what: str  # "webhook to http://host/..." (never a secret)
    retries: int
    run_id: str | None
    log: Callable[[str, str], None] | None  # (level, message) into the run's logs
    retryable: Callable[[BaseException], bool] = lambda exc: True
    done: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)


_queue: queue.Queue[Delivery] = queue.Queue(QUEUE_SIZE)
_lock = threading.Lock()
_threads: list[threading.Thread] = []
_pending: dict[str | None, set[Delivery]] = {}


def _warn(delivery: Delivery, message: str) -> None:
    logger.warning("%s", message)
    if delivery.log is not None:
        try:
            delivery.log("WARNING", message)
        except Exception:  # noqa: BLE001  (the run's logs are closed: the warning above stays)
            pass


def submit(delivery: Delivery) -> None:
    """Queue ``delivery``; never blocks, never raises."""
    with _lock:
        while len(_threads) < THREADS:
            thread = threading.Thread(target=_work, name=f"rayflow-notify-{len(_threads)}", daemon=True)
            thread.start()
            _threads.append(thread)
        _pending.setdefault(delivery.run_id, set()).add(delivery)
    try:
        _queue.put_nowait(delivery)
    except queue.Full:
        _finish(delivery)
        _warn(delivery, f"rayflow: notification dropped ({delivery.what}): {QUEUE_SIZE} notifications are queued already")


def _finish(delivery: Delivery) -> None:
    with _lock:
        group = _pending.get(delivery.run_id)
        if group is not None:
            group.discard(delivery)
            if not group:
                del _pending[delivery.run_id]
    delivery.done.set()


def _work() -> None:
    while True:
        delivery = _queue.get()
        try:
            _deliver(delivery)
        except Exception:  # noqa: BLE001  (a bug here must not end the thread)
            logger.exception("rayflow: notification %s", delivery.what)
        finally:
            _finish(delivery)


def _deliver(delivery: Delivery) -> None:
    delay = BACKOFF_SECONDS
    for attempt in range(delivery.retries + 1):
        try:
            delivery.send()
            return
        except Exception as exc:  # noqa: BLE001  (every failure of a channel is a warning)
            last = exc
            if attempt == delivery.retries or not delivery.retryable(exc):
                break
            time.sleep(delay)
            delay *= 2
    tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
    _warn(delivery, f"rayflow: notification failed ({delivery.what}) after {tries}: {error_text(type(last).__name__, str(last))}")


def flush(run_id: str | None, seconds: float | None = None) -> int:
    """Wait up to ``seconds`` (FLUSH_SECONDS) for ``run_id``'s deliveries; each one still under way
    is named in the run's logs.  Returns how many are still under way."""
    deadline = time.monotonic() + (FLUSH_SECONDS if seconds is None else seconds)
    with _lock:
        waiting = list(_pending.get(run_id, ()))
    late = [d for d in waiting if not d.done.wait(max(0.0, deadline - time.monotonic()))]
    for delivery in late:
        _warn(delivery, f"rayflow: notification not delivered by the run's end ({delivery.what}); "
                        "still trying in the background")
    return len(late)


def wait_idle(seconds: float) -> bool:
    """Every delivery queued so far ended (for tests and a clean process exit)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with _lock:
            if not _pending:
                return True
        time.sleep(0.01)
    return False

