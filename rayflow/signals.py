"""Control signals that user code may raise inside a task.

They derive from ``BaseException`` (through ``Signal``), not ``Exception``,
so a user's ``except Exception`` around their own code does not swallow
them.  rayflow never raises them for its own control flow::

    Signal(BaseException)
    ├── Skip     the task ends SKIPPED (and the skip propagates downstream)
    ├── Fail     the task ends FAILED; retried if it has retries left
    ├── Retry    the task is retried (RETRYING), spending none of its ``retries``
    │            (a task and an item of a map alike: ``engine.policy.after_retry_signal``)
    ├── Loop     the task runs again at once (LOOPED), ``rf.context().loop_result`` the
    │            value given (``engine.worker.looping``)
    └── Pause    raised by ``rf.pause`` (engine.worker.pause): the task ends PAUSED and
                 waits for ``rf.approve`` / ``rf.reject``, holding no worker
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any


class Signal(BaseException):
    """Base of the signals a task may raise to choose its own state."""

    def __init__(self, message: str = ""):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Skip(Signal):
    """End the task SKIPPED."""


class Fail(Signal):
    """End the task FAILED (retried if retries remain)."""


class Retry(Signal):
    """Retry the task after ``delay`` seconds (default: the delay of its next budgeted retry).

    It spends none of ``retries`` and is retried even past them, for a task and for an
    item of a map alike (``engine.policy.after_retry_signal``).
    """

    def __init__(self, message: str = "", delay: float | timedelta | None = None):
        super().__init__(message)
        self.delay = delay.total_seconds() if isinstance(delay, timedelta) else delay

    def __reduce__(self):
        return (type(self), (self.message, self.delay))


class Loop(Signal):
    """End this iteration of the task LOOPED and run the function again at once, in the same
    worker: ``rf.context().loop_count`` is then one more (1 on the first run) and
    ``rf.context().loop_result`` is ``result``.  At most ``max_loops`` iterations (a task
    option, default 1000); the value the function finally returns is the task's result."""

    def __init__(self, message: str = "", result: Any = None):
        super().__init__(message)
        self.result = result

    def __reduce__(self):
        return (type(self), (self.message, self.result))
class Pause(Signal):
    """End the task PAUSED until a person decides (``rf.pause`` raises it; not for user code).

    ``schema``: the JSON schema of the input it waits for (None: none); ``timeout``: seconds
    it may wait for a decision before it ends FAILED (None: no limit).
    """

    def __init__(self, message: str = "", schema: dict | None = None, timeout: float | None = None):
        super().__init__(message)
        self.schema = schema
        self.timeout = timeout

    def __reduce__(self):
        return (type(self), (self.message, self.schema, self.timeout))
