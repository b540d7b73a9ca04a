"""The retry ledger of a run's plain tasks, on the orchestrator's side: attempts per task key,
application retries spent (``retries``) and system retries spent (``system_retries``), and
the state a failed attempt gets from them (policy.next_retry and system_retry_left decide).
A retry is never a sleep: the RETRYING state carries when it is due (``scheduled_for``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rayflow.engine.plan import Plan
from rayflow.engine.policy import next_retry, system_retry_left
from rayflow.engine.protocol import AttemptResult
from rayflow.states import State, StateType


class RetryLedger:
    def __init__(self, plan: Plan, clock: Callable[[], float]):
        self.plan = plan
        self.clock = clock
        keys = [s.key for s in plan.specs]
        self.attempts = dict.fromkeys(keys, 0)
        self.app_failures = dict.fromkeys(keys, 0)
        self.system_failures = dict.fromkeys(keys, 0)
        self.looped: dict[str, bytes] = {}  # a looping task whose attempt failed: where its retry resumes

    def loops(self, result: AttemptResult) -> list[State]:
        """rf.Loop: a LOOPED state per iteration the attempt looped (its timing and message); where
        a failed attempt stopped is kept for its retry (engine.worker.looping)."""
        if result.loop_state is not None:
            self.looped[result.task_key] = result.loop_state
        elif result.type is not StateType.FAILED or result.error is None or not result.error.system:
            self.looped.pop(result.task_key, None)  # a lost worker reports nothing: its retry resumes where the last did
        return [
            State(type=StateType.LOOPED, attempt=result.attempt, started_at=start, finished_at=end, message=message, timestamp=end)
            for start, end, message in result.loops
        ]

    def retrying(self, message: str, delay: float, timing: dict[str, Any], **extra: Any) -> State:
        due = self.clock() + delay
        when = f"retry in {delay:.3g}s" if delay > 0 else "retry now"
        return State(type=StateType.RETRYING, message=f"{message}; {when}", scheduled_for=due, **timing, **extra)

    def spend(self, key: str, message: str, timing: dict[str, Any], **extra: Any) -> State | None:
        """RETRYING if ``key`` has application retries left (and uses one up), else None."""
        options = self.plan.by_key[key].options
        delay = next_retry(options, self.app_failures[key])
        if delay is None:
            return None
        self.app_failures[key] += 1
        budget = f"retry {self.app_failures[key]} of {options.retries}"
        return self.retrying(f"{message} ({budget})", delay, timing, **extra)

    def after_failure(self, key: str, result: AttemptResult, timing: dict[str, Any]) -> State:
        options = self.plan.by_key[key].options
        error = result.error
        failure = {"error": error, "exception": result.exception()}
        if error is not None and error.system:
            if system_retry_left(options, self.system_failures[key]):
                self.system_failures[key] += 1
                budget = f"system retry {self.system_failures[key]} of {options.system_retries}"
                return self.retrying(f"{result.message} ({budget})", 0.0, timing, **failure)
            return State(type=StateType.FAILED, message=result.message, **timing, **failure)
        retrying = self.spend(key, result.message, timing, **failure) if result.retryable else None
        if retrying is not None:
            return retrying
        if not result.retryable and options.retries and not _loop_limit(result):
            message = f"{result.message} (not retried: not one of retry_on)"
            return State(type=StateType.FAILED, message=message, **timing, **failure)
        return State(type=StateType.FAILED, message=result.message, **timing, **failure)


def _loop_limit(result: AttemptResult) -> bool:
    """Past max_loops (engine.worker.looping): not retried, for a reason of its own."""
    return result.error is not None and result.error.type.endswith(".LoopLimitExceeded")
