"""``rf.approve`` / ``rf.reject``: a person's decision on a paused task, and the run's side of it.

A decision is checked, then recorded in the run history (store.approvals: who, when, the
input), where the run's orchestrator reads it (``HistoryPauseBook``, polled while a task is
paused: engine.pauses) and runs the task again, or ends it FAILED with the reason.

The run outlives its driver: when the driver is gone (killed, Ctrl-C, a laptop closed), an
approval resumes the run here as its next attempt (runs.resume: the results its tasks
persisted are loaded; a flow that pauses persists them by default, core.pausing), and the
resumed run finds the approval in the history.  A reject of such a run resumes it the same
way: the resumed run finds the reject and ends that task (or item) FAILED with the reason,
without running it; its downstream tasks settle as their triggers say, and the run ends.

Input is checked against the JSON schema of the pause's model (recorded when it paused),
so a bad value is refused here, naming the field, and the task stays paused.
"""

from __future__ import annotations

import getpass
import logging
from typing import Any

from rayflow.engine.pauses import Decision
from rayflow.exceptions import ApprovalError, UnknownRunError
from rayflow.paths import check_run_id
from rayflow.presentation import ACTIVE, UNFINISHED
from rayflow.store import RunStore, rayflow_home
from rayflow.store.approvals import PauseStore
from rayflow.store.history import driver_alive

logger = logging.getLogger(__name__)


class HistoryPauseBook:
    """The orchestrator's PauseBook over the run history (engine.pauses)."""

    def __init__(self, store: RunStore, run_id: str):
        self.pauses = PauseStore(store)
        self.run_id = run_id

    def opened(self, task_key: str, index: int | None, message: str, schema: dict | None, timeout: float | None) -> None:
        try:
            self.pauses.open(self.run_id, task_key, index, message, schema, timeout)
        except Exception:  # noqa: BLE001 - a history that fails never fails a run; it cannot be approved
            logger.warning("rayflow: cannot record the pause of %s in run %s", task_key, self.run_id, exc_info=True)

    def decisions(self) -> list[Decision]:
        try:
            rows = self.pauses.pauses(self.run_id)
        except Exception:  # noqa: BLE001 - read again on the next poll
            return []
        return [
            Decision(r["task_key"], r["decision"] == "approved", r["input"], r["reason"], r["decided_by"] or "", r["map_index"])
            for r in rows
            if r["decision"] is not None
        ]


def approve(
    run_id: str, task_key: str, input: Any = None, *, map_index: int | None = None, by: str | None = None,
    resume: bool = True, home: Any = None,
) -> Any:
    """Approve the paused task ``task_key`` of run ``run_id`` with ``input`` (a dict, or a
    pydantic model instance, checked against the pause's model).  Its live run runs it again;
    a run whose driver is gone is resumed here (``resume=False``: only recorded), and its
    FlowRun returned.  Returns None when a live driver takes the approval.  ``home``: the
    history's folder (default RAYFLOW_HOME)."""
    if hasattr(input, "model_dump"):
        input = input.model_dump(mode="json")
    return _decide(run_id, task_key, map_index, "approved", input, None, by, resume, home)


def reject(
    run_id: str, task_key: str, reason: str, *, map_index: int | None = None, by: str | None = None,
    resume: bool = True, home: Any = None,
) -> Any:
    """Reject the paused task: it ends FAILED with ``reason`` (recorded with who and when).  A
    run whose driver is gone is resumed here to end it (``resume=False``: only recorded), and its
    FlowRun returned; None when a live driver takes the reject."""
    if not reason or not reason.strip():
        raise ApprovalError("a reject needs a reason", run_id=run_id, task_key=task_key)
    return _decide(run_id, task_key, map_index, "rejected", None, reason, by, resume, home)


def _decide(
    run_id: str, task_key: str, index: int | None, decision: str, value: Any, reason: str | None,
    by: str | None, resume: bool, home: Any = None,
) -> Any:
    check_run_id(run_id)
    history = RunStore(home or rayflow_home())
    run = history.run(run_id)
    pauses = PauseStore(history)
    if run is None and pauses.pauses(run_id):  # paused before its first rows were written: live
        run = {"run_id": run_id, "state": "RUNNING", "tasks": [p["task_key"] for p in pauses.pauses(run_id)], "graph": None}
    if run is None:
        raise UnknownRunError(f"no run {run_id!r} in the run history at {history.path}", run_id=run_id)
    if task_key not in run["tasks"]:
        raise ApprovalError(f"run {run_id} has no task {task_key!r}", run_id=run_id, task_key=task_key)
    what = f"task {task_key}" + (f" item {index}" if index is not None else "") + f" of run {run_id}"
    pause = pauses.pause(run_id, task_key, index)
    state = _last_state(run, task_key)
    if pause is not None and pause["decision"] is not None and state in ACTIVE:
        raise ApprovalError(f"{what} was {pause['decision']} already, by {pause['decided_by']}", run_id=run_id, task_key=task_key)
    if pause is None or pause["decision"] is not None or state not in (None, *ACTIVE, "CRASHED"):  # None: not written yet
        raise ApprovalError(f"{what} is not paused (it is {state or 'PENDING'})", run_id=run_id, task_key=task_key)
    if decision == "approved":
        check_input(pause["schema"], value, what, run_id, task_key)
    if not pauses.decide(run_id, task_key, index, decision, value, reason, by or _user(), int(run.get("attempt") or 1)):
        raise ApprovalError(f"{what} is not paused (decided meanwhile)", run_id=run_id, task_key=task_key)
    if not resume or run["graph"] is None or (run["state"] in UNFINISHED and driver_alive(run["graph"])):
        return None  # a live driver reads the decision from the history
    from rayflow.runs.resume import resume as resume_run

    return resume_run(run_id, recorded_flow(run))


def recorded_flow(run: dict) -> Any:
    """The run's flow from its recorded target, on the runner it ran on (None: let resume say why)."""
    graph = run.get("graph") or {}
    target, runner = graph.get("target"), (graph.get("driver") or {}).get("runner")
    if not target:
        return None
    from rayflow.core.loader import load_flow

    try:
        flow = load_flow(target)
    except Exception:  # noqa: BLE001 - resume loads it again and says why it cannot
        return None
    return flow.with_options(runner=runner) if runner else flow


def run_is_live(run_id: str, home: Any = None) -> bool:
    """Whether ``run_id`` is unfinished with its driver alive (it takes decisions itself)."""
    store = RunStore(home or rayflow_home())
    run = store.run(run_id)
    if run is None:  # paused before its first rows were written (the recorder batches): live
        return bool(PauseStore(store).pauses(run_id))
    return run["state"] in UNFINISHED and driver_alive(run.get("graph") or {})


def pause_schema(run_id: str, task_key: str, index: int | None = None) -> dict | None:
    """The JSON schema of the input the pause waits for (None: none, or no such pause)."""
    pause = PauseStore(RunStore(rayflow_home())).pause(run_id, task_key, index)
    return None if pause is None else pause["schema"]


def check_input(schema: dict | None, value: Any, what: str, run_id: str, task_key: str) -> None:
    """Refuse ``value`` unless it fits ``schema`` (the pause's model), naming the first bad field."""
    if schema is None:
        if value is not None:
            raise ApprovalError(f"{what} waits for no input; approve it without one", run_id=run_id, task_key=task_key)
        return
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value if value is not None else {}), key=str)
    if errors:
        first = errors[0]
        field = ".".join(str(p) for p in first.absolute_path)
        if not field and first.validator == "required":
            field = str(first.message).split("'")[1] if "'" in first.message else "input"
        raise ApprovalError(
            f"input refused for {what}: field '{field or 'input'}': {first.message}", run_id=run_id, task_key=task_key
        )


def _last_state(run: dict, task_key: str) -> str | None:
    last = None
    for row in run.get("transitions") or ():
        if row["task_key"] == task_key:
            last = row["state"]
    return last


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name known to the OS
        return "unknown"
