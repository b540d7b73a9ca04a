"""Every error rayflow itself raises, under one root.

The user's own exceptions are never wrapped on the way through a task: a failed
task's state keeps them as they were.  These classes describe what rayflow
found wrong with a definition, an input, the cluster or a finished run::

    RayflowError
    ├── DefinitionError          a @task or @flow is declared wrongly
    │   └── TaskOptionError      an option of @task / with_options is invalid
    ├── GraphError               the flow body builds an invalid graph
    │   └── MappingError         a .map() over arguments that cannot be zipped
    ├── ParameterError           flow parameters failed validation
    ├── RunIdError               a run id breaks the rule of rayflow.paths (``run_id``)
    ├── SerializationError       a task's function or arguments cannot be pickled
    ├── ClusterConnectionError   the Ray cluster at an address cannot be reached
    │   └── ClusterAuthenticationError  it requires a Ray auth token this process did not send
    ├── UnsatisfiableResourcesError  a task asks for resources no node of the cluster has
    ├── UnknownRunError          no live or recorded run has that run id
    ├── UnknownTaskError         a run has no task with that key (also a KeyError)
    ├── TaskRunError             a task's result was asked for but it did not succeed
    ├── FlowRunError             a flow run finished without succeeding (``.run``)
    ├── ResumeError              a run cannot be resumed (``run_id``; ``task_key`` when a task is why)
    ├── ApprovalError            an approve / reject that cannot be: no such task, not paused, bad input
    └── ResultStoreError         the result storage cannot be used (bad URI, write failed)
        ├── MissingResultError   a stored result is not there (``path``)
        ├── CorruptResultError   a stored result cannot be read back (``path``)
        └── UnsafePathError      a path built from a run id, task key or cache key would leave
                                 its root: the result store's, the history's (``path``, ``root``)

Errors carry the context that locates them (``task_key``, ``run_id``,
``attempt``) as attributes, so handlers need not parse messages.
"""

from __future__ import annotations

from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, taken like Ctrl-C by ``rayflow run``: the run is cancelled first, then the exit is 143."""


class RayflowError(Exception):
    """Root of every exception raised by rayflow itself."""


class DefinitionError(RayflowError, TypeError):
    """A task or flow is declared in a way rayflow cannot use."""


class TaskOptionError(DefinitionError):
    """An option given to ``@rf.task`` or ``Task.with_options`` is invalid."""

    def __init__(self, message: str, *, task_name: str | None = None, options: tuple[str, ...] = ()):
        super().__init__(message)
        self.task_name = task_name
        self.options = options


class GraphError(RayflowError):
    """The flow body built a graph that cannot run (bad binding, misuse of a placeholder)."""

    def __init__(self, message: str, *, task_key: str | None = None):
        super().__init__(message)
        self.task_key = task_key


class MappingError(GraphError, ValueError):
    """A map's arguments cannot be zipped: unequal lengths, or a non-iterable argument."""

    def __init__(self, message: str, *, task_key: str | None = None, lengths: dict[str, int] | None = None):
        super().__init__(message, task_key=task_key)
        self.lengths = lengths or {}


class ParameterError(RayflowError, ValueError):
    """Flow parameters failed validation; ``errors`` maps each bad field to its problem."""

    def __init__(self, message: str, *, flow_name: str, errors: dict[str, str]):
        super().__init__(message)
        self.flow_name = flow_name
        self.errors = errors


class SerializationError(RayflowError):
    """A task's function or arguments cannot be pickled to travel to a worker."""

    def __init__(self, message: str, *, task_key: str):
        super().__init__(message)
        self.task_key = task_key


class ClusterConnectionError(RayflowError, ConnectionError):
    """The Ray cluster at ``address`` could not be joined in bounded time."""

    def __init__(self, message: str, *, address: str):
        super().__init__(message)
        self.address = address


class ClusterAuthenticationError(ClusterConnectionError):
    """The cluster at ``address`` requires Ray's token authentication and rejected this process."""


class UnsatisfiableResourcesError(RayflowError, ValueError):
    """A task asks for resources that no node of the Ray cluster has (and none can be added).

    ``task_key`` and ``request`` name the first such task; ``requests`` has every one,
    ``largest_node`` the resources of the node that comes closest.
    """

    def __init__(
        self, message: str, *, task_key: str, request: dict[str, float],
        requests: dict[str, dict[str, float]] | None = None, largest_node: dict[str, float] | None = None,
    ):
        super().__init__(message)
        self.task_key = task_key
        self.request = request
        self.requests = requests or {task_key: request}
        self.largest_node = largest_node or {}


class UnknownRunError(RayflowError, LookupError):
    """No run with ``run_id`` is live (or known) where we looked."""

    def __init__(self, message: str, *, run_id: str):
        super().__init__(message)
        self.run_id = run_id


class UnknownTaskError(RayflowError, KeyError):
    """A run has no task with ``task_key``."""

    def __init__(self, message: str, *, task_key: str, run_id: str | None = None):
        super().__init__(message)
        self.task_key = task_key
        self.run_id = run_id

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class TaskRunError(RayflowError):
    """The result of a task that did not succeed was asked for."""

    def __init__(self, message: str, *, task_key: str, run_id: str, attempt: int | None = None):
        super().__init__(message)
        self.task_key = task_key
        self.run_id = run_id
        self.attempt = attempt


class FlowRunError(RayflowError):
    """A flow run finished without succeeding; ``run`` is the finished ``FlowRun``."""

    def __init__(self, message: str, *, run: Any):
        super().__init__(message)
        self.run = run

    @property
    def run_id(self) -> str:
        return self.run.run_id


class ResultStoreError(RayflowError, OSError):
    """The result storage cannot be used: a bad location, or a write or read that failed."""


class MissingResultError(ResultStoreError, FileNotFoundError):
    """A stored result is not there; ``path`` names the file looked for."""

    def __init__(self, message: str, *, path: str):
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0])


class CorruptResultError(ResultStoreError):
    """A stored result cannot be read back (truncated, or not what its name says); ``path`` names it."""

    def __init__(self, message: str, *, path: str):
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0])


class UnsafePathError(ResultStoreError):
    """A path built from a run id, a task key or a cache key would leave its root (``path``,
    relative to ``root``): refused before anything is read or written (rayflow.paths)."""

    def __init__(self, message: str, *, path: str, root: str):
        super().__init__(message)
        self.path = path
        self.root = root

    def __str__(self) -> str:
        return str(self.args[0])


class RunIdError(RayflowError, ValueError):
    """A run id that breaks the rule (rayflow.paths.check_run_id), refused before any work."""

    def __init__(self, message: str, *, run_id: Any):
        super().__init__(message)
        self.run_id = run_id


class DuplicateRunError(RayflowError, ValueError):
    """A run was given the id of a run the history has already (resume it instead)."""

    def __init__(self, message: str, *, run_id: str):
        super().__init__(message)
        self.run_id = run_id


class RunCrashedError(RayflowError):
    """A run ended without an outcome: the actor orchestrating it died (killed, out of memory,
    its node lost).  The history records it CRASHED; resume it to run what had not finished."""

    def __init__(self, message: str, *, run_id: str):
        super().__init__(message)
        self.run_id = run_id


class ScheduleError(RayflowError, ValueError):
    """A schedule that cannot be: a bad cron expression, an unknown timezone, a bad policy."""


class SLAError(DefinitionError, ValueError):
    """A bad ``rf.SLA``; a ValueError too, so inside ``@rf.flow(sla={...})`` pydantic names it as
    the flow's bad ``sla`` option."""


class ResumeError(RayflowError):
    """A run cannot be resumed: it succeeded, its flow cannot be found, or its graph lost a task."""

    def __init__(self, message: str, *, run_id: str, task_key: str | None = None):
        super().__init__(message)
        self.run_id = run_id
        self.task_key = task_key


class ApprovalError(RayflowError, ValueError):
    """``rf.approve`` / ``rf.reject`` refused: the task is unknown or not paused, or the input
    does not fit the pause's model (the field named); the task stays as it was."""

    def __init__(self, message: str, *, run_id: str, task_key: str | None = None):
        super().__init__(message)
        self.run_id = run_id
        self.task_key = task_key


class LimitError(RayflowError, ValueError):
    """A concurrency or rate limit that does not exist, or a bad value for one."""


class TargetError(ValueError):
    """The target does not name a loadable flow (a usage error of the CLI); raised by
    ``rayflow.core.loader``, defined here so the CLI can map it to an exit code without
    importing the loader."""
