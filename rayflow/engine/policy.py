"""Pure decisions of the orchestrator: skip, trigger, merge, retry, and what a dead worker's work becomes.

Each function takes explicit inputs and returns a State (or a number); none
touches an executor, so every rule here is tested directly.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, TypeVar

from rayflow.core.options import TaskOptions
from rayflow.engine.plan import Plan, TaskSpec
from rayflow.engine.protocol import describe_error
from rayflow.states import State, StateType, error_text
from rayflow.triggers import failed_upstreams, tally, trigger_name


def settle_before_run(
    spec: TaskSpec, upstream: Mapping[str, State], skip_view: Mapping[str, State] | None = None
) -> State | None:
    """The state a ready task ends in without running, or None if it should run.

    Order: an unmet case skips; a skipped upstream skips (unless
    ``skip_on_upstream_skip=False``); then the trigger is asked.  ``skip_view``
    is what the skip rule looks at when it differs from what the trigger sees
    (a map counts as skipped only when every item was).
    """
    unmet = [k for k in spec.conditions if upstream[k].is_skipped()]
    if unmet:
        return State(type=StateType.SKIPPED, message=upstream[unmet[-1]].message or "case not met")
    if spec.kind in ("merge", "subflow"):
        return None  # settled by settle_merge / settle_subflow from their own rules
    if spec.options.skip_on_upstream_skip:
        view = upstream if skip_view is None else skip_view
        counts = tally(view)
        if counts.skipped:
            first = itertools.islice((k for k, s in view.items() if s.is_skipped()), 5)
            shown = ", ".join(first) + (f" and {counts.skipped - 5} more" if counts.skipped > 5 else "")
            return State(type=StateType.SKIPPED, message=f"upstream task(s) skipped: {shown}")
    trigger = spec.options.trigger
    try:
        passed = trigger(upstream)
        if not isinstance(passed, bool) and type(passed).__name__ != "bool_":  # "yes" must not pass silently
            return State(
                type=StateType.FAILED,
                message=f"trigger {trigger_name(trigger)} returned {type(passed).__name__} {passed!r:.60}, not a bool",
            )
        passed = bool(passed)
    except Exception as exc:  # a custom trigger is user code
        return State(
            type=StateType.FAILED,
            message=f"trigger {trigger_name(trigger)} raised {error_text(type(exc).__name__, str(exc))}",
            error=describe_error(exc),
            exception=exc,
        )
    if passed:
        return None
    counts = tally(upstream)
    failed = failed_upstreams(upstream, limit=5)
    shown = ", ".join(failed) + (f" and {counts.failed - 5} more" if counts.failed > 5 else "")
    detail = f"; failed upstream task(s): {shown}" if failed else ""
    return State(
        type=StateType.TRIGGER_FAILED,
        message=f"trigger {trigger_name(trigger)} did not pass{detail}",
    )


def settle_merge(spec: TaskSpec, states: Mapping[str, State]) -> tuple[State, str | None]:
    """A merge's state and the branch whose value it takes (None if it takes none)."""
    for key in spec.upstream:
        state = states[key]
        if state.is_skipped():
            continue
        if state.is_successful():
            return State(type=StateType.SUCCESS, message=f"took branch {key}"), key
        return State(type=StateType.TRIGGER_FAILED, message=f"branch {key} ended {state.type.value}"), None
    return State(type=StateType.SKIPPED, message="every branch was skipped"), None


def reference_failure(states: Mapping[str, State], keys: tuple[str, ...]) -> State | None:
    """FAILED naming the first failed reference task, or None if none failed: a flow's rule."""
    failed = [k for k in keys if states[k].is_failed()]
    if not failed:
        return None
    first = states[failed[0]]
    detail = f"{failed[0]}: {first.type.value}" + (f" ({first.message})" if first.message else "")
    return State(type=StateType.FAILED, message=f"{len(failed)} reference task(s) failed; {detail}")


def settle_subflow(spec: TaskSpec, states: Mapping[str, State]) -> State | None:
    """A finished subflow's state as a flow's is decided, or None: it succeeds once its value is built."""
    if any(states[k].type is StateType.CANCELLED for k in spec.members):
        return State(type=StateType.CANCELLED, message="run cancelled")
    failed = reference_failure(states, spec.reference)
    if failed is not None:
        return failed
    lost = [k for k in spec.value_keys if states[k].is_failed()]
    if lost:
        return State(
            type=StateType.FAILED,
            message=f"its return value needs task {lost[0]}, which ended {states[lost[0]].type.value}",
        )
    skipped = [k for k in spec.value_keys if states[k].is_skipped()]
    if skipped:  # as if inlined: what consumes that value is skipped with it
        return State(type=StateType.SKIPPED, message=f"its return value comes from skipped task {skipped[0]}")
    return None


def retry_delay(options: TaskOptions, retry_number: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
    if isinstance(options.retry_delay, tuple):
        delays = options.retry_delay
        base = delays[min(retry_number, len(delays)) - 1]
    else:
        base = options.retry_delay * options.retry_backoff ** (retry_number - 1)
    return base * (1.0 + options.retry_jitter * rng())



def next_retry(options: TaskOptions, spent: int, *, retryable: bool = True, rng: Callable[[], float] = random.random) -> float | None:
    """The one application-retry rule: the delay before another attempt, or None when none is due.

    ``spent`` is the retries a task (or one item of a map) has used so far: its failures
    that were retried, never its ``rf.Retry`` signals (``after_retry_signal``).  The caller
    adds one to ``spent`` when this returns a delay.  A failure that is not ``retryable``
    (not one of ``retry_on``, or ``rf.Fail``) is never retried.
    """
    if not retryable or spent >= options.retries:
        return None
    return retry_delay(options, spent + 1, rng)


def after_retry_signal(
    options: TaskOptions, spent: int, delay: float | None = None, rng: Callable[[], float] = random.random
) -> float:
    """The one ``rf.Retry`` rule, for a task and for an item of a map alike: the delay before
    the next attempt.  A signal is not a failure: it is always retried, even past
    ``retries``, and spends none of them (``spent`` stays as it is; as in Prefect 1).
    Without a ``delay`` of its own it waits the delay of the next retry of the budget,
    ``retry_delay(spent + 1)``: what a failure at this point would wait.  So repeated
    signals wait the same delay (give ``delay=`` to back off), and a failure after them
    waits the budget's next delay as if they had not happened.  Nothing bounds the
    signals: a task that always raises ``rf.Retry`` runs until the run is cancelled.
    """
    return delay if delay is not None else retry_delay(options, spent + 1, rng)


def system_retry_left(options: TaskOptions, spent: int) -> bool:
    """Whether a work lost to the system (its worker died) runs again: ``system_retries`` per task or chunk."""
    return spent < options.system_retries


SPLIT, RETRY, FAIL = "split", "retry", "fail"
Loss = Literal["split", "retry", "fail"]


def after_worker_death(*, items: int, deaths: int, options: TaskOptions, may_split: bool = True) -> Loss:
    """What becomes of a map's work whose worker died (a crash, an OOM kill, a signal).

    ``deaths`` is how many works holding these items have died, this one included.  A work
    of several items is split in halves, which run again on their own: any one item may
    have killed the worker, and blaming them all fails healthy items.  Halving repeats
    until the item at fault is alone (log2(items) rounds), so no system retry is spent
    while several items share the blame; every death still counts for the items in it.
    A work of one item (or one the map may no longer split, ``may_split``) runs again
    while ``deaths`` is within ``system_retries`` (``system_retry_left``, as for a plain
    task), then fails.
    """
    if items > 1 and may_split:
        return SPLIT
    return RETRY if system_retry_left(options, deaths - 1) else FAIL


T = TypeVar("T", bound=Sequence[int])


def halves(items: T) -> tuple[T, T]:
    """The two halves a lost work's items are split into (a range gives ranges), the first the smaller."""
    middle = len(items) // 2
    return items[:middle], items[middle:]  # type: ignore[return-value]


def final_flow_state(
    plan: Plan, states: Mapping[str, State], *, started_at: float | None = None, now: float | None = None
) -> State:
    """CANCELLED if the run was cancelled; FAILED if any reference task failed; else SUCCESS."""
    now = time.time() if now is None else now
    timing = {"started_at": started_at, "finished_at": now}
    if any(s.type is StateType.CANCELLED for s in states.values()):
        return State(type=StateType.CANCELLED, message="run cancelled", **timing)
    failed = reference_failure(states, plan.reference_keys)
    if failed is not None:
        return failed.model_copy(update=timing)
    return State(type=StateType.SUCCESS, message="all reference tasks succeeded", **timing)


def subflow_span(members: Sequence[State], end: float) -> dict[str, float | None]:
    """A subflow's times are its members': first start to last finish (``end`` if none finished)."""
    starts = [s.started_at for s in members if s.started_at is not None]
    ends = [s.finished_at for s in members if s.finished_at is not None]
    return {"started_at": min(starts, default=None), "finished_at": max(ends, default=end)}
