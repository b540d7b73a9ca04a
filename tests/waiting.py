"""Waiting in tests for something another thread or process does."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "the condition") -> Any:
    """``predicate()``'s first truthy value, polled every 50 ms; AssertionError after ``timeout`` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """Whether process ``pid`` still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class ManualClock:
    """A clock for code that waits on an injected clock (``store.recorder.Clock``: ``now()`` and
    ``wait(event, seconds)``): it moves only when the test calls ``advance``.  A thread waiting
    on it wakes when its event is set or the clock passes its deadline; ``waiting`` counts them,
    ``started`` counts the waits begun so far (a test moves the clock once a given wait began)."""

    def __init__(self, start: float = 1000.0) -> None:
        import threading

        self._now = start
        self._cond = threading.Condition()
        self.waiting = 0
        self.started = 0

    def now(self) -> float:
        with self._cond:
            return self._now

    def wait(self, event: Any, seconds: float) -> bool:
        with self._cond:
            deadline = self._now + seconds
            self.waiting += 1
            self.started += 1
            try:
                while True:
                    if event is not None and event.is_set():
                        return True
                    if self._now >= deadline:
                        return False
                    self._cond.wait(0.005)  # an event's set() does not notify: looked at again soon
            finally:
                self.waiting -= 1

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def advance_when(self, seconds: float, predicate: Callable[[], Any], what: str = "the condition") -> None:
        """Once ``predicate()`` holds (polled in real time, 30 s at most), move the clock on."""
        wait_for(predicate, timeout=30, what=what)
        self.advance(seconds)


def read_until(stream: Any, text: str, timeout: float = 60.0) -> str:
    """What ``stream`` (a process's pipe, in text mode) gives up to the end of the first line that
    holds ``text``, read by a thread; AssertionError after ``timeout`` s.  The rest stays in the pipe."""
    import threading

    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in stream:
            lines.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        raise AssertionError(f"timed out waiting for {text!r}; read so far: {''.join(lines)[-2000:]!r}")
    return "".join(lines)
