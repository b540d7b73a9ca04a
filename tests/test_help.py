"""Every command's ``--help`` shows its text as written.

Typer renders help through rich, whose markup reads ``[word]`` as a style tag and drops it:
``--config`` once said "Serve the [] entries" for "Serve the [[flow]] entries".  This renders
the help of every command and sub-command and looks for each bracketed piece of its source
text (the command's docstring and each option's help).
"""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from rayflow.cli import app

BRACKETED = re.compile(r"\[+[^\[\]\s]*\]+")


def _commands(command, path=()):
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


def test_every_commands_help_keeps_its_bracketed_text():
    root = typer.main.get_command(app)
    runner = CliRunner()
    checked, swallowed = 0, []
    for path, command in _commands(root):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        wanted = [token for text in texts for token in BRACKETED.findall(text)]
        if not wanted:
            continue
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
        assert out.exit_code == 0, (path, out.output)
        shown = " ".join(out.output.split())
        checked += len(wanted)
        swallowed += [(" ".join(path), token) for token in wanted if token not in shown]
    assert checked, "no help text with brackets found: the walk over the commands is broken"
    assert swallowed == []
