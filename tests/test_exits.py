"""Exit codes (issue 23, "rules that drifted"): one table, ``rayflow.cli.exits``, and one mapping
of exception to code used by every command.  Before, the codes were defined twice
(cli/__init__.py and cli/submit.py, plus signals.py's 143), written as literals (submit's
2s, limits' 1, 2 and 3), and each command caught its own tuple of exceptions."""

from __future__ import annotations

import pathlib
import re

import pytest

CLI = pathlib.Path(__file__).resolve().parent.parent / "rayflow" / "cli"


def test_the_table():
    from rayflow.cli import exits

    assert (exits.EXIT_OK, exits.EXIT_FAILED, exits.EXIT_USAGE, exits.EXIT_CLUSTER) == (0, 1, 2, 3)
    assert (exits.EXIT_INTERRUPTED, exits.EXIT_TERMINATED) == (130, 143)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("UnknownRunError", 1), ("RunCrashedError", 1), ("ClusterConnectionError", 3), ("ClusterAuthenticationError", 3),
        ("ParameterError", 2), ("DefinitionError", 2), ("TaskOptionError", 2), ("GraphError", 2), ("MappingError", 2),
        ("SerializationError", 2), ("ResultStoreError", 2), ("DuplicateRunError", 2), ("RunIdError", 2),
        ("UnsatisfiableResourcesError", 2), ("ResumeError", 2), ("ScheduleError", 2), ("LimitError", 2),
    ],
)
def test_each_exception_ends_every_command_with_one_code(name, code):
    import rayflow.exceptions as errors
    from rayflow.cli.exits import EXPECTED, exit_code

    cls = getattr(errors, name)
    exc = cls.__new__(cls)
    assert isinstance(exc, EXPECTED) and exit_code(exc) == code


def test_a_target_error_is_bad_usage():
    from rayflow.cli.exits import EXPECTED, exit_code
    from rayflow.core.loader import TargetError

    assert isinstance(TargetError("x"), EXPECTED) and exit_code(TargetError("x")) == 2


def test_no_command_writes_an_exit_code_of_its_own():
    """Failed before: cli/__init__.py and cli/submit.py each defined EXIT_FAILED ...; signals.py
    EXIT_TERMINATED = 143; submit.py and limits.py failed with literal 1, 2 and 3."""
    found = []
    for path in sorted(CLI.glob("*.py")):
        if path.name == "exits.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bEXIT_\w+\s*(,\s*EXIT_\w+\s*)*=", line) or re.search(r"_fail\(.*,\s*\d+\s*,?\)", line) or re.search(
                r"typer\.Exit\(\d+\)|,\s*\d+,\s*$", line
            ) and "_fail" in line:
                found.append(f"{path.name}:{n}: {line.strip()}")
            if re.search(r"^\s*\"?.*\",\s*[123],\s*$", line):  # a _fail( ... , 2, ) split over lines
                found.append(f"{path.name}:{n}: {line.strip()}")
    assert found == []


def test_every_command_ends_by_the_table_and_none_catches_it_itself():
    """Every command, sub-commands too, is registered through ``exits.handled``; no command module
    catches ``EXPECTED`` (or the table's own classes) with a try of its own.  Before, run,
    cancel, graph, resume, serve, schedule preview, submit and limit each had their try."""
    import typer

    from rayflow.cli import app

    def commands(command, path=()):
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if getattr(sub, "commands", None) is not None:
                yield from commands(sub, (*path, name))
            else:
                yield " ".join((*path, name)), sub

    found = dict(commands(typer.main.get_command(app)))
    assert {"run", "show", "limit set", "cache ls", "schedule preview", "submit"} <= set(found)
    assert [name for name, command in found.items() if not getattr(command.callback, "by_the_table", False)] == []
    own = []  # an except naming the table's classes whose next line ends the command with a code
    for path in sorted(CLI.glob("*.py")):
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines[:-1], 1):
            if path.name != "exits.py" and re.search(
                r"except .*\b(EXPECTED|LimitError|ClusterConnectionError|RunIdError|ScheduleError)\b", line
            ) and "fail(" in lines[n]:
                own.append(f"{path.name}:{n}")
    assert own == []


# == "Type: message": one helper (rayflow.states.error_text) =====================================


def test_error_text_is_type_colon_message_or_the_type_alone():
    from rayflow.states import ErrorInfo, error_text

    assert error_text("builtins.ValueError", "bad n") == "ValueError: bad n"
    assert error_text("mymod.sub.Oops", "") == "Oops"  # the map's copies wrote "Oops: "
    assert str(ErrorInfo(type="builtins.KeyError", message="'k'")) == error_text("builtins.KeyError", "'k'")


def test_no_module_writes_type_colon_message_by_hand():
    """Failed before: worker/chunk.py, worker/execute.py and maps/coordinator.py each built
    "Type: message" from a qualified type name themselves (states.py a fourth time)."""
    root = CLI.parent
    copies = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted(root.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""rsplit\(['"]\.['"], 1\)\[-1\]\}: \{""", line)
    ]
    assert copies == []
