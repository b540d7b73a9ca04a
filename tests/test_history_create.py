"""The history's file is made without ever being opened outside SQLite (store.schema.create_private).

Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
included.  When a thread's RunStore found no history and made one while another thread of the
same process had already opened it (twenty runs started from twenty threads of one driver), the
writers of other processes then took themselves for the database's last users and removed the
WAL index this process still mapped: from then on, this process read the history as it was and
missed every later write (the run that `flow.run()` just answered for was not in
`RunStore(...).run(id)`, for good).
"""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys

from rayflow.store import RunStore
from rayflow.store.schema import create_private

WRITE = """
import sys, time
from rayflow.store import RunStore
store = RunStore(sys.argv[1])
run_id, hold = sys.argv[2], sys.argv[3] == "hold"
now = time.time()
store.write([(run_id, "f", "{}", "SUCCESS", "", now, now, None, "[]", 1)], [], [])
if hold:  # a writer that keeps its connection: its rows stay in the WAL, read through the WAL index
    db = store._connect()
    db.execute("BEGIN")
    db.execute("SELECT count(*) FROM runs").fetchone()
    print("written", flush=True)
    sys.stdin.read()
"""


def test_a_history_made_while_this_process_has_it_open_keeps_seeing_other_processes_writes(tmp_path, monkeypatch):
    home = tmp_path / "home"
    store = RunStore(home)
    held = store._connect()  # a connection of this process, held open as a reader's is
    held.execute("SELECT count(*) FROM runs").fetchone()
    # Another thread found no history: this one made it between that thread's check and its create.
    exists = pathlib.Path.exists
    monkeypatch.setattr(pathlib.Path, "exists", lambda self: False if self == store.path else exists(self))
    RunStore(home)
    monkeypatch.undo()
    subprocess.run([sys.executable, "-c", WRITE, str(home), "closed", "-"], check=True, timeout=60)
    holder = subprocess.Popen(
        [sys.executable, "-c", WRITE, str(home), "held", "hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "written"
        assert {r["run_id"] for r in RunStore(home).runs()} == {"closed", "held"}
        assert store.run("held")["state"] == "SUCCESS"
    finally:
        holder.stdin.close()
        holder.wait(30)
        held.close()


def test_create_private_makes_an_owner_only_file_once_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "history.db"
    create_private(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size == 0
    path.write_bytes(b"kept")
    before = path.stat().st_ino
    create_private(path)  # there is one: left as it is, never opened
    assert path.read_bytes() == b"kept" and path.stat().st_ino == before
    assert sorted(os.listdir(tmp_path)) == ["history.db"]


def test_create_private_without_hard_links_makes_the_file_only_when_there_is_none(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "history.db"
    create_private(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_bytes(b"kept")
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, flags, *a: opened.append((str(p), flags)) or real_open(p, flags, *a))
    create_private(path)
    assert path.read_bytes() == b"kept" and sorted(os.listdir(tmp_path)) == ["history.db"]
    assert all(flags & os.O_EXCL for p, flags in opened if p == str(path)), opened  # an existing file is never opened
