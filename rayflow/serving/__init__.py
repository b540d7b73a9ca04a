"""``rayflow serve``: a long-running process that fires schedules as normal runs.

``serve(entries)`` joins (or starts) Ray once, registers the schedules in the
run history, then ticks once a second (sooner when a fire is due sooner)
until SIGTERM or SIGINT; then it fires nothing more, lets the runs going
finish within ``grace`` seconds, cancels what is left, and returns 0.
``once=True`` ticks once, waits for the runs it started, and returns 0 if
they all succeeded, else 1.  Either way the server is recorded stopped; a
server killed outright is known dead by its pid (this host) or its lease.
See ``server`` for the policies.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from rayflow.serving.launcher import ThreadLauncher
from rayflow.serving.server import Served, Server, served
from rayflow.store import RunStore, rayflow_home
from rayflow.store.schedules import ScheduleStore

TICK_SECONDS = 1.0

__all__ = ["Served", "Server", "serve", "served"]


def serve(
    entries: Sequence[Served],
    *,
    max_concurrent: int = 4,
    grace: float = 30.0,
    address: str | None = None,
    once: bool = False,
    launcher: Any = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """``on_ready`` is called once Ray is joined (the UI's actions wait for it)."""
    _log_to_stderr()
    if address is not None or any(e.flow.options.runner == "ray" for e in entries):
        from rayflow.runtime import connect

        connect(address)  # once, before anything fires: a cluster that does not answer stops here
        if address is not None:
            entries = [_on(e, address) for e in entries]
    if on_ready is not None:
        on_ready()
    store = ScheduleStore(RunStore(rayflow_home(), repair=True))
    server = Server(list(entries), store, launcher or ThreadLauncher(), max_concurrent=max_concurrent)
    server.start()
    logger = logging.getLogger("rayflow.serve")
    for entry in entries:
        logger.info("serving %s: %s, next fire %s", entry.schedule_id, entry.schedule.describe(), _next(entry))
    stopping: list[int] = []  # a signal handler only appends: nothing it does can block

    def on_signal(signum: int, frame: Any) -> None:
        stopping.append(signum)

    on_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)} if on_main else {}
    try:
        if once:
            server.tick()
            while not stopping and (server.active() or server.waiting or any(server.queued.values())):
                time.sleep(0.1)
                server.reap()
        else:
            while not stopping:
                server.tick()
                deadline = time.monotonic() + _wait(server)
                while not stopping and time.monotonic() < deadline:
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        if stopping:
            logger.info("stopping: no more fires; %d run(s) going, grace %gs", server.active(), grace)
            server.stop(grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            server.retire()  # stopped: anything it still held is the next server's at once
        except Exception as exc:  # noqa: BLE001 - a history that fails now: the lease says it later
            logger.warning("could not record this server's stop: %s", exc)
    if once and not stopping:
        return 0 if all(f.handle.state() == "SUCCESS" for f in server.ended) else 1
    return 0


def _on(entry: Served, address: str) -> Served:
    return Served(entry.flow.with_options(address=address), entry.schedule, entry.parameters, entry.schedule_id, entry.target)


def _next(entry: Served) -> str:
    import datetime as dt

    when = entry.schedule.next_after(dt.datetime.now(dt.timezone.utc))
    return when.isoformat(timespec="seconds") if when is not None else "never"


def _wait(server: Server) -> float:
    """Until the next tick: a second, or less when a fire is due sooner."""
    import datetime as dt

    now = time.time()
    soonest = TICK_SECONDS
    for entry in server.entries:
        when = entry.schedule.next_after(dt.datetime.fromtimestamp(now, dt.timezone.utc))
        if when is not None:
            soonest = min(soonest, max(0.01, when.timestamp() - now + 0.001))
    return soonest


def _log_to_stderr() -> None:
    logger = logging.getLogger("rayflow.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s rayflow serve: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
