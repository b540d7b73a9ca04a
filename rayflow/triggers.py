"""Triggers decide whether a task runs once all of its upstream tasks have finished.

A trigger is any callable taking the upstream states (a mapping of task key
to State) and returning True to run.  With no upstreams every trigger passes.
A SKIPPED upstream counts as successful (and is not failed).

    all_successful      every upstream succeeded (the default)
    all_failed          every upstream failed
    any_successful      at least one upstream succeeded
    any_failed          at least one upstream failed
    all_finished        always (alias: always_run)
    not_all_skipped     at least one upstream was not skipped
    some_successful(at_least=, at_most=)   bounds on the successes
    some_failed(at_least=, at_most=)       bounds on the failures

A bound below 1 (e.g. 0.5) is a fraction of the number of upstreams.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from rayflow.states import State

Trigger = Callable[[Mapping[str, State]], bool]


def all_successful(upstream_states: Mapping[str, State]) -> bool:
    """Run only if every upstream succeeded (the default)."""
    return all(s.is_successful() for s in upstream_states.values())


def all_failed(upstream_states: Mapping[str, State]) -> bool:
    """Run only if every upstream failed."""
    return all(s.is_failed() for s in upstream_states.values())


def any_successful(upstream_states: Mapping[str, State]) -> bool:
    """Run if at least one upstream succeeded."""
    return not upstream_states or any(s.is_successful() for s in upstream_states.values())


def any_failed(upstream_states: Mapping[str, State]) -> bool:
    """Run if at least one upstream failed."""
    return not upstream_states or any(s.is_failed() for s in upstream_states.values())


def all_finished(upstream_states: Mapping[str, State]) -> bool:
    """Always run, once every upstream has finished in any state."""
    return True


always_run = all_finished


def not_all_skipped(upstream_states: Mapping[str, State]) -> bool:
    """Run unless every upstream was skipped."""
    return not upstream_states or not all(s.is_skipped() for s in upstream_states.values())


def _bound(value: float | None, total: int) -> float | None:
    if value is None:
        return None
    if value < 0:
        raise ValueError(f"trigger bounds must be >= 0, got {value}")
    return value * total if value < 1 else value


def _counting(name: str, predicate: Callable[[State], bool], at_least: float | None, at_most: float | None) -> Trigger:
    if at_least is None and at_most is None:
        raise ValueError(f"{name} needs at_least= or at_most=")
    for bound in (at_least, at_most):
        if bound is not None and bound < 0:
            raise ValueError(f"{name}: bounds must be >= 0, got {bound}")

    def trigger(upstream_states: Mapping[str, State]) -> bool:
        if not upstream_states:
            return True
        total = len(upstream_states)
        count = sum(1 for s in upstream_states.values() if predicate(s))
        low, high = _bound(at_least, total), _bound(at_most, total)
        if low is not None and count < math.ceil(low - 1e-9):
            return False
        return high is None or count <= math.floor(high + 1e-9)

    trigger.__name__ = f"{name}(at_least={at_least}, at_most={at_most})"
    trigger.__qualname__ = trigger.__name__
    return trigger


def some_successful(at_least: float | None = None, at_most: float | None = None) -> Trigger:
    """Run if the number of successful upstreams is within the bounds (fractions below 1)."""
    return _counting("some_successful", State.is_successful, at_least, at_most)


def some_failed(at_least: float | None = None, at_most: float | None = None) -> Trigger:
    """Run if the number of failed upstreams is within the bounds (fractions below 1)."""
    return _counting("some_failed", State.is_failed, at_least, at_most)


def failed_upstreams(upstream_states: Mapping[str, State]) -> list[str]:
    """The keys of the upstreams that failed, for trigger-failure messages."""
    return [key for key, state in upstream_states.items() if state.is_failed()]


def trigger_name(trigger: Callable[..., bool]) -> str:
    return getattr(trigger, "__name__", None) or type(trigger).__name__
