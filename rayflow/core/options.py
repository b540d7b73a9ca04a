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

from rayflow.exceptions import TaskOptionError
from rayflow.triggers import all_successful


def _seconds(value: Any) -> Any:
    return value.total_seconds() if isinstance(value, timedelta) else value


class TaskOptions(BaseModel):
    """Everything ``@rf.task(...)`` accepts besides the function."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str | None = Field(default=None, min_length=1)
    retries: int = Field(default=0, ge=0)
    retry_delay: float = Field(default=0.0, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    tags: frozenset[str] = frozenset()
    trigger: Callable[..., bool] = all_successful
    # Ray resources, passed to ``.options()`` of the Ray task.
    num_cpus: float | None = Field(default=None, ge=0)
    num_gpus: float | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, gt=0)
    resources: dict[str, float] | None = None
    runtime_env: dict[str, Any] | None = None

    @field_validator("retry_delay", "timeout", mode="before")
    @classmethod
    def _timedelta_to_seconds(cls, value: Any) -> Any:
        return _seconds(value)

    @field_validator("name")
    @classmethod
    def _name_is_a_key(cls, value: str | None) -> str | None:
        if value is not None and (value != value.strip() or "/" in value):
            raise ValueError("must not contain '/' or surrounding whitespace")
        return value

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
