"""``rayflow show`` and ``rayflow logs`` read a map's item rows as the engine recorded them (one per
item that did not succeed or ran again): listed below the task table, paged with --items, and one
item's error and traceback with ``logs --task MAP --item N``.  A real local run (no Ray)."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

import rayflow as rf

try:  # the commands in this process where the test helpers offer it
    from cli_runner import run_cli_in_process
except ImportError:  # pragma: no cover - before the in-process runner existed
    run_cli_in_process = None

ITEMS = 48
ONCE = {x for x in range(ITEMS) if x % 4 == 1}  # fail their first attempt, then succeed
ALWAYS = {x for x in range(ITEMS) if x % 4 == 2}  # fail both attempts
SKIPPED = {3}
EXPECTED = {  # the map's item rows: index -> (state, attempts)
    **{x: ("SUCCESS", 2) for x in ONCE}, **{x: ("FAILED", 2) for x in ALWAYS}, **{x: ("SKIPPED", 1) for x in SKIPPED},
}


@rf.task(retries=1, retry_delay=0.0, chunk_size=8)
def picky(x: int, marks: str) -> int:
    rf.get_run_logger().info(f"picky sees {x}")
    if x in ONCE:
        mark = pathlib.Path(marks) / str(x)
        if not mark.exists():
            mark.touch()
            raise ValueError(f"first try of {x}")
    if x in ALWAYS:
        raise KeyError(f"no key {x}")
    if x in SKIPPED:
        raise rf.Skip(f"{x} is skipped")
    return x


@rf.task
def fine(x: int) -> int:
    return x


@rf.task
def total(values: list) -> int:
    return len(values)


@rf.flow
def picky_items(marks: str):
    """picky.map(range(48)): 12 retried, 12 failed, 1 skipped; fine.map(range(4)): no rows; total."""
    return [picky.map(range(ITEMS), marks=rf.unmapped(marks)), total(fine.map(range(4)))]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    marks = tmp_path_factory.mktemp("marks")
    old = os.environ.get("RAYFLOW_HOME")
    os.environ["RAYFLOW_HOME"] = str(home)
    try:
        run = picky_items.with_options(runner="local").run(marks=str(marks))
    finally:
        if old is None:
            os.environ.pop("RAYFLOW_HOME")
        else:
            os.environ["RAYFLOW_HOME"] = old
    assert run.state.type.value == "FAILED"
    return home, run.run_id


def cli(home: pathlib.Path, *args: str):
    """``rayflow ARGS`` in this process: (exit code, stdout, stderr)."""
    if run_cli_in_process is not None:
        done = run_cli_in_process(*args, home=home)
        return done.returncode, done.stdout, done.stderr
    from typer.testing import CliRunner

    from rayflow.cli import app

    result = CliRunner().invoke(app, list(args), env={"RAYFLOW_HOME": str(home)})
    return result.exit_code, result.stdout, result.stderr


def item_lines(text: str, task: str) -> list[list[str]]:
    """The tab-separated item rows printed under ``items of TASK ...``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"items of {task} "))
    assert lines[start + 1].split("\t") == ["item", "state", "attempts", "error"]
    rows = []
    for line in lines[start + 2:]:
        if "\t" not in line:
            break
        rows.append(line.split("\t"))
    return rows


def expected_cells(x: int) -> list[str]:
    state, attempts = EXPECTED[x]
    error = {"FAILED": f"KeyError: 'no key {x}'", "SKIPPED": f"Skip signal: {x} is skipped"}.get(state, "-")  # a skip: why
    return [str(x), state, str(attempts), error]


def test_show_lists_the_first_20_item_rows_of_each_map_and_how_to_page_the_rest(recorded):
    home, run_id = recorded
    code, out, err = cli(home, "show", run_id)
    assert code == 0, err
    listed = sorted(EXPECTED)[:20]
    assert item_lines(out, "picky") == [expected_cells(x) for x in listed]
    assert f"items of picky that did not succeed or ran again: {len(EXPECTED)}" in out
    assert f"{len(EXPECTED) - 20} more: rayflow show {run_id} --items picky --after {listed[-1]}" in out
    assert "items of fine" not in out  # every item succeeded on its first attempt: no rows


def test_show_items_pages_a_map_by_after_and_limit_and_state(recorded):
    home, run_id = recorded
    ordered = sorted(EXPECTED)
    seen, after = [], None
    for _ in range(10):  # page through with the command each page prints
        args = ["show", run_id, "--items", "picky", "--limit", "7", *(["--after", str(after)] if after is not None else [])]
        code, out, err = cli(home, *args)
        assert code == 0, err
        page = item_lines(out, "picky")
        seen += page
        more = [line for line in out.splitlines() if line.startswith("more: ")]
        if not more:
            break
        assert len(page) == 7
        assert more == [f"more: rayflow show {run_id} --items picky --after {page[-1][0]} --limit 7"]
        after = int(page[-1][0])
    assert seen == [expected_cells(x) for x in ordered]

    code, out, err = cli(home, "show", run_id, "--items", "picky", "--item-state", "failed", "--after", "10", "--limit", "3")
    assert code == 0, err
    assert item_lines(out, "picky") == [expected_cells(x) for x in (14, 18, 22)]
    assert f"more: rayflow show {run_id} --items picky --item-state FAILED --after 22 --limit 3" in out
    code, out, err = cli(home, "show", run_id, "--items", "picky", "--json", "--after", "40")
    page = json.loads(out)
    assert [(r["item"], r["state"], r["attempts"]) for r in page["items"]] == [(x, *EXPECTED[x]) for x in ordered if x > 40]
    assert page["next_after"] is None and "raise KeyError" in page["items"][1]["traceback"]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--items", "nope"], "'nope': run {run} has no such task (its maps: picky, fine)"),
        (["--items", "total"], "'total': run {run} has a task, not a map"),
        (["--items", "picky", "--after", "-3"], "--after is an item index, 0 to 4611686018427387904, not -3"),
        (["--items", "picky", "--after", "99999999999999999999"], "--after is an item index, 0 to 4611686018427387904, not 9999"),
        (["--items", "picky", "--limit", "0"], "--limit is 1 to 1000000, not 0"),
        (["--items", "picky", "--limit", "99999999999999999999"], "--limit is 1 to 1000000, not 9999"),
        (["--items", "picky", "--item-state", "broken"], "--item-state is one of"),
        (["--after", "4"], "--after page a map's items: give the map with --items MAP"),
        (["--items", "picky", "--watch"], "--items reads a page of the run history"),
    ],
)
def test_bad_item_options_of_show_are_one_line_and_exit_2(recorded, args, names):
    home, run_id = recorded
    code, out, err = cli(home, "show", run_id, *args)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and names.format(run=run_id) in err, err


def test_logs_item_prints_its_records_and_its_recorded_error_and_traceback(recorded):
    home, run_id = recorded
    code, out, err = cli(home, "logs", run_id, "--task", "picky", "--item", "6")
    assert code == 0, err
    lines = out.splitlines()
    records = [line for line in lines if " picky[" in line]
    assert all(" picky[6]: " in line for line in records)  # this item's records only
    assert sum(line.endswith("picky[6]: item 6 failed: KeyError: 'no key 6'") for line in lines) == 2  # both attempts
    assert any(line.endswith("picky[6]: picky sees 6") for line in lines)
    assert "item 6 of picky: FAILED after 2 attempt(s)" in lines
    assert "error: KeyError: 'no key 6'" in lines
    tb = lines[lines.index("traceback:") + 1:]
    assert tb[0].startswith("Traceback") and any("raise KeyError" in line for line in tb)

    code, out, err = cli(home, "logs", run_id, "--task", "picky", "--item", "5")  # retried, then fine
    assert code == 0, err
    assert "item 5 of picky: SUCCESS after 2 attempt(s)" in out and "traceback:" not in out
    code, out, err = cli(home, "logs", run_id, "--task", "picky", "--item", "0")  # succeeded at once
    assert code == 0, err
    assert "item 0 of picky: no row recorded (it succeeded on its first attempt" in out


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--item", "3"], "--item needs --task MAP"),
        (["--task", "picky", "--item", "-1"], "--item is a map index, 0 or more, not -1"),
        (["--task", "picky", "--item", "48"], "--item 48: map picky of run {run} has 48 items (0 to 47)"),
        (["--task", "total", "--item", "0"], "--task 'total': run {run} has a task, not a map"),
        (["--task", "nope", "--item", "0"], "--task 'nope': run {run} has no such task"),
    ],
)
def test_bad_item_options_of_logs_are_one_line_and_exit_2(recorded, args, names):
    home, run_id = recorded
    code, out, err = cli(home, "logs", run_id, *args)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and names.format(run=run_id) in err, err


def test_a_retried_items_own_records_carry_its_map_index(recorded):
    home, run_id = recorded
    for x in (3, 6):  # 3: ran once (skipped); 6: ran twice
        code, out, err = cli(home, "logs", run_id, "--task", "picky", "--item", str(x))
        said = [line.rsplit(": ", 1)[-1] for line in out.splitlines() if "picky sees" in line]
        assert said == [f"picky sees {x}"] * (2 if x in ALWAYS else 1), said


# -- a run in progress: its live view lists the item rows recorded so far ------------------------


@rf.task(chunk_size=4, min_success_ratio=0.0)
def held(x: int, gate: str) -> int:
    """Items 1, 5, 9, ... fail; item 20 waits until the test opens ``gate`` (its chunk keeps the run live)."""
    if x % 4 == 1:
        raise ValueError(f"item {x} fails")
    if x == 20:
        import time

        deadline = time.monotonic() + 120
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)
    return x


@rf.flow
def held_open(gate: str):
    """held.map(range(24)): 5 failed items recorded while chunk [20, 24) waits for the gate"""
    return held.map(range(24), gate=rf.unmapped(gate))


@pytest.mark.timeout(180)
def test_the_live_view_of_a_run_in_progress_lists_its_recorded_item_rows(tmp_path, monkeypatch, ray_session):
    """`show RUN --address` of a run still going on (read from its driver's actor) lists below the
    task table the item rows its recorder wrote so far, as `show` of a finished run does."""
    import concurrent.futures

    from cli_runner import run_cli_in_process
    from waiting import wait_for

    from rayflow.store import RunStore

    home, gate = tmp_path / "home", tmp_path / "gate"
    monkeypatch.setenv("RAYFLOW_HOME", str(home))
    run_id = "live-items-1"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(held_open.with_options(run_id=run_id).run, gate=str(gate))
        try:
            wait_for(lambda: RunStore(home).item_counts(run_id).get("held") == 5, timeout=120, what="5 item rows recorded")
            shown = run_cli_in_process("show", run_id, "--address", ray_session, home=home)
            shown_json = run_cli_in_process("show", run_id, "--address", ray_session, "--json", home=home)
        finally:
            gate.touch()
        assert running.result(timeout=120).state.is_successful()
    assert shown.returncode == 0, shown.stderr
    assert "state: RUNNING (live)" in shown.stdout, shown.stdout
    assert "items of held that did not succeed or ran again: 5" in shown.stdout
    assert item_lines(shown.stdout, "held") == [[str(x), "FAILED", "1", f"ValueError: item {x} fails"] for x in (1, 5, 9, 13, 17)]
    data = json.loads(shown_json.stdout)
    assert data["live"] is True and data["state"] == "RUNNING"
    assert [(r["task_key"], r["item"], r["state"]) for r in data["failed_items"]] == [("held", x, "FAILED") for x in (1, 5, 9, 13, 17)]
