"""Triggers decide whether a task runs once all of its upstream tasks have finished.

A trigger is any callable taking the upstream states (a mapping of task key
to State) and returning True to run.  With no upstreams every trigger passes.
A SKIPPED upstream counts as successful.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rayflow.states import State

Trigger = Callable[[Mapping[str, State]], bool]


def all_successful(upstream_states: Mapping[str, State]) -> bool:
    """Run only if every upstream succeeded (the default)."""
    return all(state.is_successful() for state in upstream_states.values())


def failed_upstreams(upstream_states: Mapping[str, State]) -> list[str]:
    """The keys of the upstreams that failed, for trigger-failure messages."""
    return [key for key, state in upstream_states.items() if state.is_failed()]
