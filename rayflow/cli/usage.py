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
