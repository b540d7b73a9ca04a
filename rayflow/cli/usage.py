"""Running the typer app so that a usage error (an unknown option or command, a missing
argument, a bad option value) is one line, ``error: ...``, exit 2, like every other bad input;
a command group given no command still prints its help."""

from __future__ import annotations

import sys
from typing import Any

import typer

from rayflow.cli.exits import EXIT_FAILED

# Typer raises click's exceptions, from its own copy of click in newer versions: take them from
# where typer.BadParameter comes from.
_click = sys.modules[typer.BadParameter.__module__]


def fail(message: str, code: int) -> typer.Exit:
    """Print ``error: MESSAGE`` (one line, on stderr); the Exit to raise with ``code``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def only_command(app: typer.Typer, argv: list[str]) -> typer.Typer:
    """``app`` with only the command (or group) that ``argv`` names first, so typer builds the
    options of that one command (reading every command's signature cost each command about
    30 ms of start-up); ``app`` itself where argv names none (``--help``, ``--version``, a
    misspelt command: the full list and its suggestions)."""
    import copy

    name = argv[0] if argv else ""
    commands = [c for c in app.registered_commands if _command_name(c) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app
    lean = copy.copy(app)  # the same callback (--version) and settings; the lists are its own
    lean.registered_commands, lean.registered_groups = commands, groups
    return lean


def _command_name(info: Any) -> str | None:
    if info.name:
        return info.name
    callback = info.callback
    return callback.__name__.lower().replace("_", "-") if callback is not None else None  # typer's own rule


def run_app(app: typer.Typer, prog_name: str) -> int:
    """Run ``app`` on ``sys.argv``; its exit code."""
    try:
        code = app(prog_name=prog_name, standalone_mode=False)
    except _click.NoArgsIsHelpError as exc:  # `rayflow`, `rayflow cache`: the help
        text = exc.ctx.get_help() if exc.ctx is not None else ""  # rich prints it itself, returning ""
        if text:
            typer.echo(text)
        return exc.exit_code
    except _click.ClickException as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        return exc.exit_code
    except typer.Abort:  # EOF at a prompt
        typer.echo("Aborted!", err=True)
        return EXIT_FAILED
    return code if isinstance(code, int) else 0


def one_line(exc: Any) -> str:
    message = " ".join(exc.format_message().split())
    ctx: Any = getattr(exc, "ctx", None)
    if isinstance(exc, _click.UsageError) and ctx is not None:
        message += f" (see: {ctx.command_path} --help)"
    return message
