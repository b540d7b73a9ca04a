"""Recovery of the history: a damaged database moved aside, and the rows a run could not write
kept in a file (the spill protocol) for a later writer, across processes.

``Recovery`` is a part of ``RunStore`` (store.history), which supplies ``_create`` and ``_write``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import socket
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from rayflow.paths import under_root

BACKGROUND_SECONDS = 300.0  # how long a writer thread retries a run's last rows on its own

logger = logging.getLogger(__name__)


def driver_alive(graph: Mapping[str, Any]) -> bool | None:
    """Whether the driver that ran a run (recorded with its graph) is a live process: known only
    for a driver of this host, None elsewhere.  A dead driver took its actor, and its run, along."""
    driver = graph.get("driver") or {}
    pid, host = driver.get("pid"), driver.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def driver_is_gone(graph: Mapping[str, Any]) -> bool:
    return driver_alive(graph) is False

_LIVE_SPILLS: set[str] = set()  # files of rows this process's writer threads still retry


def _orphaned(name: str, claimer: str, path: pathlib.Path) -> bool:
    """Whether the kept rows ``name`` (``<run>-<attempt>@<host>:<pid>``; claimed by ``claimer``,
    a pid, if not empty) belong to no live writer: one of this process still retrying them, or
    another live process of this host, keeps them; a file of another host, for a while."""
    if name in _LIVE_SPILLS:
        return False
    host, _, pid = name.rpartition("@")[2].partition(":")
    owner = claimer or pid
    if host == socket.gethostname():
        return not (owner.isdigit() and int(owner) != os.getpid() and driver_alive({"driver": {"host": host, "pid": int(owner)}}))
    return time.time() - path.stat().st_mtime > BACKGROUND_SECONDS + 60



class Recovery:
    """The spill files and the move-aside of a damaged database, for ``RunStore``."""

    home: pathlib.Path
    path: pathlib.Path
    generation: int

    @property
    def pending_folder(self) -> pathlib.Path:
        return self.home / "history-pending"

    def spill(self, name: str, rows: Mapping[str, list]) -> pathlib.Path:
        """Rows a run could not write, as one JSON file (owner-only) for a later writer.  Its
        name holds the run id: a name that would leave the folder is refused (UnsafePathError)."""
        path = pathlib.Path(under_root(str(self.pending_folder), f"{name}.json"))
        self.pending_folder.mkdir(mode=0o700, exist_ok=True)
        partial = path.with_suffix(".partial")
        fd = os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(rows, fh)
        os.replace(partial, path)
        return path

    def write_pending(self) -> int:
        """Write the rows earlier runs left in files (their history was locked) once no live
        writer owns them; the rows written.  Each file is claimed by renaming it first, and
        recorded in ``pending_applied`` in the same transaction as its rows: written once."""
        written = 0
        folder = self.pending_folder
        for path in sorted(folder.glob("*.json*")) if folder.is_dir() else []:
            name, _, claimer = path.name.partition(".json")
            if not _orphaned(name, claimer.removeprefix(".claimed-"), path):
                continue
            claimed = folder / f"{name}.json.claimed-{os.getpid()}"
            try:
                os.rename(path, claimed)  # atomic: one writer wins it
            except FileNotFoundError:
                continue
            try:
                rows = json.loads(claimed.read_text())
                self._write(
                    *(list(map(tuple, rows[k])) for k in ("runs", "transitions", "chunks", "logs", "graphs")),
                    timeout=1.0, applied=name, items=list(map(tuple, rows.get("items", []))),
                    artifacts=list(map(tuple, rows.get("artifacts", []))),
                )
            except sqlite3.IntegrityError:  # written already (its writer wrote them, then died)
                rows = {}
            except (OSError, ValueError, KeyError, sqlite3.Error) as exc:
                logger.warning("rayflow: cannot write the history rows kept in %s: %s", path, exc)
                with contextlib.suppress(OSError):
                    os.rename(claimed, folder / f"{name}.json")
                continue
            claimed.unlink(missing_ok=True)
            written += sum(len(v) for v in rows.values())
        return written

    def _move_aside(self, exc: BaseException, inode: int) -> None:
        """Rename the damaged database (the one with ``inode``: another process may have moved
        it and started a new one already) to history.db.damaged-<time>, and start a new one."""
        aside = self.path.with_name(f"history.db.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        try:
            if os.stat(self.path).st_ino == inode:
                os.rename(self.path, aside)
                for suffix in ("-wal", "-shm"):
                    extra = self.path.with_name(self.path.name + suffix)
                    if extra.exists():
                        os.rename(extra, aside.with_name(aside.name + suffix))
                logger.warning(
                    "rayflow: the run history at %s is damaged (%s): moved it to %s and started a new one",
                    self.path, exc, aside,
                )
        except FileNotFoundError:
            pass  # moved by another process
        self.generation += 1  # writers resend what the new database lacks (a run's graph)
        self._create()
