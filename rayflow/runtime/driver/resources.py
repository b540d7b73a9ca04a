"""Tasks that no node of the Ray cluster can run: refused up front, or waited for in bounded time.

Ray queues a task whose resources (``num_cpus``, ``num_gpus``, ``memory``,
``resources``) no node has and waits for an autoscaler to add one, forever
if none will.  Before a run is submitted, ``check_resources`` compares each
task's request with every alive node's *total* resources (one ``ray.nodes()``
call, cached briefly), so a resource that exists but is held by someone else
only makes the task wait, as it should:

- a task some node fits: nothing to do;
- none fits and the cluster cannot grow: the run is refused with an
  ``UnsatisfiableResourcesError`` naming the task, its request and the node
  that comes closest, before anything is submitted;
- none fits and an autoscaler may add a node (or whether one can is not
  known): a warning, and the task's works may wait ``resource_wait`` seconds
  (task option; else ``RAYFLOW_RESOURCE_WAIT``; else 300) to be placed before
  the task fails with the same error (``runtime.actor.resource_waits.ResourceWaits``, kept by the
  RayExecutor).

Whether the cluster can grow is read from what Ray's own tools read:

1. Ray started by this process (``ray.init()`` with no address): fixed.
2. A cluster config reported to the GCS (``ReportClusterConfig``: KubeRay, Anyscale):
   it can grow by its node groups, so a task no group fits is refused too.
3. Autoscaler v2 running: its read-only mode cannot be told apart: unknown.
4. Autoscaler v1's status (``__autoscaling_status``, what ``ray status`` shows): the
   read-only provider of a ``ray start`` cluster names each node type ``node_<node id>``;
   any other node type means a cluster launcher config: it can grow.
5. Nothing reported (no monitor, or not yet): unknown.

Unknown is treated as "may grow": it costs a wait, never a wrong refusal.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import ray

from rayflow.core.options import TaskOptions
from rayflow.engine.plan import Plan
from rayflow.exceptions import UnsatisfiableResourcesError
from rayflow.runtime.actor.resource_waits import EPSILON, RESOURCE_WAIT_ENV, describe, task_request

logger = logging.getLogger(__name__)

DEFAULT_RESOURCE_WAIT = 300.0
CACHE_SECONDS = 10.0

FIXED, AUTOSCALING, UNKNOWN = "fixed", "autoscaling", "unknown"


@dataclass(frozen=True)
class ClusterView:
    """Alive nodes' total resources, and whether (and to which shapes) the cluster can grow."""

    nodes: tuple[Mapping[str, float], ...]
    growth: str = UNKNOWN  # FIXED, AUTOSCALING or UNKNOWN
    groups: tuple[Mapping[str, float], ...] | None = None  # node shapes an autoscaler may add, when known


# -- the decision: pure ----------------------------------------------------------


def fits(request: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(amount <= node.get(name, 0.0) + EPSILON for name, amount in request.items())


def decide(
    requests: Mapping[str, Mapping[str, float]], view: ClusterView
) -> tuple[dict[str, Mapping[str, float]], dict[str, Mapping[str, float]]]:
    """(refused, waiting): the tasks no node could ever fit, and those only a new node could."""
    refused: dict[str, Mapping[str, float]] = {}
    waiting: dict[str, Mapping[str, float]] = {}
    for key, request in requests.items():
        if any(fits(request, node) for node in view.nodes):
            continue
        if view.growth == FIXED or (view.groups is not None and not any(fits(request, g) for g in view.groups)):
            refused[key] = request
        else:
            waiting[key] = request
    return refused, waiting


def growth_of(
    *, started_here: bool, groups: tuple[Mapping[str, float], ...] | None, v2: bool,
    v1_status: Mapping[str, Any] | None, node_ids: Iterable[str],
) -> tuple[str, tuple[Mapping[str, float], ...] | None]:
    """Whether the cluster can grow, from what Ray reports (the module's docstring, 1-5)."""
    if started_here:
        return FIXED, None
    if groups is not None:
        return AUTOSCALING, groups
    if v2:
        return UNKNOWN, None
    report = (v1_status or {}).get("autoscaler_report")
    if not report:
        return UNKNOWN, None
    types = set(report.get("active_nodes") or {}) | set((report.get("node_type_mapping") or {}).values())
    types |= {entry[2] for entry in report.get("pending_nodes") or () if len(entry) > 2}
    readonly = {f"node_{node_id}" for node_id in node_ids}
    if types and types <= readonly and not report.get("pending_launches"):
        return FIXED, None
    return AUTOSCALING, None


def closest_node(request: Mapping[str, float], nodes: Iterable[Mapping[str, float]]) -> Mapping[str, float]:
    """The node that has the most of what is asked, then the most CPUs, GPUs and memory."""
    def rank(node: Mapping[str, float]) -> tuple[float, ...]:
        return (
            sum(1 for name, amount in request.items() if amount <= node.get(name, 0.0) + EPSILON),
            node.get("CPU", 0.0), node.get("GPU", 0.0), node.get("memory", 0.0),
        )

    return max(nodes, key=rank, default={})


def unsatisfiable_error(
    requests: Mapping[str, Mapping[str, float]], nodes: tuple[Mapping[str, float], ...], *, why: str
) -> UnsatisfiableResourcesError:
    key, request = next(iter(requests.items()))
    largest = closest_node(request, nodes)
    asks = "; ".join(f"task '{k}' asks for {describe(r)}" for k, r in requests.items())
    where = f"the largest node has {describe(largest)}" if nodes else "it has no alive node"
    count = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}"
    message = f"{asks} but no node of this Ray cluster ({count}) has that {why}; {where}"
    return UnsatisfiableResourcesError(
        message, task_key=key, request=dict(request),
        requests={k: dict(r) for k, r in requests.items()}, largest_node=dict(largest),
    )


def resource_wait(options: TaskOptions) -> float:
    """Seconds a task no node fits may wait for a new node: the task's option, else the env."""
    if options.resource_wait is not None:
        return options.resource_wait
    raw = os.environ.get(RESOURCE_WAIT_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if value > 0:
            return value
        logger.warning("%s=%r is not a positive number of seconds; using %gs", RESOURCE_WAIT_ENV, raw, DEFAULT_RESOURCE_WAIT)
    return DEFAULT_RESOURCE_WAIT


# -- the driver's check: one look at the cluster per run --------------------------


_cache: dict[str, tuple[float, ClusterView]] = {}
_warned: set[str] = set()


def check_resources(plan: Plan) -> Plan:
    """Refuse the run if a task fits no node of a cluster that cannot grow; otherwise mark the
    tasks that fit no node yet with how long they may wait to be placed."""
    requests = {s.key: task_request(s.options) for s in plan.specs if s.kind in ("task", "map")}
    if not requests:
        return plan
    view = observe_cluster()
    refused, waiting = decide(requests, view)
    if refused:
        why = "and the cluster cannot add one" if view.growth == FIXED else "and no node type its autoscaler may add has it"
        raise unsatisfiable_error(refused, view.nodes, why=why)
    if not waiting:
        return plan
    waits = {key: resource_wait(plan.by_key[key].options) for key in waiting}
    for key, request in waiting.items():
        note = f"task '{key}' asks for {describe(request)}, which no node of this Ray cluster has yet"
        if note not in _warned:
            _warned.add(note)
            logger.warning("%s; it waits up to %gs for the autoscaler to add one (resource_wait / %s)", note, waits[key], RESOURCE_WAIT_ENV)
    specs = tuple(dataclasses.replace(s, resource_wait=waits[s.key]) if s.key in waits else s for s in plan.specs)
    return plan.with_specs(specs)


def observe_cluster() -> ClusterView:
    """The cluster as it is now, looked at once per ``CACHE_SECONDS`` per cluster."""
    try:
        address = ray.get_runtime_context().gcs_address or ""
    except Exception:  # noqa: BLE001 - a Ray client connection: no GCS address
        address = ""
    hit = _cache.get(address)
    now = time.monotonic()
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    all_nodes = ray.nodes()
    nodes = tuple(dict(n.get("Resources") or {}) for n in all_nodes if n.get("Alive"))
    growth, groups = growth_of(
        started_here=_started_here(), groups=_cluster_config_groups(), v2=_autoscaler_v2(),
        v1_status=_autoscaler_v1_status(), node_ids=(n.get("NodeID", "") for n in all_nodes),
    )
    view = ClusterView(nodes, growth, groups)
    _cache[address] = (now, view)
    return view


def _started_here() -> bool:
    node = getattr(ray._private.worker, "_global_node", None)
    return bool(node is not None and node.head)


def _kv(key: bytes, namespace: bytes | None = None) -> bytes | None:
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        return _internal_kv_get(key, namespace=namespace)
    except Exception:  # noqa: BLE001 - not readable (a Ray client, an old GCS): unknown
        return None


def _cluster_config_groups() -> tuple[Mapping[str, float], ...] | None:
    raw = _kv(ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode(), ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode())
    if not raw:
        return None
    try:
        from ray.core.generated import autoscaler_pb2

        config = autoscaler_pb2.ClusterConfig.FromString(raw)
    except Exception:  # noqa: BLE001 - unreadable: as if not reported
        return None
    return tuple(dict(g.resources) for g in config.node_group_configs if g.max_count != 0)


def _autoscaler_v2() -> bool:
    raw = _kv(ray._raylet.GCS_AUTOSCALER_V2_ENABLED_KEY.encode(), ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode())
    return raw == b"1"


def _autoscaler_v1_status() -> Mapping[str, Any] | None:
    from ray._private import ray_constants

    raw = _kv(ray_constants.DEBUG_AUTOSCALING_STATUS.encode())
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
