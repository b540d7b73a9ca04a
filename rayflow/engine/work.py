"""Units of work handed to executors, and how their inputs travel.

An executor receives a ``Work`` and a flat list of handles; it passes the
handles to the worker as top-level arguments (so Ray resolves them there,
zero-copy for Arrow and numpy data) and the worker rebuilds the structure
from ``Work.layout`` / ``ChunkJob.pieces``.  A mapped task's value is a
``MapHandle``: per-chunk metadata whose handles point at ChunkResults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChunkHandle:
    start: int
    stop: int
    handles: tuple[Any, ...]  # the chunk's first ChunkResult, then its retries'
    flat_start: int = 0  # for flatten consumers: where its items start in the flattened sequence
    flat_stop: int = 0


@dataclass(frozen=True)
class MapHandle:
    """The value of a mapped task: its chunks, in item order."""

    chunks: tuple[ChunkHandle, ...]
    total: int


@dataclass(frozen=True)
class Piece:
    """Items [lo, hi) of one input object (or of a chunk's merged results)."""

    kind: str  # column | value | chunk | flatten_value | flatten_chunk
    objs: tuple[int, ...]  # indices into the flat handle list
    lo: int
    hi: int


@dataclass(frozen=True)
class ChunkJob:
    map_key: str
    chunk: int  # chunk index within the map
    start: int  # global index of the chunk's first item
    size: int  # items in the chunk
    sources: tuple[tuple[Piece, ...], ...]  # per mapped source: the pieces giving its items
    indices: tuple[int, ...] | None = None  # a retry: only these items of the chunk
    attempts: tuple[int, ...] | None = None  # attempt number of each item run (None: all 1)


@dataclass(frozen=True)
class Work:
    work_id: int
    task_key: str
    attempt: int
    layout: tuple[Any, ...] = ()  # plain tasks: per upstream, ("value", i) or ("map", chunk handle indices)
    job: ChunkJob | None = None
    report_length: str | None = None  # "len" / "flat": report the value's length for a consuming map
    trace: Any = None  # (W3C traceparent, telemetry settings) when the run is traced
    run_id: str = ""
    log_prints: bool = False  # capture print() as log records of the run


def pack_inputs(inputs: list[Any]) -> tuple[tuple[Any, ...], list[Any]]:
    """A layout plus the flat handles for a plain task's upstream inputs."""
    flat: list[Any] = []
    layout: list[Any] = []
    for handle in inputs:
        if isinstance(handle, MapHandle):
            chunks = []
            for ch in handle.chunks:
                chunks.append(tuple(range(len(flat), len(flat) + len(ch.handles))))
                flat.extend(ch.handles)
            layout.append(("map", tuple(chunks)))
        else:
            layout.append(("value", len(flat)))
            flat.append(handle)
    return tuple(layout), flat
