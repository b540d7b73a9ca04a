"""Subflows: a flow called inside another flow's body is inlined into its graph.

``inner(x=n)`` inside ``outer`` validates ``inner``'s parameters now (a bad
value is a ``ParameterError`` naming ``inner`` and the field), traces
``inner``'s body in a scope of its own, so its task keys read ``inner/inc``,
``inner/inc-2`` (``outer/inner/...`` when nested), and records one more node,
keyed ``inner`` (``inner-2`` for a second call), that stands for the
subflow: it waits for every task of the subflow, its value is the subflow's
return value and its state is decided by the subflow's reference tasks, as a
flow's is.  Its state handlers are the inner flow's.

A parameter may be given a task result of the outer flow: it is not
validated (it has no value yet) and stays a reference inside the subflow.
"""

from __future__ import annotations

from typing import Any

from rayflow.core.graph import GraphBuilder
from rayflow.core.options import TaskOptions
from rayflow.core.parameters import validate_parameters
from rayflow.core.refs import NodeRef, find_refs
from rayflow.core.task import Task
from rayflow.exceptions import GraphError, ParameterError


def _subflow_value(value: Any) -> Any:
    """Runs as the subflow node: its one argument is the subflow's return value, refs resolved."""
    return value


def call_subflow(builder: GraphBuilder, flow: Any, args: tuple[Any, ...], params: dict[str, Any]) -> NodeRef:
    if builder.tracing(flow):
        raise GraphError(
            f"flow '{flow.name}' calls itself (directly or through subflows) while its graph is "
            "being built; a flow graph cannot contain itself"
        )
    where = builder.current_flow_name
    try:
        bound = flow.bind(args, params)
    except ParameterError as exc:
        raise ParameterError(
            f"subflow '{flow.name}' called in flow '{where}': {exc}", flow_name=flow.name, errors=exc.errors
        ) from None
    values = _validated(flow, bound, where)
    key = builder.next_key(flow.name)
    with builder.subflow_scope(key, flow) as scope:
        result = flow.fn(**values)
    options = flow.options
    task = Task(
        _subflow_value,
        TaskOptions(
            name=flow.name,
            on_state=options.on_state,
            on_failure=options.on_failure,
            on_success=options.on_success,
        ),
    )
    return builder.add_subflow(key, task, scope, result)


def _validated(flow: Any, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate the plain values; parameters given task results pass through as references."""
    deferred = {name: v for name, v in values.items() if find_refs(v)}
    plain = {name: v for name, v in values.items() if name not in deferred}
    try:
        checked = validate_parameters(flow.parameters_model, flow.name, plain, deferred=set(deferred))
    except ParameterError as exc:
        raise ParameterError(
            f"subflow '{flow.name}' called in flow '{where}': {exc}", flow_name=flow.name, errors=exc.errors
        ) from None
    return {**checked, **deferred}
