"""The cluster's named limits as the run history keeps them, so that the limits actor
(runtime.limits) gets them back when it starts again after dying.

- ``limits``: one row per limit: its name, ``slots`` and ``per_second`` (NULL: no rate).
  Only definitions are kept: leases (held slots) and token buckets live in the actor.

A ``LimitKeeper`` is the actor's side.  Like the run's ``HistoryRecorder``, it never fails or
holds up the actor for long: a history it cannot open leaves the limits in memory only (one
warning), and a write that fails (a locked history) waits ``WRITE_SECONDS`` at most, then is
retried by a thread of its own every ``RETRY_SECONDS`` until it is in.
"""

from __future__ import annotations

import logging
import pathlib
import threading
import time

from rayflow.store.history import RunStore

WRITE_SECONDS = 1.0  # how long a set or remove waits for a locked history before leaving it to the retry thread
RETRY_SECONDS = 5.0

logger = logging.getLogger(__name__)

Definition = tuple[int, float | None]  # (slots, per_second)


class LimitStore:
    def __init__(self, runs: RunStore):
        self.runs = runs

    def load(self) -> dict[str, Definition]:
        with self.runs._connect() as db:
            rows = db.execute("SELECT name, slots, per_second FROM limits ORDER BY name").fetchall()
        return {row["name"]: (int(row["slots"]), row["per_second"]) for row in rows}

    def write(self, changes: dict[str, Definition | None], timeout: float | None = None) -> None:
        """Apply ``changes`` in one transaction: a definition is stored, None removes the row."""
        now = time.time()
        with self.runs._connect(WRITE_SECONDS if timeout is None else timeout) as db:
            for name, definition in changes.items():
                if definition is None:
                    db.execute("DELETE FROM limits WHERE name = ?", [name])
                else:
                    db.execute("INSERT OR REPLACE INTO limits VALUES (?,?,?,?)", [name, *definition, now])


class LimitKeeper:
    """The limits actor's definitions in the history under ``home`` (None: RAYFLOW_HOME as this
    process sees it).  ``definitions`` is what the history had when the keeper opened it."""

    def __init__(self, home: str | None):
        self.definitions: dict[str, Definition] = {}
        self.store: LimitStore | None = None
        self._pending: dict[str, Definition | None] = {}  # latest change per name, not written yet
        self._lock = threading.Lock()
        self._retrying = False
        self._problem: str | None = None
        try:
            self.store = LimitStore(RunStore(pathlib.Path(home) if home else None))
            self.definitions = self.store.load()
        except Exception as exc:  # noqa: BLE001 - a history that cannot be opened never breaks limits
            self.store = None
            logger.warning(
                "rayflow: the limits cannot be kept in the run history under %s (%s: %s): they live in memory only, "
                "and are lost if the limits actor dies", home or "RAYFLOW_HOME", type(exc).__name__, exc,
            )

    @property
    def path(self) -> pathlib.Path | None:
        return self.store.runs.path if self.store is not None else None

    def keep(self, name: str, definition: Definition | None) -> None:
        """Store (or, with None, remove) a limit's definition; never raises."""
        if self.store is None:
            return
        with self._lock:
            self._pending[name] = definition
            if self._flush() or self._retrying:
                return
            self._retrying = True
        threading.Thread(target=self._retry, name="rayflow-limits-history", daemon=True).start()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _flush(self) -> bool:
        """Write the pending changes (the caller holds ``_lock``); True when none is left."""
        if not self._pending:
            return True
        try:
            self.store.write(self._pending)
        except Exception as exc:  # noqa: BLE001 - locked, full, damaged: kept and retried
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._problem:
                logger.warning(
                    "rayflow: cannot write the limits to the run history at %s (%s); retrying every %g s",
                    self.path, problem, RETRY_SECONDS,
                )
            self._problem = problem
            return False
        self._pending = {}
        if self._problem is not None:
            logger.info("rayflow: the limits are written to the run history again")
            self._problem = None
        return True

    def _retry(self) -> None:
        while True:
            time.sleep(RETRY_SECONDS)
            with self._lock:
                if self._flush():
                    self._retrying = False
                    return
