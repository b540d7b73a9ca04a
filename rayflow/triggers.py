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
    manual_only         every upstream succeeded, then the task waits PAUSED for rf.approve

A bound below 1 (e.g. 0.5) is a fraction of the number of upstreams.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rayflow.states import State

Trigger = Callable[[Mapping[str, State]], bool]


@dataclass(frozen=True)
class Tally:
    total: int
    successful: int
    failed: int
    skipped: int


def tally(upstream_states: Mapping[str, State]) -> Tally:
    """Counts of the upstream states; a mapping may count for itself (a ``tally()`` method),
    as the per-item view of a large map does, so built-in triggers never walk a million items."""
    own = getattr(upstream_states, "tally", None)
    if own is not None:
        return own()
    states = list(upstream_states.values())
    return Tally(
        total=len(states),
        successful=sum(1 for s in states if s.is_successful()),
        failed=sum(1 for s in states if s.is_failed()),
        skipped=sum(1 for s in states if s.is_skipped()),
    )


def all_successful(upstream_states: Mapping[str, State]) -> bool:
    """Run only if every upstream succeeded (the default)."""
    t = tally(upstream_states)
    return t.successful == t.total


def all_failed(upstream_states: Mapping[str, State]) -> bool:
    """Run only if every upstream failed."""
    t = tally(upstream_states)
    return t.failed == t.total


def any_successful(upstream_states: Mapping[str, State]) -> bool:
    """Run if at least one upstream succeeded."""
    t = tally(upstream_states)
    return t.total == 0 or t.successful > 0


def any_failed(upstream_states: Mapping[str, State]) -> bool:
    """Run if at least one upstream failed."""
    t = tally(upstream_states)
    return t.total == 0 or t.failed > 0


def all_finished(upstream_states: Mapping[str, State]) -> bool:
    """Always run, once every upstream has finished in any state."""
    return True


always_run = all_finished


def manual_only(upstream_states: Mapping[str, State]) -> bool:
    """Once every upstream succeeded, wait PAUSED (holding no worker) until a person approves
    (``rf.approve``, ``rayflow approve``); a reject ends it FAILED (engine.pauses)."""
    return all_successful(upstream_states)


manual_only.manual = True  # type: ignore[attr-defined]  # what engine.pauses.is_manual looks for


def not_all_skipped(upstream_states: Mapping[str, State]) -> bool:
    """Run unless every upstream was skipped."""
    t = tally(upstream_states)
    return t.total == 0 or t.skipped < t.total


def _bound(value: float | None, total: int) -> float | None:
    if value is None:
        return None
    if value < 0:
        raise ValueError(f"trigger bounds must be >= 0, got {value}")
    return value * total if value < 1 else value


def _counting(name: str, field: str, at_least: float | None, at_most: float | None) -> Trigger:
    if at_least is None and at_most is None:
        raise ValueError(f"{name} needs at_least= or at_most=")
    for bound in (at_least, at_most):
        if bound is not None and bound < 0:
            raise ValueError(f"{name}: bounds must be >= 0, got {bound}")

    def trigger(upstream_states: Mapping[str, State]) -> bool:
        t = tally(upstream_states)
        if t.total == 0:
            return True
        total, count = t.total, getattr(t, field)
        low, high = _bound(at_least, total), _bound(at_most, total)
        if low is not None and count < math.ceil(low - 1e-9):
            return False
        return high is None or count <= math.floor(high + 1e-9)

    trigger.__name__ = f"{name}(at_least={at_least}, at_most={at_most})"
    trigger.__qualname__ = trigger.__name__
    return trigger


def some_successful(at_least: float | None = None, at_most: float | None = None) -> Trigger:
    """Run if the number of successful upstreams is within the bounds (fractions below 1)."""
    return _counting("some_successful", "successful", at_least, at_most)


def some_failed(at_least: float | None = None, at_most: float | None = None) -> Trigger:
    """Run if the number of failed upstreams is within the bounds (fractions below 1)."""
    return _counting("some_failed", "failed", at_least, at_most)


def failed_upstreams(upstream_states: Mapping[str, State], limit: int | None = None) -> list[str]:
    """The keys of (the first ``limit``) upstreams that failed, for trigger-failure messages."""
    failed = (key for key, state in upstream_states.items() if state.is_failed())
    return list(itertools.islice(failed, limit))


def trigger_name(trigger: Callable[..., bool]) -> str:
    return getattr(trigger, "__name__", None) or type(trigger).__name__
