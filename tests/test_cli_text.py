"""Text a run recorded (error messages, log records) as the CLI prints it: piped tables keep one
line per row and one cell per column; a terminal gets no control sequences from a record."""

from __future__ import annotations

import contextlib
import io

import pytest
from cli_runner import run_cli_in_process

import rayflow as rf


@rf.task
def awkward() -> None:
    rf.get_run_logger().info("title\x1b]0;pwned\x07 clear\x1b[2J bell\x07 end")
    raise ValueError("cell\twith a tab\nand a second line \\ backslash")


@rf.flow(runner="local")
def recorded_text():
    return awkward()


@pytest.fixture(scope="module")
def run_id(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYFLOW_HOME", str(home))
        run = recorded_text.run()
    assert run.state.is_failed()
    return home, run.run_id


def test_a_piped_table_keeps_a_tab_inside_its_cell(run_id):
    home, rid = run_id
    done = run_cli_in_process("show", rid, home=home)
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task\t"))
    rows = [line.split("\t") for line in lines[header:header + 2]]
    assert rows[1][0] == "awkward" and len(rows[1]) == len(rows[0]), lines
    assert rows[1][-1] == "ValueError: cell\\twith a tab"  # the error's first line, its tab written \t


def test_a_piped_cell_writes_its_backslash_tab_newline_and_return_escaped():
    from rayflow.cli.output import tsv_cell

    assert tsv_cell("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    assert tsv_cell("plain text") == "plain text"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_logs_on_a_terminal_print_no_control_sequences_of_a_record(run_id, monkeypatch):
    home, rid = run_id
    monkeypatch.setenv("RAYFLOW_HOME", str(home))
    monkeypatch.setattr("sys.argv", ["rayflow", "logs", rid])
    terminal = _Terminal()
    from rayflow.cli import main

    with contextlib.redirect_stdout(terminal), pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code in (0, None)
    text = terminal.getvalue()
    assert "title?]0;pwned? clear?[2J bell? end" in text
    assert "\x1b" not in text and "\x07" not in text
    piped = run_cli_in_process("logs", rid, home=home).stdout  # a pipe gets the record exact
    assert "\x1b]0;pwned\x07" in piped
