"""Pieces of the in-process runner that need nothing above the engine: generator feeding.

The runner itself (``runs.local.LocalRunner``) sits above the store and
telemetry, so a local run is recorded and traced like a run on Ray.
"""

from __future__ import annotations

from typing import Any

from rayflow.engine.columns import next_items


class StreamFeeder:
    """Pulls items of generator inputs when a map asks for them, never more."""

    def __init__(self, streams: dict[int, Any], orchestrator: Any, put: Any):
        self.streams, self.orchestrator, self.put = streams, orchestrator, put

    def request(self, stream_id: int, count: int) -> None:
        column, n, exhausted = next_items(self.streams[stream_id], count)
        handle = self.put(column) if column is not None else None
        self.orchestrator.push_stream(stream_id, handle, n, exhausted)
