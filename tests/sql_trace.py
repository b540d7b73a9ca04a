"""Every SQL statement a RunStore runs, for tests that count queries (never wall clock)."""

from __future__ import annotations

from typing import Any


def trace_statements(store: Any) -> list[str]:
    """From now on, each statement ``store`` runs is appended to the list returned."""
    statements: list[str] = []
    connect = store._connect

    def traced(*args: Any, **kwargs: Any) -> Any:
        db = connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    store._connect = traced
    return statements
