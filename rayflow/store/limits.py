"""The cluster's named limits as the run history keeps them, so that the limits actor
(runtime.limits.actor) gets them back when it starts again after dying.

- ``limits``: one row per limit: its name, ``slots`` and ``per_second`` (NULL: no rate).
  Only definitions are kept: leases (held slots) and token buckets live in the actor.

A ``LimitKeeper`` is the actor's side.  A limit is kept before it holds: the actor writes a
set or a remove first and changes its limits only once the row is in, so a limit the actor
has is one it gets back after a restart.  A write that cannot be made (a history that cannot
be opened, one locked for more than ``WRITE_SECONDS``, a value SQLite refuses) raises
``LimitError`` naming the history, and nothing changes.
"""

from __future__ import annotations

import logging
import pathlib
import time

from rayflow.exceptions import LimitError
from rayflow.store.history import RunStore
from rayflow.state_types import error_text

WRITE_SECONDS = 5.0  # how long a set or remove waits for a locked history before it fails

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
        self.home = home
        self._problem: str | None = None  # why the history cannot be opened
        try:
            self.store = LimitStore(RunStore(pathlib.Path(home) if home else None))
            self.definitions = self.store.load()
        except Exception as exc:  # noqa: BLE001 - the actor still starts: it answers every set with this
            self.store = None
            self._problem = error_text(type(exc).__name__, str(exc))
            logger.warning(
                "rayflow: the limits cannot be kept in the run history under %s (%s): no limit can be set",
                home or "RAYFLOW_HOME", self._problem,
            )

    @property
    def path(self) -> pathlib.Path | None:
        return self.store.runs.path if self.store is not None else None

    def keep(self, name: str, definition: Definition | None, change: str) -> None:
        """Store (or, with None, remove) a limit's definition, or raise LimitError saying that
        ``change`` (``"limit 'db' is not set to 5"``) cannot be kept, and why."""
        where = self.path or pathlib.Path(self.home or "RAYFLOW_HOME") / "history.db"
        if self.store is None:
            raise LimitError(f"{change}: the run history at {where} cannot keep it ({self._problem})")
        try:
            self.store.write({name: definition})
        except Exception as exc:  # noqa: BLE001 - locked, full, damaged, a value SQLite refuses
            raise LimitError(f"{change}: the run history at {where} cannot keep it ({error_text(type(exc).__name__, str(exc))})") from None
