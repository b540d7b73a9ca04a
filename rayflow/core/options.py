"""Validated options of tasks and flows.

Options are checked by pydantic when the decorator runs, so a typo or a bad
value is an error at import time that names the option, not a surprise on a
worker half-way through a run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rayflow.core.sla import SLA
from rayflow.exceptions import TaskOptionError
from rayflow.triggers import all_successful


def _seconds(value: Any) -> Any:
    return value.total_seconds() if isinstance(value, timedelta) else value


class TaskOptions(BaseModel):
    """Everything ``@rf.task(...)`` accepts besides the function."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str | None = Field(default=None, min_length=1)
    # Retries of the user's errors (and timeouts), decided by the orchestrator.
    retries: int = Field(default=0, ge=0)
    retry_delay: float | tuple[float, ...] = 0.0  # seconds, or one delay per retry
    retry_backoff: float = Field(default=1.0, ge=1.0)  # delay multiplier per retry
    retry_jitter: float = Field(default=0.0, ge=0.0)  # up to this fraction of the delay added at random
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    # Retries of system errors (worker died, object lost): a separate budget.
    system_retries: int = Field(default=3, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    # rf.Loop: iterations a task (or an item of a map) may run before it fails (engine.worker.looping).
    max_loops: int = Field(default=1000, ge=1, strict=True)
    tags: frozenset[str] = frozenset()
    trigger: Callable[..., bool] = all_successful
    skip_on_upstream_skip: bool = True
    log_prints: bool = False  # store what the task prints with the run's logs
    on_state: tuple[Callable[..., Any], ...] = ()
    on_failure: tuple[Callable[..., Any], ...] = ()
    on_success: tuple[Callable[..., Any], ...] = ()
    # Maps: items per chunk (None: adapt to the observed time per item), chunks in flight
    # per map (None: from the cluster's CPUs), the fraction of items that must succeed
    # for the map to count as successful, and whether fn takes a whole chunk at once.
    chunk_size: int | None = Field(default=None, gt=0)
    max_in_flight: int | None = Field(default=None, gt=0)
    min_success_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    batch: bool = False
    # Items of a chunk running at once: an async task's on one event loop (None: 32), a plain
    # task's on a thread pool (None: 1, one after another).  For I/O-bound work.
    concurrency: int | None = Field(default=None, ge=1)
    # Results that outlive the run (see rayflow.results and rayflow.cache): persist the value
    # in the result store (None: as the flow says); look it up by a cache key before running,
    # a stored result older than cache_expiration (seconds) not counting; refresh_cache runs
    # anyway and stores the new result under the key.
    persist: bool | None = None
    cache_key_fn: Callable[..., Any] | None = None
    cache_expiration: float | None = Field(default=None, gt=0)
    refresh_cache: bool = False
    # Ray resources, passed to ``.options()`` of the Ray task.
    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, gt=0)
    resources: dict[str, float] | None = None
    runtime_env: dict[str, Any] | None = None
    # Seconds a task that no node of the cluster fits may wait for an autoscaler to add one
    # before it fails (None: RAYFLOW_RESOURCE_WAIT, else 300); see rayflow.runtime.driver.resources.
    resource_wait: float | None = Field(default=None, gt=0)

    @field_validator("timeout", "cache_expiration", "resource_wait", mode="before")
    @classmethod
    def _timedelta_to_seconds(cls, value: Any) -> Any:
        return _seconds(value)

    @field_validator("cache_key_fn", mode="before")
    @classmethod
    def _key_fn_callable(cls, value: Any) -> Any:
        if value is not None and not callable(value):
            raise ValueError(f"must be a callable (context, arguments) -> str | None, e.g. rf.cache.inputs; got {value!r}")
        return value

    @field_validator("retry_delay", mode="before")
    @classmethod
    def _delays(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("a list of retry delays must not be empty")
            return tuple(_seconds(v) for v in value)
        return _seconds(value)

    @field_validator("retry_delay")
    @classmethod
    def _delays_not_negative(cls, value: Any) -> Any:
        delays = value if isinstance(value, tuple) else (value,)
        if any(d < 0 for d in delays):
            raise ValueError("retry delays must be >= 0 seconds")
        return value

    @field_validator("retry_on", mode="before")
    @classmethod
    def _exception_types(cls, value: Any) -> Any:
        types = value if isinstance(value, (list, tuple)) else (value,)
        bad = [t for t in types if not (isinstance(t, type) and issubclass(t, BaseException))]
        if bad or not types:
            raise ValueError(f"must be exception classes, got {bad or 'nothing'}")
        return tuple(types)

    @field_validator("on_state", "on_failure", "on_success", mode="before")
    @classmethod
    def _handlers(cls, value: Any) -> Any:
        return _as_handlers(value)

    @field_validator("trigger", mode="before")
    @classmethod
    def _trigger_callable(cls, value: Any) -> Any:
        if not callable(value):
            raise ValueError(f"a trigger must be a callable taking the upstream states, got {value!r}")
        return value

    @property
    def handlers(self) -> tuple[Callable[..., Any], ...]:
        return _all_handlers(self)

    @field_validator("name")
    @classmethod
    def _name_is_a_key(cls, value: str | None) -> str | None:
        return _key_name(value)

    @field_validator("resources")
    @classmethod
    def _custom_resources_only(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            reserved = sorted({"CPU", "GPU", "memory"} & set(value))
            if reserved:
                raise ValueError(f"use num_cpus/num_gpus/memory instead of resources {reserved}")
            negative = sorted(k for k, v in value.items() if v < 0)
            if negative:
                raise ValueError(f"resource amounts must be >= 0: {negative}")
        return value

    def ray_options(self) -> dict[str, Any]:
        """The subset that Ray's ``.options()`` understands, without unset values."""
        fields = ("num_cpus", "num_gpus", "memory", "resources", "runtime_env")
        return {f: getattr(self, f) for f in fields if getattr(self, f) is not None}


def _as_handlers(value: Any) -> tuple[Callable[..., Any], ...]:
    handlers = value if isinstance(value, (list, tuple)) else (value,)
    bad = [h for h in handlers if not callable(h)]
    if bad:
        raise ValueError(f"state handlers must be callables, got {bad}")
    return tuple(handlers)


def _all_handlers(options: Any) -> tuple[Callable[..., Any], ...]:
    """Every state handler in call order: on_state, then on_failure, then on_success."""
    return (
        options.on_state
        + tuple(_only(h, "failed") for h in options.on_failure)
        + tuple(_only(h, "successful") for h in options.on_success)
    )


class _only:
    """A handler called only for failed (or successful) new states: on_failure / on_success."""

    def __init__(self, handler: Callable[..., Any], kind: str):
        self.handler, self.kind = handler, kind
        self.__name__ = getattr(handler, "__name__", repr(handler))

    def __call__(self, subject: Any, old: Any, new: Any) -> Any:
        wanted = new.is_failed() if self.kind == "failed" else new.is_successful()
        return self.handler(subject, old, new) if wanted else None


class FlowOptions(BaseModel):
    """Options of a flow: its name and where and how it runs.

    These are kept apart from the flow's own parameters, so a flow may have a
    parameter called ``address`` or ``run_id`` without a clash.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str | None = Field(default=None, min_length=1)
    description: str | None = None
    runner: Any = "ray"  # "ray", "local", or an object with run_flow(flow, params, options)
    address: str | None = None  # Ray cluster to join; None: RAY_ADDRESS or a local Ray
    run_id: str | None = Field(default=None, min_length=1)
    progress: bool | None = None  # a progress bar per map; None: only on an interactive terminal
    # Reuse the graph traced for the same immutable parameter values; False for a body that
    # reads the clock, the environment or other state besides its parameters.
    cache_graph: bool = True
    # Results: persist every task's value (a task's own persist= wins), and where the result
    # store is (a directory or a pyarrow filesystem URI; None: RAYFLOW_RESULTS, else
    # RAYFLOW_HOME/results).
    persist: bool = False
    result_storage: str | None = Field(default=None, min_length=1)
    # Set by rf.resume: the run this one resumes, and the stored result each task loads
    # instead of running (task key -> path in the result store).
    resumed_from: str | None = None
    resume_results: dict[str, str] = Field(default_factory=dict)
    resume_chunks: dict[str, tuple[tuple[int, int, tuple[str, ...]], ...]] = Field(default_factory=dict)
    resumed_trace: tuple[str, str] | None = None  # (trace id, flow span id) of the run resumed: linked
    run_attempt: int = Field(default=1, ge=1)  # a resumed run keeps its run id: its attempt number
    on_state: tuple[Callable[..., Any], ...] = ()  # h(flow, old_state, new_state) -> State | None
    on_failure: tuple[Callable[..., Any], ...] = ()
    on_success: tuple[Callable[..., Any], ...] = ()
    sla: SLA | None = None  # checked by rayflow serve (rayflow.serving.sla)
    fuse: bool = True  # run element-wise map chains fused, one pass per chunk (core.fusion)

    @field_validator("on_state", "on_failure", "on_success", mode="before")
    @classmethod
    def _handlers(cls, value: Any) -> Any:
        return _as_handlers(value)

    @property
    def handlers(self) -> tuple[Callable[..., Any], ...]:
        return _all_handlers(self)

    @field_validator("name")
    @classmethod
    def _name_is_a_key(cls, value: str | None) -> str | None:
        return _key_name(value)


def _key_name(value: str | None) -> str | None:
    """Names become task keys, and '/' separates a subflow's keys from its parent's; keys are
    folders of the result store (``runs/<run id>/<task key>``), where '.' and '..' would climb."""
    if value is not None and (
        value != value.strip() or "/" in value or value in (".", "..") or any(c < " " or c == "\x7f" for c in value)
    ):
        raise ValueError("must not contain '/', control characters or surrounding whitespace, nor be '.' or '..'")
    return value


def checked_name(value: str, owner: str) -> str:
    """A task's or flow's name taken from its function (``__name__``), held to the rule ``name=``
    follows (a function's ``__name__`` can be set to anything)."""
    try:
        return _key_name(value)  # type: ignore[return-value]
    except ValueError as exc:
        raise TaskOptionError(f"invalid name for {owner}: {value!r}: {exc}", task_name=owner, options=("name",)) from None


def validate_options(model: type[BaseModel], owner: str, values: dict[str, Any]) -> Any:
    """Build ``model`` from ``values`` or raise TaskOptionError naming every bad option."""
    try:
        return model(**values)
    except ValidationError as exc:
        problems = []
        names = []
        for err in exc.errors():
            option = ".".join(str(part) for part in err["loc"]) or "?"
            names.append(option)
            problems.append(f"{option}={err.get('input')!r}: {err['msg']}")
        raise TaskOptionError(
            f"invalid option(s) for {owner}: " + "; ".join(problems),
            task_name=owner,
            options=tuple(names),
        ) from None
