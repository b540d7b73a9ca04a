"""What the command groups share: the typer app, options that several commands take, and the
checks of option values.  It imports typer and nothing heavy: ``rayflow --help`` loads every
command module to read its options, so each imports what its command needs when it runs."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from rayflow.cli.exits import EXIT_USAGE
from rayflow.cli.usage import fail

app = typer.Typer(
    name="rayflow",
    help="Run and inspect rayflow flows: Prefect-style workflows compiled onto Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help is plain text: rich markup would read `[[flow]]` as a tag and drop it
)

AllOption = Annotated[
    bool, typer.Option("--all", help="Every task's row (past 50 tasks the table lists those that did not succeed).")
]
TaskStateOption = Annotated[
    Optional[str], typer.Option("--state", help="Only the tasks in this state (SUCCESS, FAILED, ...).")  # noqa: UP007
]
ParamOption = Annotated[
    Optional[list[str]],  # noqa: UP007 - typer needs Optional here
    typer.Option("--param", "-p", help="A flow parameter, name=value (repeatable). Values are JSON where possible."),
]
ParamsJsonOption = Annotated[Optional[str], typer.Option("--params-json", help="Flow parameters as a JSON object.")]  # noqa: UP007
CronOption = Annotated[Optional[str], typer.Option("--cron", help="A cron expression (or @hourly, @daily, ...).")]  # noqa: UP007
IntervalOption = Annotated[Optional[float], typer.Option("--interval", help="Fire every SECONDS (1 to 1e10).")]  # noqa: UP007
TimezoneOption = Annotated[Optional[str], typer.Option("--timezone", help="IANA timezone of the schedule (default UTC).")]  # noqa: UP007


def parse_params(pairs: list[str], params_json: str | None, model: Any = None) -> dict[str, Any]:
    """``k=v`` pairs on top of a JSON object, read by the one parser (``core.parameters.parameter_values``):
    the flow's ``model`` decides, per field, whether a value's text is JSON (a str or a secret stays text)."""
    from rayflow.core.parameters import parameter_values
    from rayflow.exceptions import TargetError

    typed: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise TargetError(f"--params-json is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise TargetError("--params-json must be a JSON object")
        typed.update(loaded)
    text: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise TargetError(f"--param {pair!r} must look like name=value")
        text[key] = raw
    return parameter_values(model, typed=typed, text=text)


def state_option(state: str | None, option: str = "--state") -> str | None:
    """A state given as ``option``: one a run or task can read (CRASHED too), else one line, exit 2."""
    from rayflow.store.views import state_filter

    try:
        return state_filter(state, option)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def checked_run_id(run_id: str) -> str:
    """A run id given on the command line follows the rule of rayflow.paths: else RunIdError
    (one line, exit 2 by the table), before the flow's file is even loaded."""
    from rayflow.paths import check_run_id

    return check_run_id(run_id)
