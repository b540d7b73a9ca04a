"""The ``rayflow`` command line (typer): every command, registered here in the order ``--help``
lists them, each through the exception table of ``rayflow.cli.exits``.

The commands live in their groups: ``run_cmd`` (run, cancel, graph, resume), ``approve_cmd``
(approve, reject), ``show_cmd`` (runs,
show, logs, schedules), ``serve_cmd`` (serve, schedule preview, ui), ``cache_cmd``, ``limits``,
``artifacts_cmd`` (artifacts ls, artifacts show) and ``submit``.  Each module imports typer and the CLI's own light modules at the top and
anything heavy (Ray, pyarrow, pydantic models, rich, the store) inside its commands, so
``rayflow --help`` starts fast (``benchmarks/cli_startup.py``).

Exit codes (``rayflow.cli.exits``): 0 the run succeeded; 1 the run failed or was cancelled,
or the run asked for is not known (``show``, ``logs``, ``cancel``: in neither the run
history nor a live driver; ``show``: ended in its driver but missing from this
RAYFLOW_HOME's run history, after printing what its driver knows); 2 bad usage (target,
parameters, flow definition, result storage; ``resume``: a run that cannot be resumed); 3
the Ray cluster could not be reached; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
Either signal cancels the run first.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from rayflow.cli import approve_cmd, artifacts_cmd, cache_cmd, coercion, limits, run_cmd, serve_cmd, show_cmd, submit
from rayflow.cli.cache_cmd import _cache_entries  # noqa: F401 - read by tests of the cache layout
from rayflow.cli.common import app, parse_params
from rayflow.cli.exits import handled, history_errors
from rayflow.cli.limits import limit_app
from rayflow.cli.serve_cmd import _ui_settings  # noqa: F401 - read by tests of the UI's settings

__all__ = ["app", "main", "parse_params"]

coercion.install()  # plain option values without pydantic: no command pays for it to read `--limit 20`

app.command()(handled(run_cmd.run))
app.command()(handled(run_cmd.cancel))
app.command()(handled(history_errors(show_cmd.runs)))
app.command()(handled(history_errors(show_cmd.show)))
app.command()(handled(history_errors(show_cmd.logs)))
app.command()(handled(run_cmd.graph))
app.command()(handled(run_cmd.resume))
app.command()(handled(history_errors(approve_cmd.approve)))
app.command()(handled(history_errors(approve_cmd.reject)))

cache_app = typer.Typer(help="The result cache: list or clear cached task results.", no_args_is_help=True)
cache_app.command("ls")(handled(cache_cmd.cache_ls))
cache_app.command("clear")(handled(cache_cmd.cache_clear))
app.add_typer(cache_app, name="cache")
limit_app.command("set", context_settings={"ignore_unknown_options": True})(handled(limits.set_limit))  # `set db -1`: refused by it
limit_app.command("ls")(handled(limits.list_limits))
limit_app.command("rm")(handled(limits.remove_limit))
app.add_typer(limit_app, name="limit")

artifacts_app = typer.Typer(help="Artifacts tasks recorded (rf.artifacts): list them, show one.", no_args_is_help=True)
artifacts_app.command("ls")(handled(history_errors(artifacts_cmd.ls)))
artifacts_app.command("show")(handled(history_errors(artifacts_cmd.show)))
app.add_typer(artifacts_app, name="artifacts")

app.command()(handled(serve_cmd.serve))
schedule_app = typer.Typer(help="Schedules: preview the fire times of one.", no_args_is_help=True)
schedule_app.command("preview")(handled(serve_cmd.preview))
app.add_typer(schedule_app, name="schedule")
app.command("schedules")(handled(history_errors(show_cmd.schedules)))
app.command()(handled(serve_cmd.ui))
app.command()(handled(submit.submit))


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"rayflow {version('rayflow')}")
        except PackageNotFoundError:  # run from a source tree that is not installed
            typer.echo("rayflow (not installed)")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", help="Print rayflow's version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """rayflow: Prefect-style workflows compiled onto Ray."""


def main() -> None:
    from rayflow.cli.usage import only_command, run_app  # usage errors in one line too

    # The UI's token leaves the environment before any command runs: no Ray, worker, job
    # (``submit`` forwards RAYFLOW_* settings) or flow this process starts inherits it.
    serve_cmd._ui_token_from_env = os.environ.pop("RAYFLOW_UI_TOKEN", None)

    sys.exit(run_app(only_command(app, sys.argv[1:]), "rayflow"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
