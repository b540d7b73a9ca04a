"""``rf.resume(run_id)``: run a failed, cancelled or crashed run again, loading what it kept.

The run's parameters come from the run history, its flow from the target
recorded with it (or the ``flow`` given).  Every plain task whose result was
persisted by that run (``runs/<run id>/<task key>`` in the result store; or by
the run *it* resumed, and so on back) loads that result in a worker instead
of running; every other task runs.  The resumed run keeps the run id, as
its next attempt: the history keeps every attempt's outcome, and shows the
latest attempt's tasks.

Guarantees: a task's code runs at least once per successful result (a task
that ran but whose result was not persisted, or whose run was killed before
the write finished, runs again); a persisted result is complete or absent
(writes are atomic), never half-written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rayflow.cache import code_fingerprint
from rayflow.core.flow import live_flows
from rayflow.core.loader import TargetError, load_flow
from rayflow.exceptions import ResumeError, UnknownRunError
from rayflow.paths import check_run_id
from rayflow.results import ResultStore, default_location
from rayflow.results_layout import chunk_folder, parse_chunk, persist_name
from rayflow.store import RunStore, rayflow_home
from rayflow.presentation import FAILED, UNFINISHED
from rayflow.store.history import driver_alive

logger = logging.getLogger(__name__)

RESUMABLE = FAILED | set(UNFINISHED)  # every failed state (CANCELLED, CRASHED too); unfinished: its driver may be gone


def check_resumable(run_id: str) -> tuple[RunStore, dict]:
    """The history and the run, or the error saying why it cannot be resumed (unknown, ended
    SUCCESS, still running).  A run id an older rayflow accepted and the rule refuses is refused
    first: its stored results would be read from where its id points."""
    check_run_id(run_id)
    history = RunStore(rayflow_home())
    run = history.run(run_id)
    if run is None:
        raise UnknownRunError(f"no run {run_id!r} in the run history at {history.path}", run_id=run_id)
    if run["state"] not in RESUMABLE:
        raise ResumeError(f"run {run_id} ended {run['state']}: there is nothing to resume", run_id=run_id)
    recorded = run.get("graph") or {}
    if run["state"] in UNFINISHED and driver_alive(recorded):
        pid = recorded["driver"]["pid"]
        raise ResumeError(f"run {run_id} is still running (its driver, process {pid}, is alive)", run_id=run_id)
    return history, run


def resume(run_id: str, flow: Any = None, **params: Any) -> Any:
    """Run ``run_id`` again; ``params`` override the recorded ones (a secret must be given again)."""
    history, run = check_resumable(run_id)
    recorded = run.get("graph") or {}
    if flow is None:
        flow = find_flow(run_id, run["flow"], recorded)
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
    chunks: dict[str, tuple[tuple[int, int, tuple[str, ...]], ...]] = {}
    for key, node in graph.by_key.items():
        if node.kind == "map":
            stored = stored_chunks(store, chain, key)
            if stored:
                chunks[key] = stored
            continue
        if node.kind != "task":
            continue
        path = next((p for rid in chain if (p := store.find(persist_name(rid, key))) is not None), None)
        if path is not None:
            found[key] = path
    _warn_changed_code(run_id, recorded.get("code") or {}, graph, {**found, **chunks})
    traced = recorded.get("trace")
    earlier = recorded.get("resumed_from")
    resumed = flow.with_options(
        run_id=run_id, run_attempt=int(run.get("attempt") or 1) + 1,
        # the same id, unless this run resumed another (an older rayflow's history): that chain is kept
        resumed_from=earlier if earlier and earlier != run_id else run_id,
        resume_results=found, resume_chunks=chunks,
        resumed_trace=tuple(traced) if isinstance(traced, list) and len(traced) == 2 else None,
    )
    return resumed.run(**values)


def find_flow(run_id: str, name: str, recorded: dict, load: Callable[[str], Any] = load_flow) -> Any:
    """The flow of run ``run_id``: the newest flow of this process named ``name`` whose code is the
    run's (a flow defined in ``__main__``, a notebook cell or a function is found so); else the one
    its recorded target loads with ``load`` (the CLI's looks in the current directory first; code
    changed since or not: the tasks' changes are warned about); else the error naming the flow."""
    code = recorded.get("flow_code")
    named = live_flows(name)
    same = [f for f in named if code and f.code_id == code]
    if same:  # a resume's own copies (resumed_from set) last
        return sorted(same, key=lambda f: f.options.resumed_from is not None)[0]
    target = recorded.get("target")
    if target:
        try:
            return load(target)
        except (TargetError, OSError, ImportError) as exc:
            raise ResumeError(f"cannot load the flow of run {run_id} from {target}: {exc}", run_id=run_id) from None
    if named and not code:
        why = f"the run recorded no code to tell the {len(named)} flow(s) named '{name}' here by (an older rayflow)"
    elif named:
        why = f"the {len(named)} flow(s) named '{name}' in this process have other code than the run's"
    else:
        why = f"no flow named '{name}' is defined in this process (the run's was defined in __main__ or a function)"
    raise ResumeError(
        f"cannot find the flow '{name}' of run {run_id}: {why}; pass it: rf.resume({run_id!r}, flow={name})",
        run_id=run_id,
    )


def stored_chunks(store: ResultStore, chain: list[str], key: str) -> tuple[tuple[int, int, tuple[str, ...]], ...]:
    """The chunks of map ``key`` that the runs of ``chain`` (newest first) stored, as
    (start, stop, paths): the newest first run of each chunk, then every retry laid over it
    since, oldest first.  Chunks of different runs that overlap: the newest run's."""
    bases: dict[tuple[int, int], tuple[int, str]] = {}  # range -> (run's age, path)
    patches: dict[tuple[int, int], list[tuple[int, tuple[int, int], str]]] = {}  # range -> [(age, order, path)]
    for age, rid in enumerate(chain):
        prefix = chunk_folder(rid, key)
        for info in store.list(prefix):
            chunk = parse_chunk(info.path[len(prefix) :])
            if chunk is None:
                continue
            span = (chunk.start, chunk.stop)
            if chunk.is_base:
                bases.setdefault(span, (age, info.path))  # the newest run's first run of it
            else:
                patches.setdefault(span, []).append((age, chunk.order, info.path))
    taken: list[tuple[int, int, tuple[str, ...]]] = []
    for span, (age, base) in sorted(bases.items(), key=lambda item: (item[1][0], item[0])):
        if any(span[0] < stop and start < span[1] for start, stop, _ in taken):
            continue
        later = sorted((-a, w, p) for a, w, p in patches.get(span, []) if a <= age)  # oldest run first
        taken.append((span[0], span[1], (base, *(p for _, _, p in later))))
    return tuple(sorted(taken))


def _runs_resumed(history: RunStore, run_id: str, recorded: dict) -> list[str]:
    """``run_id``, the run it resumed, and so on back (where earlier results may be kept): a run
    resumed under its own id is its own chain; histories of older rayflows had one id per resume."""
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
                "(delete %s from the result store to run it again)", key, run_id, persist_name(run_id, key),
            )
