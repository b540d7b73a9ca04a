"""FlowRun: what ``flow.run()`` returns, whatever executed the run.

It holds states and value *handles*; values are fetched through the runner's
``fetch`` only when asked for, so nothing but the requested results crosses
to the driver.  Holding a FlowRun keeps its tasks' values alive (in Ray's
object store for the Ray runner) until it is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from rayflow.core.refs import NodeRef, find_refs, substitute
from rayflow.engine.columns import CODES, MergedChunk, merge_results
from rayflow.engine.protocol import RunSummary
from rayflow.engine.protocol import MapHandle
from rayflow.exceptions import FlowRunError, TaskRunError, UnknownTaskError
from rayflow.states import ErrorInfo, State, StateType


class FlowRun:
    def __init__(
        self,
        summary: RunSummary,
        result_template: Any,
        fetch: Callable[[list[Any]], list[Any]],
        task_order: tuple[str, ...],
    ):
        self.run_id = summary.run_id
        self.flow_name = summary.flow_name
        self.state: State = summary.state
        self.task_states: Mapping[str, State] = MappingProxyType(
            {k: summary.task_states[k] for k in task_order}
        )
        self._history = summary.history
        self._handles = summary.handles
        self._result_template = result_template
        self._fetch = fetch
        self._cache: dict[str, Any] = {}
        self.trace_id: str | None = None  # the run's OpenTelemetry trace id, when it was traced

    def __repr__(self) -> str:
        return f"<FlowRun {self.flow_name} {self.run_id} {self.state.type.value}>"

    def is_successful(self) -> bool:
        return self.state.is_successful()

    def history(self, key: str) -> list[State]:
        """Every state task ``key`` went through, oldest first."""
        self._check_key(key)
        return list(self._history[key])

    def task_result(self, key: str) -> Any:
        """The value task ``key`` produced (None if it was skipped)."""
        return self._values([key])[key]

    def result(self) -> Any:
        """The flow's return value with task results in place; FlowRunError if the run failed."""
        if not self.state.is_successful():
            raise self.error()
        keys = [ref._key for ref in _node_refs(self._result_template)]
        values = self._values(keys)
        return substitute(self._result_template, lambda ref: values[ref._key])

    def failed_tasks(self) -> dict[str, State]:
        return {k: s for k, s in self.task_states.items() if s.is_failed()}

    def error(self) -> FlowRunError:
        """The FlowRunError for this run, chained to the first task's own exception."""
        root = next((s for s in self.task_states.values() if s.error is not None), None)
        message = f"flow '{self.flow_name}' run {self.run_id} ended {self.state.type.value}: {self.state.message}"
        if root is not None:
            message += f"; first error: {root.error}"
        error = FlowRunError(message, run=self)
        if root is not None and isinstance(root.exception, BaseException):
            error.__cause__ = root.exception
        return error

    def _check_key(self, key: str) -> None:
        if key not in self.task_states:
            raise UnknownTaskError(
                f"run {self.run_id} has no task '{key}'; tasks: {', '.join(self.task_states)}",
                task_key=key,
                run_id=self.run_id,
            )

    def _values(self, keys: list[str]) -> dict[str, Any]:
        wanted = []
        for key in dict.fromkeys(keys):
            self._check_key(key)
            state = self.task_states[key]
            if key in self._cache:
                continue
            if state.type is StateType.SKIPPED:
                self._cache[key] = None
            elif key not in self._handles:
                exc = TaskRunError(
                    f"task '{key}' of run {self.run_id} has no result: it ended {state}",
                    task_key=key,
                    run_id=self.run_id,
                    attempt=state.attempt,
                )
                if isinstance(state.exception, BaseException):
                    raise exc from state.exception
                raise exc
            else:
                wanted.append(key)
        plain = [k for k in wanted if not isinstance(self._handles[k], MapHandle)]
        if plain:
            for key, value in zip(plain, self._fetch([self._handles[k] for k in plain]), strict=True):
                self._cache[key] = value
        for key in wanted:
            if isinstance(self._handles[key], MapHandle):
                self._cache[key] = [v for chunk in self._merged_chunks(key) for v in chunk.values]
        return {k: self._cache[k] for k in keys}

    def _merged_chunks(self, key: str) -> list[MergedChunk]:
        handle: MapHandle = self._handles[key]
        flat = [h for chunk in handle.chunks for h in chunk.handles]
        results = iter(self._fetch(flat)) if flat else iter(())
        return [merge_results([next(results) for _ in chunk.handles]) for chunk in handle.chunks]

    def is_mapped(self, key: str) -> bool:
        self._check_key(key)
        return isinstance(self._handles.get(key), MapHandle)

    def map_states(self, key: str) -> list[State]:
        """One State per item of mapped task ``key``, in item order (fetched on demand)."""
        self._check_key(key)
        if not isinstance(self._handles.get(key), MapHandle):
            raise TaskRunError(
                f"task '{key}' of run {self.run_id} has no item states: it is not a map that ran "
                f"(it ended {self.task_states[key]})",
                task_key=key,
                run_id=self.run_id,
            )
        states: list[State] = []
        for chunk in self._merged_chunks(key):
            for i, (code, attempt) in enumerate(zip(chunk.codes.tolist(), chunk.attempts.tolist())):
                error = chunk.errors.get(i)
                info = None
                if error is not None:
                    info = ErrorInfo(type=error[0], message=error[1], traceback=error[2])
                states.append(
                    State(
                        type=CODES[code],
                        attempt=max(1, attempt),
                        message=str(info) if info is not None else "",
                        error=info,
                    )
                )
        return states


def _node_refs(template: Any) -> list[NodeRef]:
    return [r for r in find_refs(template) if isinstance(r, NodeRef)]
