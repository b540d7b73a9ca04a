"""The cluster's limits actor (``rayflow-limits`` in the ``rayflow`` namespace, ``num_cpus=0``,
detached, on the head node): engine.limits_state.LimitsState plus the limits' definitions kept
in the run history there (store.limits), loaded whenever it starts.  This module's
``LimitsActor`` runs in the actor's process; ``handle()`` runs in any process that calls it
(runtime.limits.client), finding the actor or making it.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from rayflow.engine.limits_state import LimitsState, _Limit, check_name, check_values
from rayflow.exceptions import LimitError
from rayflow.store.history import rayflow_home
from rayflow.store.limits import LimitKeeper

logger = logging.getLogger(__name__)

ACTOR_NAME = "rayflow-limits"
NAMESPACE = "rayflow"
HEAD_RESOURCE = "node:__internal_head__"  # Ray's resource of the head node: the actor lives there


class LimitsActor(LimitsState):
    """The cluster's limits actor: a LimitsState whose definitions are kept in the run history
    under ``home`` and loaded whenever it starts (Ray runs ``__init__`` again, with the same
    arguments, when it restarts a dead actor; a new actor loads them too).  Leases are not
    kept: a holder's next renewal takes its slots again.  A restored rate starts with an
    empty bucket, so a restart lets no burst through early."""

    def __init__(self, home: str | None = None):
        super().__init__()
        self.keeper = LimitKeeper(home)
        for name, (slots, per_second) in self.keeper.definitions.items():
            try:
                check_name(name)
                self.limits[name] = _Limit(*check_values(slots, per_second), tokens=0.0, refilled=self.clock())
            except LimitError as exc:  # a row edited by hand
                logger.warning("rayflow: limit %r in the run history is not restored: %s", name, exc)

    def set(self, name: str, slots: int, per_second: float | None = None) -> None:
        """Kept in the history first: a limit the history cannot keep is refused (LimitError),
        and the limit stays as it was."""
        check_name(name)
        slots, per_second = check_values(slots, per_second)
        rate = f" ({per_second:g} per second)" if per_second is not None else ""
        self.keeper.keep(name, (slots, per_second), f"limit {name!r} is not set to {slots}{rate}")
        super().set(name, slots, per_second)

    def remove(self, name: str) -> bool:
        if name in self.limits:
            self.keeper.keep(name, None, f"limit {name!r} is not removed")
        return super().remove(name)


_LimitsActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(LimitsActor)


def _history_for_actor() -> str | None:
    """Where the actor keeps the limits: the head's run history, as for submitted runs (their
    drivers run on the head).  From a process on the head node, its own RAYFLOW_HOME (as a
    driver's run actor gets the driver's); from elsewhere, None: RAYFLOW_HOME as the actor's
    process on the head sees it."""
    try:
        here = ray.get_runtime_context().get_node_id()
        on_head = any(n.get("NodeID") == here and HEAD_RESOURCE in n.get("Resources", {}) for n in ray.nodes())
        return str(rayflow_home().resolve()) if on_head else None
    except Exception:  # noqa: BLE001 - the head's own
        return None


def make_or_find() -> Any:
    """A handle on the cluster's limits actor, found or made (on the head node)."""
    try:
        return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return _LimitsActor.options(
                name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                resources={HEAD_RESOURCE: 0.001}, scheduling_strategy="DEFAULT",  # not the caller's placement group
        ).remote(_history_for_actor())


def find() -> Any | None:
    """A handle on the cluster's limits actor if there is one (anyone ever set a limit); never makes it."""
    try:
        return ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return None
