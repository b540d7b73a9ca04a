"""A run history that cannot be written never hangs or fails a run.

The HistoryRecorder keeps the rows a failed write held and writes them on a
later flush; at close it waits a bounded time, then keeps retrying in the
background for a while, then gives up and says how many rows were lost.
Its timings run on a ManualClock: the writer thread flushes, and close gives
up, only when the test moves the clock on.
A damaged database is moved aside and a new one started.  One warning per
problem, not one per flush.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import pytest
from flows import adds

from rayflow.states import State, StateType
from rayflow.store import HistoryRecorder, RunStore
from rayflow.store import recorder as H  # the writer thread and its timings
from waiting import ManualClock, wait_for


class FlakyStore(RunStore):
    """A RunStore whose first ``failures`` writes raise, as a locked or broken database does."""

    def __init__(self, home, failures: int):
        super().__init__(home)
        self.failures = failures
        self.calls = 0

    def write(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise sqlite3.OperationalError("database is locked")
        return super().write(*args, **kwargs)


class BlockedStore(RunStore):
    """Every write blocks until ``release`` is set, then fails: a database held locked for good."""

    def __init__(self, home):
        super().__init__(home)
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, *args, **kwargs):
        self.entered.set()
        self.release.wait(60)
        raise sqlite3.OperationalError("database is locked")


def _transition(recorder: HistoryRecorder, key: str | None, state: StateType) -> None:
    recorder.on_transition(run_id=recorder.run_id, task_key=key, old=State(type=StateType.PENDING), new=State(type=state))


@pytest.fixture
def clock():
    """The recorders' clock: while it stands still their writer threads stay idle (the test flushes by hand)."""
    return ManualClock()


def _closing(recorder: HistoryRecorder, **kwargs) -> tuple[threading.Event, list[BaseException]]:
    """``recorder.close(**kwargs)`` in a thread of its own (it waits on the clock the test moves):
    set once close returned, and what it raised."""
    closed = threading.Event()
    errors: list[BaseException] = []

    def close() -> None:
        try:
            recorder.close(**kwargs)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        closed.set()

    threading.Thread(target=close, daemon=True).start()
    return closed, errors


def test_rows_of_a_failed_write_are_kept_and_written_once_the_store_recovers(tmp_path, clock, caplog):
    store = FlakyStore(tmp_path, failures=3)
    recorder = HistoryRecorder(store, "run-1", "flaky", {}, ["a", "b"], clock=clock)
    caplog.set_level(logging.WARNING, logger="rayflow")
    _transition(recorder, None, StateType.RUNNING)
    _transition(recorder, "a", StateType.RUNNING)
    assert recorder.flush() is False  # failed: kept, not raised
    _transition(recorder, "a", StateType.SUCCESS)
    assert recorder.flush() is False
    _transition(recorder, "b", StateType.RUNNING)
    assert recorder.flush() is False
    assert store.run("run-1") is None  # nothing written yet
    _transition(recorder, "b", StateType.FAILED)
    _transition(recorder, None, StateType.FAILED)
    assert recorder.flush() is True
    recorder.close()

    stored = store.run("run-1")
    assert stored is not None and stored["state"] == "FAILED"
    got = [(t["task_key"], t["seq"], t["state"]) for t in stored["transitions"]]
    assert got == [("a", 1, "RUNNING"), ("a", 2, "SUCCESS"), ("b", 1, "RUNNING"), ("b", 2, "FAILED")]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per problem, not per flush
    assert "database is locked" in warnings[0].getMessage() and "run-1" in warnings[0].getMessage()


def test_the_writer_thread_survives_failed_writes(tmp_path, clock):
    store = FlakyStore(tmp_path, failures=2)
    recorder = HistoryRecorder(store, "run-2", "flaky", {}, ["a"], clock=clock)
    _transition(recorder, "a", StateType.RUNNING)
    for calls in range(3):  # a flush each period of the clock: two failures, then a write that succeeds
        clock.advance_when(H.FLUSH_SECONDS, lambda calls=calls: store.calls == calls and clock.waiting == 1)
    wait_for(lambda: store.calls == 3 and clock.waiting == 1, what="the third write")
    assert recorder.pending_rows() == 0
    _transition(recorder, "a", StateType.SUCCESS)
    _transition(recorder, None, StateType.SUCCESS)
    recorder.close()
    stored = store.run("run-2")
    assert [t["state"] for t in stored["transitions"]] == ["RUNNING", "SUCCESS"]


def test_rows_held_while_the_store_fails_are_bounded(tmp_path, clock, monkeypatch, caplog):
    monkeypatch.setattr(H, "MAX_PENDING_ROWS", 10)
    store = FlakyStore(tmp_path, failures=5)
    recorder = HistoryRecorder(store, "run-3", "flaky", {}, ["a"], clock=clock)
    caplog.set_level(logging.WARNING, logger="rayflow")
    for _ in range(5):
        for _ in range(6):
            _transition(recorder, "a", StateType.RUNNING)
        assert recorder.flush() is False
        assert recorder.pending_rows() <= 10
    assert recorder.flush() is True
    recorder.close()
    with sqlite3.connect(store.path) as db:
        seqs = [row[0] for row in db.execute("SELECT seq FROM transitions WHERE run_id = 'run-3' ORDER BY rowid")]
    assert seqs == list(range(21, 31))  # the newest ones were kept
    assert any("20 rows" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_close_is_bounded_and_does_not_raise_when_the_store_keeps_failing(tmp_path, clock, caplog):
    store = BlockedStore(tmp_path)
    recorder = HistoryRecorder(store, "run-4", "stuck", {}, ["a"], clock=clock)
    caplog.set_level(logging.WARNING, logger="rayflow")
    _transition(recorder, "a", StateType.RUNNING)
    clock.advance_when(H.FLUSH_SECONDS, lambda: clock.waiting == 1, "the writer thread's wait")
    assert store.entered.wait(30)  # the writer is now blocked inside a write
    _transition(recorder, "a", StateType.SUCCESS)
    _transition(recorder, None, StateType.SUCCESS)
    closed, errors = _closing(recorder, timeout=0.2, background=0)
    try:
        # The write is still blocked (it never returns before release): close must not wait for it.
        clock.advance_when(0.2, lambda: clock.started == 2 and clock.waiting == 1, "close's wait for the last rows")
        clock.advance_when(1.0, lambda: clock.started == 3 and clock.waiting == 1, "close's wait for the blocked write")
        assert closed.wait(30), "close() waited for a write that never ends"
        assert not errors, errors
    finally:
        store.release.set()
    lost = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert lost and "3 rows" in lost[0] and "run-4" in lost[0], [r.getMessage() for r in caplog.records]


def test_close_gives_up_on_a_store_that_fails_fast(tmp_path, clock, caplog):
    store = FlakyStore(tmp_path, failures=10**9)
    recorder = HistoryRecorder(store, "run-5", "broken", {}, ["a"], clock=clock)
    caplog.set_level(logging.WARNING, logger="rayflow")
    _transition(recorder, "a", StateType.RUNNING)
    _transition(recorder, None, StateType.RUNNING)
    closed, errors = _closing(recorder, timeout=0.3, background=0)
    # close waits for the last rows; the writer thread, its first write failed, waits to try again
    clock.advance_when(0.3, lambda: clock.started == 3 and clock.waiting == 2, "close's wait and the writer's")
    assert closed.wait(30) and not errors, errors  # returned, did not raise
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert store.calls == 2  # a write, and one more at the deadline
    assert any("2 rows" in m and "not written" in m for m in messages), messages
    assert sum("database is locked" in m for m in messages) == 1, messages


def test_rows_left_at_close_are_written_in_the_background_once_the_store_recovers(tmp_path, clock, caplog):
    store = FlakyStore(tmp_path, failures=10**9)
    recorder = HistoryRecorder(store, "run-6", "late", {}, ["a"], clock=clock)
    caplog.set_level(logging.WARNING, logger="rayflow")
    _transition(recorder, "a", StateType.SUCCESS)
    _transition(recorder, None, StateType.SUCCESS)
    closed, errors = _closing(recorder, timeout=0.2, background=60)
    clock.advance_when(0.2, lambda: clock.started == 3 and clock.waiting == 2, "close's wait and the writer's")
    assert closed.wait(30) and not errors, errors  # the run's end is not held up
    assert store.run("run-6") is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("retried in the background" in m for m in messages), messages
    store.failures = 0  # the lock is released
    clock.advance_when(H.FLUSH_SECONDS, lambda: clock.started == 3 and clock.waiting == 1, "the writer's next try")
    wait_for(lambda: store.run("run-6") is not None, what="the rows written in the background")
    assert store.run("run-6")["state"] == "SUCCESS"
    assert wait_for(lambda: any("written after all" in r.getMessage() for r in caplog.records), timeout=10)
    assert not any("not written" in r.getMessage() for r in caplog.records)


def _damage(path) -> None:
    """Garbage over the first pages of a valid database, as a disk or a careless copy leaves it.
    Connections not yet collected are closed first: closing one checkpoints its WAL into the
    file, which would write a good first page back over the garbage."""
    import gc

    gc.collect()
    data = bytearray(path.read_bytes())
    for offset in range(0, min(len(data), 4 * 4096), 7):
        data[offset] = 0x5A
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def test_a_damaged_history_is_moved_aside_by_its_writer_and_reported_by_readers(tmp_path, caplog):
    store = RunStore(tmp_path)
    recorder = HistoryRecorder(store, "before", "f", {}, ["a"])
    _transition(recorder, None, StateType.SUCCESS)
    recorder.close()
    recorder._thread.join(10)  # its writer thread, and the connection it used, are done
    _damage(store.path)
    with pytest.raises(sqlite3.DatabaseError):
        RunStore(tmp_path).runs()  # a reader reports it (the CLI in one line), and moves nothing
    assert [p.name for p in tmp_path.iterdir()] == ["history.db"]
    caplog.set_level(logging.WARNING, logger="rayflow")
    writer = RunStore(tmp_path, repair=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("history.db.damaged-")]
    assert len(aside) == 1 and aside[0].read_bytes()[:16] != b"SQLite format 3\x00"  # kept as it was, for forensics
    assert any("is damaged" in r.getMessage() and str(aside[0]) in r.getMessage() for r in caplog.records)
    recorder = HistoryRecorder(writer, "after", "f", {}, ["a"])
    _transition(recorder, None, StateType.SUCCESS)
    recorder.close()
    assert [r["run_id"] for r in RunStore(tmp_path).runs()] == ["after"]


def test_a_history_damaged_under_a_running_writer_is_moved_aside_at_its_next_write(tmp_path, clock, caplog):
    writer = RunStore(tmp_path, repair=True)
    recorder = HistoryRecorder(writer, "during", "f", {}, ["a"], {"nodes": [], "driver": {}}, clock=clock)
    _transition(recorder, None, StateType.RUNNING)
    _transition(recorder, "a", StateType.RUNNING)
    assert recorder.flush() is True  # the run row and its graph are in the first database
    _damage(writer.path)
    _transition(recorder, "a", StateType.SUCCESS)
    _transition(recorder, None, StateType.SUCCESS)
    assert recorder.flush() is True  # into a new database
    recorder.close()
    run = RunStore(tmp_path).run("during")
    assert run["state"] == "SUCCESS" and [t["state"] for t in run["transitions"]] == ["SUCCESS"]
    assert run["graph"] == {"nodes": [], "driver": {}}  # sent again to the new database: resumable
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("history.db.damaged-")]) == 1


# -- on Ray: a locked history database ------------------------------------------------


def _set_close_seconds(actor: object, seconds: float) -> float:
    """Run in the run's actor (``__ray_call__``): set its recorders' CLOSE_SECONDS; returns the old one."""
    before, H.CLOSE_SECONDS = H.CLOSE_SECONDS, seconds
    return before


@pytest.mark.timeout(120)
def test_a_run_whose_history_database_is_locked_returns_its_result(ray_session, tmp_path, monkeypatch):
    """Another process holds the history database locked for the whole run: each write waits
    out SQLite's busy timeout and fails.  The run still ends normally with its result, and once
    the lock is gone the next run is recorded again."""
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path))
    first = adds.run(x=1)  # the actor opens (and caches) the store for this home
    assert first.result() == 3
    path = RunStore(tmp_path).path
    import ray

    from rayflow.runtime.driver.actors import driver_actor

    # The run's end waits CLOSE_SECONDS (3 s) for its last rows in the actor: 0.5 s here.
    actor = driver_actor()
    close = ray.get(actor.__ray_call__.remote(_set_close_seconds, 0.5))
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        locked = adds.run(x=5)
        assert locked.state.is_successful()
        assert locked.result() == 7
    finally:
        lock.execute("ROLLBACK")
        lock.close()
        ray.get(actor.__ray_call__.remote(_set_close_seconds, close))
    after = adds.run(x=10)
    assert after.result() == 12
    deadline = time.monotonic() + 30
    while RunStore(tmp_path).run(after.run_id) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert RunStore(tmp_path).run(after.run_id)["state"] == "SUCCESS"


def test_a_history_written_before_run_attempts_is_upgraded_in_place(tmp_path):
    """A history.db of an older rayflow (no attempt columns): opened, upgraded, its runs read as attempt 1."""
    import sqlite3

    path = tmp_path / "history.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, params TEXT NOT NULL, state TEXT NOT NULL,
            message TEXT, started_at REAL, finished_at REAL, trace_id TEXT, tasks TEXT NOT NULL);
        CREATE TABLE transitions (run_id TEXT NOT NULL, task_key TEXT NOT NULL, seq INTEGER NOT NULL,
            state TEXT NOT NULL, attempt INTEGER, message TEXT, error_type TEXT, traceback TEXT, at REAL,
            started_at REAL, finished_at REAL);
        CREATE TABLE chunks (run_id TEXT NOT NULL, task_key TEXT NOT NULL, start INTEGER, stop INTEGER,
            items INTEGER, counts TEXT, started_at REAL, finished_at REAL, error TEXT);
        CREATE TABLE logs (run_id TEXT NOT NULL, at REAL, level TEXT, message TEXT, task_key TEXT,
            map_index INTEGER, trace_id TEXT, span_id TEXT);
        INSERT INTO runs VALUES ('old-run', 'f', '{}', 'FAILED', 'boom', 1.0, 2.0, NULL, '["a"]');
        INSERT INTO transitions VALUES ('old-run', 'a', 1, 'FAILED', 1, 'boom', NULL, NULL, 2.0, 1.0, 2.0);
        """
    )
    old.commit()
    old.close()
    store = RunStore(tmp_path)
    run = store.run("old-run")
    assert run["attempt"] == 1 and [t["state"] for t in run["transitions"]] == ["FAILED"]
    recorder = HistoryRecorder(store, "old-run", "f", {}, ["a"], attempt=2)  # its resume, as a second attempt
    recorder.on_transition(
        run_id="old-run", task_key=None, old=State(type=StateType.PENDING), new=State(type=StateType.SUCCESS)
    )
    recorder.close()
    again = store.run("old-run")
    assert again["state"] == "SUCCESS" and again["attempt"] == 2 and again["transitions"] == []
    assert [(a["attempt"], a["state"]) for a in again["attempts"]] == [(1, "FAILED"), (2, "SUCCESS")]


def test_the_history_is_owner_only_and_a_bad_rayflow_home_is_one_line(tmp_path):
    import os
    import stat

    from cli_runner import run_cli_in_process

    home = tmp_path / "fresh-home"
    RunStore(home)
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "history.db").st_mode) == 0o600
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    out = run_cli_in_process("runs", home=a_file)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "is a file, not a directory" in out.stderr
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "history.db").write_bytes(b"\x13\x37" * 4096)
    for args in (["runs"], ["show", "abc"], ["logs", "abc"], ["schedules"]):
        out = run_cli_in_process(*args, home=damaged)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not a database" in out.stderr, (args, out.stderr)


def _kept_rows(store: RunStore, run_id: str, name: str) -> None:
    """A file of rows a writer could not write, as HistoryRecorder._spill leaves it."""
    store.spill(name, {
        "runs": [[run_id, "f", "{}", "SUCCESS", None, 1.0, 2.0, None, '["a"]', 1]],
        "transitions": [[run_id, "a", 1, "SUCCESS", 1, "", None, None, 2.0, 1.0, 2.0, 1]],
        "chunks": [], "logs": [], "graphs": [],
    })


def test_kept_rows_are_written_once_however_many_writers_find_them(tmp_path):
    import socket

    store = RunStore(tmp_path, repair=True)
    dead = f"kept-1@{socket.gethostname()}:999999999"  # a pid no process has
    _kept_rows(store, "kept", dead)
    writers = [RunStore(tmp_path, repair=True) for _ in range(4)]
    threads = [threading.Thread(target=w.write_pending) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    run = store.run("kept")
    assert run["state"] == "SUCCESS" and len(run["transitions"]) == 1
    assert not list(store.pending_folder.iterdir())
    # The same rows again (their writer wrote them, then died before removing its file): skipped.
    _kept_rows(store, "kept", dead)
    assert store.write_pending() == 0 and not list(store.pending_folder.iterdir())
    assert len(store.run("kept")["transitions"]) == 1


def test_kept_rows_of_a_live_writer_wait_and_this_processes_own_leftovers_do_not(tmp_path):
    import os
    import socket

    store = RunStore(tmp_path, repair=True)
    parent = f"live-1@{socket.gethostname()}:{os.getppid()}"  # a live process of this host
    mine = f"mine-1@{socket.gethostname()}:{os.getpid()}"  # this process's, no writer retrying it
    _kept_rows(store, "live", parent)
    _kept_rows(store, "mine", mine)
    H._LIVE_SPILLS.add(mine)
    assert store.write_pending() == 0  # both still owned
    H._LIVE_SPILLS.discard(mine)
    assert store.write_pending() > 0
    assert store.run("mine") is not None and store.run("live") is None


def test_stores_opened_at_once_on_a_new_home_all_open(tmp_path):
    """Several connections opening a new history at once: the switch to WAL mode is a deadlock
    SQLite answers at once with "database is locked" (no busy wait); every opener gets its store
    (CI saw a reader poll fail this way while its run's driver opened the history)."""
    failures: list[str] = []

    def open_store(home):
        try:
            RunStore(home)
        except sqlite3.Error as exc:
            failures.append(repr(exc))

    for attempt in range(25):
        home = tmp_path / f"home{attempt}"
        threads = [threading.Thread(target=open_store, args=(home,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    assert sqlite3.connect(tmp_path / "home0" / "history.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_recorder_whose_writer_was_never_started_writes_its_rows_at_close(tmp_path):
    """The FlowRunActor defers the writer thread (start=False) until a run's first tasks are
    submitted; a run that ends before that (an engine error, a cancel) still gets its rows."""
    recorder = HistoryRecorder(RunStore(tmp_path), "deferred", "f", {}, ["a"], start=False)
    _transition(recorder, None, StateType.RUNNING)
    _transition(recorder, "a", StateType.SUCCESS)
    _transition(recorder, None, StateType.SUCCESS)
    started = time.monotonic()
    recorder.close()
    assert time.monotonic() - started < H.CLOSE_SECONDS  # written, not waited out
    assert [(r["run_id"], r["state"]) for r in RunStore(tmp_path).runs()] == [("deferred", "SUCCESS")]
