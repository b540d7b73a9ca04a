"""``rayflow serve``, ``ui`` and ``schedule preview``: the long-running server (its schedules,
its UI with actions) and the read-only UI.  Each is registered through ``exits.handled``;
what they import beyond typer, they import when run."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Annotated, Any, Optional

import typer

from rayflow.cli.common import CronOption, IntervalOption, TimezoneOption, parse_params
from rayflow.cli.exits import EXIT_USAGE
from rayflow.cli.usage import fail as _fail

_ui_token_from_env: str | None = None  # RAYFLOW_UI_TOKEN, taken out of the environment by ``rayflow.cli.main``

UITokenFileOption = Annotated[
    Optional[str],  # noqa: UP007
    typer.Option(
        "--ui-token-file", "--token-file",
        help="A file holding the UI's token (one line); else RAYFLOW_UI_TOKEN. Required with a --ui-host beyond loopback.",
    ),
]
UIAllowedHostOption = Annotated[
    Optional[list[str]],  # noqa: UP007
    typer.Option(
        "--ui-allowed-host", "--allowed-host",
        help="A Host name the UI answers besides loopback and --ui-host (repeatable; *.example.com).",
    ),
]


def serve(
    target: Annotated[Optional[str], typer.Argument(help="path/to/file.py:flow_name or package.module:flow_name")] = None,  # noqa: UP007
    cron: CronOption = None,
    interval: IntervalOption = None,
    timezone: TimezoneOption = None,
    param: Annotated[
        Optional[list[str]],  # noqa: UP007
        typer.Option("--param", "-p", help="A flow parameter, name=value (repeatable)."),
    ] = None,
    overlap: Annotated[Optional[str], typer.Option("--overlap", help="skip (default), queue, allow or cancel_running.")] = None,  # noqa: UP007
    catchup: Annotated[Optional[str], typer.Option("--catchup", help="skip (default), latest or all: fires missed while no server ran, or held by one that died.")] = None,  # noqa: UP007
    max_catchup: Annotated[Optional[int], typer.Option("--max-catchup", help="With --catchup all: at most this many.")] = None,  # noqa: UP007
    config: Annotated[Optional[str], typer.Option("--config", help="Serve the [[flow]] entries of this TOML file.")] = None,  # noqa: UP007
    max_concurrent: Annotated[Optional[int], typer.Option("--max-concurrent", help="Runs at once in this server (default 4).")] = None,  # noqa: UP007
    grace: Annotated[Optional[float], typer.Option("--grace", help="Seconds runs may finish in after SIGTERM (default 30).")] = None,  # noqa: UP007
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join. Default: RAY_ADDRESS or a local Ray.")] = None,  # noqa: UP007
    once: Annotated[bool, typer.Option("--once", help="Fire what is due now, wait for those runs, exit (fires since the last server are missed: see --catchup).")] = False,
    with_ui: Annotated[bool, typer.Option("--ui", help="Serve the web UI too, with actions: run now, cancel, resume.")] = False,
    ui_host: Annotated[str, typer.Option("--ui-host", help="Address of the UI.")] = "127.0.0.1",
    ui_port: Annotated[int, typer.Option("--ui-port", help="Port of the UI.", min=1, max=65535)] = 4200,
    ui_token_file: UITokenFileOption = None,
    ui_allowed_host: UIAllowedHostOption = None,
) -> None:
    """Fire flows on their schedules as runs on Ray, until SIGTERM/SIGINT (exit 0)."""
    import importlib

    from rayflow.cli.loader import load_flow
    from rayflow.cli.serve import check_server_options, config_entries, schedule_from
    from rayflow.exceptions import ScheduleError

    ui_token = _ui_settings(ui_host, "--ui-host", ui_token_file, ui_allowed_host or []) if with_ui else None
    if config is not None:
        given = {
            "TARGET": target, "--cron": cron, "--interval": interval, "--timezone": timezone, "--param": param,
            "--overlap": overlap, "--catchup": catchup, "--max-catchup": max_catchup,
        }
        clash = [name for name, value in given.items() if value]
        if clash:
            raise ScheduleError(f"with --config FILE the schedules are the file's: {', '.join(clash)} cannot be given too")
        found, server = config_entries(config)
    else:
        if target is None:
            raise ScheduleError("give TARGET with --cron or --interval, or --config FILE")
        flow = load_flow(target)
        values = parse_params(param or [], None, flow.parameters_model)
        schedule = schedule_from(cron, interval, timezone, overlap=overlap, catchup=catchup, max_catchup=max_catchup)
        found, server = [(flow, schedule, values, target)], {}
    serving = importlib.import_module("rayflow.serving")
    entries = [e for flow, schedule, values, where in found for e in serving.served(flow, schedule, values, target=where)]
    options = {
        "max_concurrent": max_concurrent if max_concurrent is not None else server.get("max_concurrent", 4),
        "grace": grace if grace is not None else server.get("grace", 30.0),
        "address": address or server.get("address"),
    }
    check_server_options(options, "")
    actions = _start_ui(ui_host, ui_port, [e.flow for e in entries], ui_token, ui_allowed_host or []) if with_ui else None
    code = serving.serve(entries, once=once, on_ready=actions.mark_ready if actions else None, **options)
    _exit_past_abandoned_threads(code)
    raise typer.Exit(code)


def _listen_check(host: str, port: int) -> None:
    """A port in use, or an address that cannot be bound: one line, before anything starts."""
    from rayflow.ui.server import check_port

    try:
        check_port(host, port)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_USAGE) from None


def _ui_settings(host: str, option: str, token_file: str | None, allowed: list[str]) -> str | None:
    """The UI's token, checked with its address before anything starts: a bad token file, or a
    UI beyond loopback without a token, is one line, exit 2.  The token leaves the environment
    here, so nothing this process starts (Ray, its workers) inherits it."""
    from rayflow.ui.security import TOKEN_ENV, SetupError, check_allowed_host, check_exposure, read_token

    environ = {TOKEN_ENV: _ui_token_from_env} if _ui_token_from_env is not None else {}
    try:
        token = read_token(token_file, {**environ, **os.environ})
        check_exposure(host, token, option, "--ui-token-file" if option == "--ui-host" else "--token-file")
        for pattern in allowed:
            check_allowed_host(pattern)
    except SetupError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    os.environ.pop(TOKEN_ENV, None)
    return token


def _start_ui(host: str, port: int, flows: list[Any], token: str | None, allowed: list[str]) -> Any:
    """The UI of ``rayflow serve --ui``, in a thread of the server: with actions on its flows,
    which answer "starting" until the server has joined Ray (its ``mark_ready``)."""
    from rayflow.store import rayflow_home
    from rayflow.ui.actions import ServeActions
    from rayflow.ui.server import serve_in_background

    _listen_check(host, port)
    unique = list({f.name: f for f in flows}.values())
    actions = ServeActions(unique, ready=False)
    serve_in_background(rayflow_home(), host, port, actions, token=token, allowed_hosts=allowed)
    typer.echo(f"rayflow serve: UI at http://{host}:{port}/{' (with a token)' if token else ''}", err=True)
    return actions


def _exit_past_abandoned_threads(code: int) -> None:
    """A cancelled in-process run leaves its tasks' threads running until their functions return
    (threads cannot be killed), and Python would wait for them at exit: the server exits now."""
    from rayflow.engine.driver.local_executor import THREAD_PREFIX

    lingering = [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.is_alive()]
    if not lingering:
        return
    typer.echo(f"rayflow serve: exiting past {len(lingering)} task thread(s) of cancelled in-process runs", err=True)
    atexit._run_exitfuncs()  # what a normal exit runs (trace flushes, ray.shutdown), then no thread joins
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)



def preview(
    target: Annotated[str, typer.Argument(help="path/to/file.py:flow_name or package.module:flow_name")],
    cron: CronOption = None,
    interval: IntervalOption = None,
    timezone: TimezoneOption = None,
    n: Annotated[int, typer.Option("-n", help="How many fire times (at most 10000).", min=1)] = 10,
) -> None:
    """Print the next fire times, in the schedule's timezone and in UTC (tab-separated), each as it is computed."""
    from rayflow.cli.loader import load_flow
    from rayflow.cli.serve import check_preview_count, preview_lines, schedule_from

    check_preview_count(n)
    load_flow(target)
    schedule = schedule_from(cron, interval, timezone)
    for line in preview_lines(schedule, n):
        print(line, flush=True)


def ui(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=1, max=65535)] = 4200,
    token_file: Annotated[
        Optional[str],  # noqa: UP007
        typer.Option("--token-file", help="A file holding the UI's token (one line); else RAYFLOW_UI_TOKEN. Required with a --host beyond loopback."),
    ] = None,
    allowed_host: Annotated[
        Optional[list[str]],  # noqa: UP007
        typer.Option("--allowed-host", help="A Host name the UI answers besides loopback and --host (repeatable; *.example.com)."),
    ] = None,
) -> None:
    """Serve the web UI (read-only) over RAYFLOW_HOME's run history."""
    from rayflow.store import rayflow_home
    from rayflow.ui.server import serve as serve_ui

    token = _ui_settings(host, "--host", token_file, allowed_host or [])
    _listen_check(host, port)
    typer.echo(f"rayflow ui: http://{host}:{port}/ over {rayflow_home() / 'history.db'}{' (with a token)' if token else ''}", err=True)
    serve_ui(rayflow_home(), host, port, token=token, allowed_hosts=allowed_host or [])

