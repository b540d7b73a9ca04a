"""Conditional branches and the flow's reference tasks, declared in a flow body.

``with rf.case(node, value):`` adds a small check task comparing the node's
result with ``value``; it ends SKIPPED when they differ.  Every task created
inside the block depends on the check and is skipped with it (whatever its
``skip_on_upstream_skip``), and the skip propagates to their downstream tasks
as usual.  Cases nest: an inner check is itself inside the outer block.

``rf.merge(a, b, ...)`` is settled by the orchestrator without running
anything: it takes the value of the first branch that was not skipped, and
is SKIPPED if all were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rayflow.core.graph import active_builder
from rayflow.core.options import TaskOptions
from rayflow.core.refs import NodeRef
from rayflow.core.task import Task
from rayflow.exceptions import GraphError
from rayflow.signals import Skip


def _check_case(value: Any, expected: Any, subject: str) -> bool:
    if value == expected:
        return True
    raise Skip(f"case not met: {subject} is {value!r}, not {expected!r}")


def _merge(*branches: Any) -> Any:  # never called: the orchestrator settles merges
    raise AssertionError("merge nodes are settled by the orchestrator")


_MERGE = Task(_merge, TaskOptions(name="merge", skip_on_upstream_skip=False))


def _builder(what: str) -> Any:
    builder = active_builder()
    if builder is None:
        raise GraphError(f"{what} can only be used inside a flow body")
    return builder


@contextmanager
def case(node: Any, value: Any) -> Iterator[None]:
    """Tasks created inside run only if ``node``'s result equals ``value``.

    For a flow parameter a plain ``if`` does the same while the graph is built;
    ``rf.case`` on a plain value still works and keeps the skipped branch in the graph.
    """
    builder = _builder("rf.case")
    if isinstance(node, NodeRef):
        subject, name = f"task '{node._key}'", f"case({node._key.rsplit('/', 1)[-1]})"
    else:
        subject, name = f"value {node!r}", "case"
    check = Task(_check_case, TaskOptions(name=name))
    check_ref = builder.add_call(check, (node, value, subject), {}, None)
    with builder.case_block(check_ref):
        yield


def merge(*branches: Any) -> NodeRef:
    """The result of the first branch that was not skipped (SKIPPED if all were)."""
    builder = _builder("rf.merge")
    if not branches or not all(isinstance(b, NodeRef) for b in branches):
        raise GraphError(f"rf.merge takes one or more task results, got {branches!r}")
    return builder.add_call(_MERGE, tuple(branches), {}, None, kind="merge")


def set_reference_tasks(*nodes: Any) -> None:
    """Let these tasks, instead of the terminal ones, decide the flow's final state."""
    builder = _builder("rf.set_reference_tasks")
    if not nodes:
        raise GraphError("set_reference_tasks needs at least one task result")
    builder.set_reference(nodes)
