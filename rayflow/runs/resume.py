"""``rf.resume(run_id)``: run a failed, cancelled or crashed run again, loading what it kept.

The run's parameters come from the run history, its flow from the target
recorded with it (or the ``flow`` given).  Every plain task whose result was
persisted by that run (``runs/<run id>/<task key>`` in the result store; or by
the run *it* resumed, and so on back) loads that result in a worker instead
of running; every other task runs.  The resumed run has a new run id and
records the one it resumes.

Guarantees: a task's code runs at least once per successful result (a task
that ran but whose result was not persisted, or whose run was killed before
the write finished, runs again); a persisted result is complete or absent
(writes are atomic), never half-written.
"""

from __future__ import annotations

import logging
from typing import Any

from rayflow.cache import code_fingerprint
from rayflow.core.loader import TargetError, load_flow
from rayflow.exceptions import ResumeError, UnknownRunError
from rayflow.results import ResultStore, default_location
from rayflow.store import RunStore, rayflow_home

logger = logging.getLogger(__name__)

RESUMABLE = {"FAILED", "CANCELLED", "CRASHED", "RUNNING", "PENDING"}  # RUNNING/PENDING: its driver may be elsewhere


def resume(run_id: str, flow: Any = None, **params: Any) -> Any:
    """Run ``run_id`` again; ``params`` override the recorded ones (a secret must be given again)."""
    history = RunStore(rayflow_home())
    run = history.run(run_id)
    if run is None:
        raise UnknownRunError(f"no run {run_id!r} in the run history at {history.path}", run_id=run_id)
    if run["state"] not in RESUMABLE:
        raise ResumeError(f"run {run_id} ended {run['state']}: there is nothing to resume", run_id=run_id)
    recorded = run.get("graph") or {}
    if flow is None:
        target = recorded.get("target")
        if not target:
            raise ResumeError(
                f"run {run_id} recorded no importable flow (defined inside a function?); "
                "pass it: rf.resume(run_id, flow=my_flow)",
                run_id=run_id,
            )
        try:
            flow = load_flow(target)
        except (TargetError, OSError, ImportError) as exc:
            raise ResumeError(f"cannot load the flow of run {run_id} from {target}: {exc}", run_id=run_id) from None
    values = dict(run["params"])
    secrets = [name for name, value in values.items() if value == "***" and name not in params]
    if secrets:
        raise ResumeError(
            f"parameter '{secrets[0]}' of run {run_id} is a secret and was not recorded; pass it again",
            run_id=run_id,
        )
    values.update(params)
    graph = flow.graph_for(**values)
    missing = [key for key in run["tasks"] if key not in graph.by_key]
    if missing:
        raise ResumeError(
            f"run {run_id} had task '{missing[0]}', which the flow no longer has; it cannot be resumed",
            run_id=run_id,
            task_key=missing[0],
        )
    store = ResultStore(flow.options.result_storage or default_location())
    chain = _runs_resumed(history, run_id, recorded)
    found: dict[str, str] = {}
    for key, node in graph.by_key.items():
        if node.kind != "task":
            continue
        path = next((p for rid in chain if (p := store.find(f"runs/{rid}/{key}")) is not None), None)
        if path is not None:
            found[key] = path
    _warn_changed_code(run_id, recorded.get("code") or {}, graph, found)
    resumed = flow.with_options(resumed_from=run_id, resume_results=found)
    return resumed.run(**values)


def _runs_resumed(history: RunStore, run_id: str, recorded: dict) -> list[str]:
    """``run_id``, the run it resumed, and so on back (where earlier results may be kept)."""
    chain, graph = [run_id], recorded
    while graph and graph.get("resumed_from") and graph["resumed_from"] not in chain and len(chain) < 100:
        chain.append(graph["resumed_from"])
        earlier = history.run(chain[-1])
        graph = (earlier or {}).get("graph") or {}
    return chain


def _warn_changed_code(run_id: str, recorded: dict[str, str], graph: Any, found: dict[str, str]) -> None:
    for key in found:
        before = recorded.get(key)
        if not before:
            continue
        try:
            now = code_fingerprint(graph.by_key[key].task.fn)
        except Exception:  # noqa: BLE001 - the warning is best effort
            continue
        if now != before:
            logger.warning(
                "rayflow: task %s's code changed since run %s; its stored result is loaded anyway "
                "(delete runs/%s/%s from the result store to run it again)", key, run_id, run_id, key,
            )
