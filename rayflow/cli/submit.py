"""``rayflow submit``: a run as a Ray Job whose driver (``rayflow run``) runs on the cluster.

And the job side of ``rayflow cancel`` and ``rayflow logs`` when ``--address`` is a job
server (``http(s)://HEAD:8265``).  Exit codes as the rest of the command line: 0 submitted
(or, with ``--follow``, succeeded), 1 the run failed or was stopped, 2 bad usage or a flow
that failed to load on the cluster (``rayflow run``'s own code), 3 no job server at the
address or a token it wants and did not get, 130 interrupted (``--follow`` only: the run
goes on on the cluster).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from typing import Annotated, Any, Optional

import typer

from rayflow.cli.exits import EXIT_CLUSTER, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from rayflow.cli.usage import fail as _fail
from rayflow.exceptions import ClusterConnectionError
from rayflow.paths import RUN_ID_MAX, check_run_id, new_run_id

FOLLOW_INTERVAL = 0.5
RUN_STOP_WAIT = 20  # seconds a stopped run's driver has to cancel it (its own grace is 2 s, its watchdog 10 s)
SERVE_STOP_WAIT = 60  # seconds a stopped server has to let its runs finish (serve's grace: 30 s by default)


def is_job_address(address: str | None) -> bool:
    """An address of a Ray job server (http:// or https://), not of a GCS or a Ray client server."""
    return bool(address) and address.lower().startswith(("http://", "https://"))


def entrypoint(target: str, run_id: str, params: list[str], params_json: str | None) -> str:
    """The job's shell command: ``rayflow run`` of the target, on the cluster's Python, printing
    each task's state change (what ``--follow`` shows)."""
    words = ["python", "-m", "rayflow", "run", target, "--run-id", run_id, "--log-states"]
    for pair in params:
        words += ["--param", pair]
    if params_json is not None:
        words += ["--params-json", params_json]
    return _command(words)


def serve_entrypoint(config: str, ui: bool, ui_host: str, ui_port: int, ui_token_file: str | None = None) -> str:
    """The job's shell command for ``--serve``: ``rayflow serve --config`` on the cluster."""
    words = ["python", "-m", "rayflow", "serve", "--config", config]
    if ui:
        words += ["--ui", "--ui-host", ui_host, "--ui-port", str(ui_port)]
        words += ["--ui-token-file", ui_token_file] if ui_token_file else []
    return _command(words)


def _check_ui_exposure(ui: bool, ui_host: str, ui_token_file: str | None) -> None:
    """The server's UI beyond the head's loopback needs a token (its file is on the head): said
    here, before submitting, rather than in the job's log."""
    from rayflow.ui.security import on_loopback

    if ui and ui_token_file is None and not on_loopback(ui_host):
        raise _fail(
            f"--ui-host {ui_host} makes the UI reachable from other machines: give it a token "
            "(--ui-token-file FILE, a file on the head node), or listen on 127.0.0.1", EXIT_USAGE,
        )


def _command(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def serve_id(config: str) -> str:
    """The id of a server submitted with ``--serve``: ``serve-<the config's path, without .toml>``
    (``flows.toml``: serve-flows; ``conf/flows.toml``: serve-conf-flows), within the run id rule
    of rayflow.paths, as it names a Ray job (ASCII letters and digits, at most RUN_ID_MAX)."""
    path = os.path.splitext(os.path.normpath(config))[0].lstrip("./")
    return ("serve-" + "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in path))[:RUN_ID_MAX]


def check_locally(target: str, working_dir: str | None, params: list[str], params_json: str | None) -> None:
    """Refuse, before anything is submitted, a target missing from the working dir and
    parameters the flow rejects, where the flow loads here.  A flow that needs what only the
    cluster has (its --pip packages, say) is checked there: ``--follow`` shows its error."""
    from rayflow.cli.common import parse_params
    from rayflow.cli.loader import TargetError, load_flow

    location, sep, name = target.rpartition(":")
    if not sep or not location or not name:
        raise TargetError(f"target {target!r} must look like path/to/file.py:flow_name or package.module:flow_name")
    is_file = location.endswith(".py") or "/" in location
    if working_dir is not None:
        if not os.path.isdir(working_dir):
            raise TargetError(f"--working-dir {working_dir} is not a folder")
        if is_file:
            location = os.path.join(working_dir, location)
            if not os.path.isfile(location):
                raise TargetError(f"no such file in the working dir {working_dir}: {target.rpartition(':')[0]}")
    path = list(sys.path)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the module's own prints: not where the run id goes
            flow = load_flow(f"{location}:{name}", working_dir)  # a module: from the working dir first
    except TargetError:
        flow = None  # it may load only on the cluster: checked there
    finally:
        sys.path[:] = path
    values = parse_params(params, params_json, flow.parameters_model if flow is not None else None)  # bad JSON: refused either way
    if flow is not None:
        flow.validate(values)


def _client(address: str) -> Any:
    from rayflow.runtime.driver import jobs

    return jobs.connect(address)  # ClusterConnectionError: exit 3 by the table (every command is handled)


def submit(
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
    target: Annotated[
        Optional[str],  # noqa: UP007
        typer.Argument(help="path/to/file.py:flow_name (relative to --working-dir) or package.module:flow_name"),
    ] = None,
    serve: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--serve", help="Instead of one run: `rayflow serve --config FILE` on the cluster (FILE relative to --working-dir)."),
    ] = None,
    ui: Annotated[bool, typer.Option("--ui", help="With --serve: the web UI too, served from the head node.")] = False,
    ui_host: Annotated[str, typer.Option("--ui-host", help="With --serve --ui: the address the UI listens on, on the head.")] = "127.0.0.1",
    ui_port: Annotated[int, typer.Option("--ui-port", help="With --serve --ui: the UI's port.", min=1, max=65535)] = 4200,
    ui_token_file: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--ui-token-file", help="With --serve --ui: a file on the head node holding the UI's token (required beyond loopback)."),
    ] = None,
) -> None:
    """Run a flow on a Ray cluster as a Ray Job: it goes on when this machine goes away.

    Prints the run id.  A run id submitted before is not submitted again: the command says
    so and exits 0 (with --follow it follows the run submitted first).  With --serve FILE,
    the schedules of FILE fire on the cluster (`rayflow serve --config FILE` as a job, id
    serve-FILENAME) until `rayflow cancel serve-FILENAME --address ...` stops it.
    """
    from rayflow.runtime.driver import jobs

    if not is_job_address(address):
        raise _fail(f"--address must be a Ray job server, http://HEAD:8265, not {address!r}", EXIT_USAGE)
    if (target is None) == (serve is None):
        raise _fail("give TARGET (one run) or --serve FILE (a server of schedules), not both or neither", EXIT_USAGE)
    if serve is not None:
        if param or params_json or run_id:
            raise _fail("with --serve FILE the flows and parameters are the file's: --param, --params-json and --run-id cannot be given", EXIT_USAGE)
        config = os.path.join(working_dir, serve) if working_dir is not None else serve
        if working_dir is not None and not os.path.isfile(config):
            raise _fail(f"no such file in the working dir {working_dir}: {serve}", EXIT_USAGE)
        run_id = serve_id(serve)
        _check_ui_exposure(ui, ui_host, ui_token_file)
        command = serve_entrypoint(serve, ui, ui_host, ui_port, ui_token_file)
    else:
        if run_id is not None:
            check_run_id(run_id)  # it names the run's Ray job too (RunIdError: exit 2 by the table)
        check_locally(target, working_dir, param or [], params_json)
        run_id = run_id or new_run_id()
        command = entrypoint(target, run_id, param or [], params_json)
    client = _client(address)
    # `rayflow cancel` stops the job with SIGTERM, then Ray kills it after RAY_JOB_STOP_WAIT_TIME_S
    # (3 s by default): room for the run's cancellation, or for a server's grace.
    env_vars = {**jobs.forwarded_env(), "RAY_JOB_STOP_WAIT_TIME_S": str(SERVE_STOP_WAIT if serve else RUN_STOP_WAIT)}
    try:
        done = jobs.submit(client, run_id, command, working_dir=working_dir, pip=pip, env_vars=env_vars,
                           again_once_ended=serve is not None)
    except ClusterConnectionError:
        raise  # no job agent up in time: exit 3 by the table, not the user's bad input
    except (RuntimeError, ValueError, OSError) as exc:  # Ray's refusal: a working dir too large, a bad runtime_env
        raise _fail(f"the job server at {address} refused run {run_id}: {_one_line(exc)}", EXIT_USAGE) from None
    what = "server" if serve is not None else "run"
    if done.already:
        typer.echo(f"{what} {run_id} was submitted before (job {done.submission_id}, {done.status}): not submitted again", err=True)
    else:
        typer.echo(f"submitted {what} {run_id} as job {done.submission_id} to {address}", err=True)
    typer.echo(run_id)
    if follow:
        raise typer.Exit(_follow(client, done.submission_id, run_id))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


def _follow(client: Any, sid: str, run_id: str) -> int:
    """Print the job's logs as they grow until it ends; the run's exit code."""
    from rayflow.runtime.driver import jobs

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
    from rayflow.runtime.driver import jobs

    client = _client(address)
    sid = jobs.submission_id(run_id)
    if jobs.job_status(client, sid) is None:
        raise _fail(f"no submitted run {run_id!r} at {address} (no job {sid})", EXIT_FAILED)
    status = jobs.stop(client, sid, wait)
    typer.echo(f"run {run_id}: job {status}")
    if status not in jobs.TERMINAL:
        raise _fail(f"run {run_id} had not ended after {wait:g}s", EXIT_FAILED)


def print_job_logs(run_id: str, address: str, follow: bool = False) -> None:
    """The job's output (``rayflow run``'s on the cluster: task states, prints, log records);
    with ``follow``, until the run ends, exiting with its code."""
    from rayflow.runtime.driver import jobs

    client = _client(address)
    sid = jobs.submission_id(run_id)
    if jobs.job_status(client, sid) is None:
        raise _fail(f"no submitted run {run_id!r} at {address} (no job {sid})", EXIT_FAILED)
    if follow:
        raise typer.Exit(_follow(client, sid, run_id))
    sys.stdout.write(jobs.logs(client, sid))


def query_history(address: str, argv: list[str]) -> str:
    """``rayflow ARGV`` (``runs``, ``show``) over the cluster's own run history: run on the
    head node as a short job, its output printed here and its exit code ours; its stdout."""
    from rayflow.runtime.driver import jobs

    client = _client(address)
    try:
        code, out, err = jobs.query(client, _command(["python", "-m", "rayflow", *argv]))
    except ClusterConnectionError:
        raise  # no job agent up in time: exit 3 by the table, its own line
    except (RuntimeError, TimeoutError, OSError) as exc:  # OSError: requests' connection errors
        raise _fail(f"the job server at {address} could not run `rayflow {argv[0]}`: {_one_line(exc)}", EXIT_CLUSTER) from None
    sys.stdout.write(out)
    sys.stderr.write(err)
    if code:
        raise typer.Exit(code)
    return out


def resume_job(address: str, run_id: str, working_dir: str | None = None) -> None:
    """A submitted run whose driver is gone (its job ended) resumed on the cluster: its job
    submitted again as ``rayflow resume RUN_ID`` (jobs.resubmit: its first job's working dir
    and runtime env, or ``working_dir`` uploaded anew), the job's id printed."""
    from rayflow.runtime.driver import jobs

    client = _client(address)
    command = _command(["python", "-m", "rayflow", "resume", run_id])
    try:
        done = jobs.resubmit(client, run_id, command, working_dir)
    except LookupError:
        raise _fail(f"run {run_id} was not submitted as a job to {address}: run `rayflow resume {run_id}` "
                    "on the cluster, where its flow's code is", EXIT_FAILED) from None
    except ClusterConnectionError:
        raise
    except (RuntimeError, ValueError, OSError) as exc:
        raise _fail(f"the job server at {address} refused to resume run {run_id}: {_one_line(exc)}", EXIT_CLUSTER) from None
    if done.already:
        typer.echo(f"run {run_id}'s job {done.submission_id} is {done.status}: it goes on there")
        return
    typer.echo(f"resuming run {run_id} on the cluster as job {done.submission_id}: follow it with "
               f"`rayflow show {run_id} --address {address}` or `rayflow logs {run_id} --address {address} --follow`")
