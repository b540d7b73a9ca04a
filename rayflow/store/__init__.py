"""Run history: an embedded SQLite database under RAYFLOW_HOME (default ~/.rayflow)."""

from typing import Any as _Any

from rayflow.store.history import RunStore, rayflow_home, redact_params

__all__ = ["HistoryRecorder", "RunStore", "rayflow_home", "redact_params"]


def __getattr__(name: str) -> _Any:
    """``HistoryRecorder`` on first use: the orchestrator's writer, which readers of the history
    (``rayflow runs``, ``show``) do not import."""
    if name == "HistoryRecorder":
        from rayflow.store.recorder import HistoryRecorder

        return HistoryRecorder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
