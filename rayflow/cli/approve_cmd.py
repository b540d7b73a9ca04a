"""``rayflow approve RUN_ID TASK [--input JSON | -p k=v] [--item i]`` and ``rayflow reject RUN_ID
TASK --reason TEXT``: a decision on a paused task (runs.approval), recorded with the OS user.

A live run picks the decision up; a run whose driver is gone is resumed by ``approve`` and by
``reject``, here, as ``rayflow resume`` does (its recorded flow loaded by the CLI's loader), and
its outcome printed (exit 1 when it did not succeed, as ``rayflow resume``'s).  Bad input (JSON that does not parse, a value the pause's model refuses, a task that
is not paused) is one line and exit 2; the task stays paused.  ``--no-resume`` records the
decision only.

``--address http://HEAD:8265`` decides on a run submitted to a cluster (``rayflow submit``: its
history is the head node's): the same command runs there as a short job (``--no-resume``), its
output printed here and its exit code ours, as ``rayflow show --address`` does (cli.submit).
When it says the run's driver is gone (its job ended, was stopped, or its driver died), the
run's job is submitted again as ``rayflow resume RUN_ID`` (cli.submit.resume_job: its first
job's working dir and runtime env, or ``--working-dir`` uploaded anew), unless ``--no-resume``.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Optional

import typer

from rayflow.cli.common import checked_run_id

ItemOption = Annotated[
    Optional[int],  # noqa: UP007
    typer.Option("--item", help="The item of a mapped task whose pause this decides (its map index)."),
]
AddressOption = Annotated[
    Optional[str],  # noqa: UP007
    typer.Option("--address", help="A submitted run's job server, http://HEAD:8265: decide in the cluster's history."),
]
WorkingDirOption = Annotated[
    Optional[str],  # noqa: UP007
    typer.Option("--working-dir", help="With --address: the folder uploaded for the resumed run's job, instead of its first job's."),
]
DRIVER_GONE = "; its driver is gone: "
NoResumeOption = Annotated[
    bool, typer.Option("--no-resume", help="Only record the decision; a run whose driver is gone is not resumed here."),
]


def approve(
    run_id: Annotated[str, typer.Argument(help="The run whose task waits for approval.")],
    task: Annotated[str, typer.Argument(help="The paused task's key.")],
    input_json: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--input", help="The input the pause waits for, as a JSON object."),
    ] = None,
    param: Annotated[
        Optional[list[str]],  # noqa: UP007
        typer.Option("--param", "-p", help="One field of the input, name=value (repeatable)."),
    ] = None,
    item: ItemOption = None,
    address: AddressOption = None,
    no_resume: NoResumeOption = False,
    working_dir: WorkingDirOption = None,
) -> None:
    """Approve a paused task: it runs again (its run resumed if its driver is gone)."""
    from rayflow.runs.approval import approve as approve_task

    checked_run_id(run_id)
    if address is not None:
        pairs = [w for p in param or [] for w in ("-p", p)]
        argv = ["approve", run_id, task, *(["--input", input_json] if input_json is not None else []), *pairs]
        return _on_cluster(address, argv, item, not no_resume, working_dir)
    value = _input(input_json, param or [], run_id, task, item)
    approve_task(run_id, task, value, map_index=item, resume=False)
    _go_on(run_id, f"approved {_what(run_id, task, item)}", not no_resume)


def _on_cluster(address: str, argv: list[str], item: int | None, resume: bool, working_dir: str | None) -> None:
    """The decision made on the cluster whose job server is at ``address`` (its head's history);
    a run whose driver is gone there resumed as a job of the cluster's (unless not ``resume``)."""
    from rayflow.cli import submit
    from rayflow.cli.exits import EXIT_USAGE
    from rayflow.cli.usage import fail

    if not submit.is_job_address(address):
        raise fail(f"--address must be a submitted run's job server, http://HEAD:8265, not {address!r}", EXIT_USAGE)
    if working_dir is not None and not os.path.isdir(working_dir):
        raise fail(f"--working-dir {working_dir} is not a folder", EXIT_USAGE)
    said = submit.query_history(address, [*argv, *(["--item", str(item)] if item is not None else []), "--no-resume"])
    if resume and DRIVER_GONE in said:
        submit.resume_job(address, argv[1], working_dir)


def _what(run_id: str, task: str, item: int | None) -> str:
    return f"task {task}" + (f" item {item}" if item is not None else "") + f" of run {run_id}"


def _go_on(run_id: str, said: str, resume_here: bool = True) -> None:
    """After a decision: a live run takes it; a run whose driver is gone is resumed here."""
    from rayflow.runs.approval import run_is_live

    if run_is_live(run_id):
        typer.echo(f"{said}; its run goes on")
        return
    if not resume_here:
        typer.echo(f"{said}{DRIVER_GONE}`rayflow resume {run_id}` runs the rest")
        return
    typer.echo(f"{said}{DRIVER_GONE}resuming the run here")
    from rayflow.cli.run_cmd import resume
    from rayflow.store import RunStore

    graph = (RunStore().run(run_id) or {}).get("graph") or {}
    resume(run_id, None, (graph.get("driver") or {}).get("runner") == "local")  # on the runner it ran on


def reject(
    run_id: Annotated[str, typer.Argument(help="The run whose task waits for approval.")],
    task: Annotated[str, typer.Argument(help="The paused task's key.")],
    reason: Annotated[str, typer.Option("--reason", help="Why: the task ends FAILED with it.")],
    item: ItemOption = None,
    address: AddressOption = None,
    no_resume: NoResumeOption = False,
    working_dir: WorkingDirOption = None,
) -> None:
    """Reject a paused task: it ends FAILED with the reason (its run resumed if its driver is gone)."""
    from rayflow.runs.approval import reject as reject_task

    checked_run_id(run_id)
    if address is not None:
        return _on_cluster(address, ["reject", run_id, task, "--reason", reason], item, not no_resume, working_dir)
    reject_task(run_id, task, reason, map_index=item, resume=False)
    _go_on(run_id, f"rejected {_what(run_id, task, item)}", not no_resume)


def _input(input_json: str | None, pairs: list[str], run_id: str, task: str, item: int | None) -> Any:
    """--input's object with -p's fields over it (each read as the pause's model types it), or None."""
    from rayflow.core.parameters import value_from_text
    from rayflow.exceptions import ApprovalError
    from rayflow.runs.approval import pause_schema

    if input_json is None and not pairs:
        return None
    value: dict[str, Any] = {}
    if input_json is not None:
        try:
            loaded = json.loads(input_json)
        except json.JSONDecodeError as exc:
            raise ApprovalError(f"--input is not valid JSON: {exc}", run_id=run_id, task_key=task) from None
        if not isinstance(loaded, dict):
            raise ApprovalError("--input must be a JSON object", run_id=run_id, task_key=task)
        value.update(loaded)
    fields = ((pause_schema(run_id, task, item) or {}).get("properties") or {}) if pairs else {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ApprovalError(f"--param {pair!r} must look like name=value", run_id=run_id, task_key=task)
        text_field = (fields.get(key) or {}).get("type") == "string"  # a str field keeps "2024" as text
        value[key] = value_from_text(str if text_field else Any, raw)  # the parameters' one text rule
    return value
