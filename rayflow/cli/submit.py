"""``rayflow submit``: a run as a Ray Job whose driver (``rayflow run``) runs on the cluster.

And the job side of ``rayflow cancel`` and ``rayflow logs`` when ``--address`` is a job
server (``http(s)://HEAD:8265``).  Exit codes as the rest of the command line: 0 submitted
(or, with ``--follow``, succeeded), 1 the run failed or was stopped, 2 bad usage or a flow
that failed to load on the cluster (``rayflow run``'s own code), 3 no job server at the
address or a token it wants and did not get, 130 interrupted (``--follow`` only: the run
goes on on the cluster).
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import Annotated, Any, Optional

import typer

from rayflow.engine.driver.local import new_run_id
from rayflow.exceptions import ClusterConnectionError

EXIT_FAILED, EXIT_CLUSTER, EXIT_INTERRUPTED = 1, 3, 130
FOLLOW_INTERVAL = 0.5


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def is_job_address(address: str | None) -> bool:
    """An address of a Ray job server (http:// or https://), not of a GCS or a Ray client server."""
    return bool(address) and address.lower().startswith(("http://", "https://"))


def entrypoint(target: str, run_id: str, params: list[str], params_json: str | None) -> str:
    """The job's shell command: ``rayflow run`` of the target, on the cluster's Python."""
    words = ["python", "-m", "rayflow", "run", target, "--run-id", run_id]
    for pair in params:
        words += ["--param", pair]
    if params_json is not None:
        words += ["--params-json", params_json]
    return " ".join(shlex.quote(w) for w in words)


def _client(address: str) -> Any:
    from rayflow.runtime import jobs

    try:
        return jobs.connect(address)
    except ClusterConnectionError as exc:
        raise _fail(str(exc), EXIT_CLUSTER) from None


def submit(
    target: Annotated[str, typer.Argument(help="path/to/file.py:flow_name (relative to --working-dir) or package.module:flow_name")],
    address: Annotated[str, typer.Option("--address", help="The cluster's job server, http://HEAD:8265.")],
    param: Annotated[
        Optional[list[str]],  # noqa: UP007 - typer needs Optional here
        typer.Option("--param", "-p", help="A flow parameter, name=value (repeatable)."),
    ] = None,
    params_json: Annotated[Optional[str], typer.Option("--params-json", help="Flow parameters as a JSON object.")] = None,  # noqa: UP007
    working_dir: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--working-dir", help="Local folder uploaded to the cluster; the run starts in it."),
    ] = None,
    pip: Annotated[
        Optional[list[str]],  # noqa: UP007
        typer.Option("--pip", help="A pip requirement installed for the run on the cluster (repeatable)."),
    ] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Use this run id instead of a generated one.")] = None,  # noqa: UP007
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Print the run's output until it ends; exit with its code.")] = False,
) -> None:
    """Run a flow on a Ray cluster as a Ray Job: it goes on when this machine goes away.

    Prints the run id.  A run id submitted before is not submitted again: the command says
    so and exits 0 (with --follow it follows the run submitted first).
    """
    from rayflow.runtime import jobs

    if not is_job_address(address):
        raise _fail(f"--address must be a Ray job server, http://HEAD:8265, not {address!r}", 2)
    run_id = run_id or new_run_id()
    client = _client(address)
    try:
        done = jobs.submit(
            client, run_id, entrypoint(target, run_id, param or [], params_json),
            working_dir=working_dir, pip=pip, env_vars=jobs.forwarded_env(),
        )
    except (RuntimeError, ValueError, OSError) as exc:  # Ray's refusal: a working dir too large, a bad runtime_env
        raise _fail(f"the job server at {address} refused run {run_id}: {_one_line(exc)}", 2) from None
    if done.already:
        typer.echo(f"run {run_id} was submitted before (job {done.submission_id}, {done.status}): not submitted again", err=True)
    else:
        typer.echo(f"submitted run {run_id} as job {done.submission_id} to {address}", err=True)
    typer.echo(run_id)
    if follow:
        raise typer.Exit(_follow(client, done.submission_id, run_id))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


def _follow(client: Any, sid: str, run_id: str) -> int:
    """Print the job's logs as they grow until it ends; the run's exit code."""
    from rayflow.runtime import jobs

    printed = 0
    try:
        while True:
            status = jobs.job_status(client, sid)
            text = jobs.logs(client, sid)
            sys.stdout.write(text[printed:])
            sys.stdout.flush()
            printed = len(text)
            if status in jobs.TERMINAL:
                text = jobs.logs(client, sid)  # what landed with the end
                sys.stdout.write(text[printed:])
                code = jobs.exit_code(status, jobs.job_message(client, sid))
                if code:
                    typer.echo(f"error: run {run_id} ended {status} (job {sid}), exit code {code}", err=True)
                return code
            time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        typer.echo(f"error: stopped following; run {run_id} goes on on the cluster (rayflow cancel {run_id} --address ...)", err=True)
        return EXIT_INTERRUPTED


def cancel_job(run_id: str, address: str, wait: float) -> None:
    from rayflow.runtime import jobs

    client = _client(address)
    sid = jobs.submission_id(run_id)
    if jobs.job_status(client, sid) is None:
        raise _fail(f"no submitted run {run_id!r} at {address} (no job {sid})", EXIT_FAILED)
    status = jobs.stop(client, sid, wait)
    typer.echo(f"run {run_id}: job {status}")
    if status not in jobs.TERMINAL:
        raise _fail(f"run {run_id} had not ended after {wait:g}s", EXIT_FAILED)


def print_job_logs(run_id: str, address: str) -> None:
    from rayflow.runtime import jobs

    client = _client(address)
    sid = jobs.submission_id(run_id)
    if jobs.job_status(client, sid) is None:
        raise _fail(f"no submitted run {run_id!r} at {address} (no job {sid})", EXIT_FAILED)
    sys.stdout.write(jobs.logs(client, sid))
