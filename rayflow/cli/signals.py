"""SIGTERM taken like Ctrl-C by ``rayflow run``, with a watchdog so no stop can hang.

``timeout``, systemd and Kubernetes stop a process with SIGTERM.  ``rayflow run`` raises
``Terminated`` (a KeyboardInterrupt) in its main thread, so the run is cancelled as on
Ctrl-C and the exit is 143.  The signal may come while the main thread is blocked inside
Ray (a local Ray that the same signal is stopping): a watchdog thread, woken by the signal
itself through ``signal.set_wakeup_fd`` rather than by the Python handler, exits 143 after
``WATCHDOG_SECONDS`` whatever the main thread is doing.  A run whose end was not recorded
then reads CRASHED in the history (its driver is gone).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

from rayflow.cli.exits import EXIT_TERMINATED
from rayflow.exceptions import Terminated

WATCHDOG_SECONDS = 10.0  # past the runner's grace (2 s) and its record of the end


def exit_promptly(code: int, budget: float = 1.0) -> None:
    """Exit after at most ``budget`` seconds of the exit hooks (span flush, ray.shutdown): after
    SIGTERM to a process group, a local Ray is stopping too and ray.shutdown would wait for it."""
    hooks = threading.Thread(target=atexit._run_exitfuncs, name="rayflow-exit", daemon=True)
    hooks.start()
    hooks.join(budget)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _watch(reader: socket.socket, what: str, seconds: float) -> None:
    with reader:
        try:
            while True:
                data = reader.recv(64)
                if not data:
                    return  # closed: the with-block ended
                if signal.SIGTERM in data:
                    break
        except OSError:
            return
    stop = threading.Event()
    stop.wait(seconds)
    print(f"error: terminated (SIGTERM); {what} had not stopped after {seconds:g}s: exiting", file=sys.stderr, flush=True)
    exit_promptly(EXIT_TERMINATED)


@contextlib.contextmanager
def sigterm_as_interrupt(what: str = "the run", watchdog: float = WATCHDOG_SECONDS) -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread (kept over the handler ray.init installs,
    see runtime.driver.cluster), and the process exits 143 within ``watchdog`` seconds in any case."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    terminate.keep_over_ray = True  # type: ignore[attr-defined]
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main interpreter: no watchdog, the handler alone
        reader.close()
        writer.close()
        previous_fd, writer = None, None
    previous = signal.signal(signal.SIGTERM, terminate)
    if writer is not None:
        threading.Thread(target=_watch, args=(reader, what, watchdog), name="rayflow-sigterm-watchdog", daemon=True).start()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if writer is not None:
            signal.set_wakeup_fd(previous_fd)
            writer.close()  # the watchdog, unless a SIGTERM woke it, ends and closes its end
