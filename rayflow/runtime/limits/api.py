"""``rf.limits``: set, get, remove and list the named limits (the cluster's with Ray
initialised, else this process's; runtime.limits.client).  Runs in the caller's process."""

from __future__ import annotations

from rayflow.engine.limits_state import check_name, check_values
from rayflow.runtime.limits.client import call as _call

__all__ = ["get", "list", "remove", "set"]


def set(name: str, slots: int, per_second: float | None = None) -> None:  # noqa: A001 - rf.limits.set
    """Create or change the limit ``name``: ``slots`` at once, and with ``per_second`` a rate."""
    check_name(name)
    slots, per_second = check_values(slots, per_second)
    _call("set", name, slots, per_second)


def get(name: str) -> dict | None:
    """The limit's ``{"name", "slots", "per_second", "in_use"}``, or None."""
    return _call("get", check_name(name))


def remove(name: str) -> bool:
    """Remove the limit (its holders keep running); False when there was none."""
    return _call("remove", check_name(name))


def list() -> list[dict]:  # noqa: A001 - rf.limits.list
    return _call("list")


