"""Pieces of the in-process runner that need nothing above the engine: generator feeding.

The runner itself (``runs.local.LocalRunner``) sits above the store and
telemetry, so a local run is recorded and traced like a run on Ray.
"""

from __future__ import annotations

from typing import Any

from rayflow.engine.columns import next_items


class StreamFeeder:
    """Pulls items of generator inputs when a map asks for them, never more: the orchestrator's
    feeder in the in-process runner, answering at once (handle, count, exhausted)."""

    def __init__(self, streams: dict[int, Any], put: Any):
        self.streams, self.put = streams, put

    def request(self, stream_id: int, count: int) -> tuple[Any, int, bool]:
        column, n, exhausted = next_items(self.streams[stream_id], count)
        return (self.put(column) if column is not None else None), n, exhausted
