"""``rayflow run`` and ``show`` of a run with many tasks: past ``ROWS_AT_MOST`` rows, the counts
by state and the tasks that did not succeed, with ``--all`` (every row) and ``--state`` (the
rows in one state) to see more.  ``run`` in real CLI processes over a real history (the in-process
runner: 2,000 tasks on Ray would cost the suite a minute for what the display does the same way);
the read-only ``show`` in this process."""

from __future__ import annotations

import pathlib
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from cli_runner import run_cli, run_cli_in_process

from rayflow.cli.output import ROWS_AT_MOST, pick_rows

WIDE = textwrap.dedent('''
    import rayflow as rf

    @rf.task
    def check(i: int) -> int:
        if i % 500 == 7:
            raise ValueError(f"item {i} is bad")
        return i

    @rf.flow
    def wide(n: int = 2000) -> list:
        return [check.with_options(name=f"t{i}")(i) for i in range(n)]
''')


def rows(stdout: str) -> list[list[str]]:
    """The tab-separated task table's rows (after its header, up to the first line without a tab)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task\t"))
    out = []
    for line in lines[start + 1 :]:
        if "\t" not in line:
            break
        out.append(line.split("\t"))
    return out


@pytest.mark.timeout(300)
def test_run_and_show_of_2000_tasks_print_counts_and_the_failures_with_all_and_state_for_more(tmp_path):
    (tmp_path / "wide.py").write_text(WIDE)
    home = tmp_path / "home"
    target = f"{tmp_path / 'wide.py'}:wide"
    failed = {"t7", "t507", "t1007", "t1507"}

    small = ROWS_AT_MOST  # at the threshold, every row as before
    with ThreadPoolExecutor(3) as pool:  # three runs at once, each a process of its own, into one history
        runs = [pool.submit(run_cli, "run", target, "--local", *args, home=home)
                for args in (("--run-id", "wide-1"), ("--run-id", "wide-2", "--all"), ("-p", f"n={small}"))]
        ran, every, at_threshold = (run.result() for run in runs)
    assert ran.returncode == 1, ran.stderr[-2000:]
    assert {r[0] for r in rows(ran.stdout)} == failed and all(r[1] == "FAILED" for r in rows(ran.stdout))
    assert "2000 tasks: 1996 SUCCESS, 4 FAILED" in ran.stdout, ran.stdout[-2000:]
    assert len(rows(every.stdout)) == 2000

    shown = run_cli_in_process("show", "wide-1", home=home)
    assert shown.returncode == 0 and {r[0] for r in rows(shown.stdout)} == failed, shown.stdout[-2000:]
    assert "2000 tasks: 1996 SUCCESS, 4 FAILED" in shown.stdout
    assert len(rows(run_cli_in_process("show", "wide-1", "--all", home=home).stdout)) == 2000
    succeeded = rows(run_cli_in_process("show", "wide-1", "--state", "success", home=home).stdout)
    assert len(succeeded) == 1996 and {r[1] for r in succeeded} == {"SUCCESS"}
    assert {r[0] for r in rows(run_cli_in_process("show", "wide-1", "--state", "FAILED", home=home).stdout)} == failed
    assert len(rows(at_threshold.stdout)) == small and "tasks:" not in at_threshold.stdout


def test_past_the_threshold_the_table_lists_at_most_rows_at_most_of_the_tasks_that_did_not_succeed():
    states = ["FAILED"] * 120 + ["SUCCESS"] * 10 + ["TRIGGER_FAILED"] * 3
    chosen, summary = pick_rows(states)
    assert chosen == list(range(ROWS_AT_MOST))
    assert summary.startswith("133 tasks: 120 FAILED, 10 SUCCESS, 3 TRIGGER_FAILED; listed: the first 50 of the 123 that did not succeed")
    assert pick_rows(states, state="TRIGGER_FAILED")[0] == [130, 131, 132]
    assert pick_rows(states, show_all=True) == (list(range(133)), None)
    assert pick_rows(["SUCCESS"] * 60)[0] == [] and "none listed: every task succeeded" in pick_rows(["SUCCESS"] * 60)[1]
