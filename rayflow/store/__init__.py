"""Run history: an embedded SQLite database under RAYFLOW_HOME (default ~/.rayflow)."""

from rayflow.store.history import HistoryRecorder, RunStore, rayflow_home, redact_params

__all__ = ["HistoryRecorder", "RunStore", "rayflow_home", "redact_params"]
