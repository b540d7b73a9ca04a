"""The result store's layout: every name rayflow gives a stored result, built and parsed here.

Names are relative to the store's root; ``ResultStore`` joins each one to its
root through ``paths.under_root`` (no absolute path, no '.' or '..' segment),
so nothing built here reaches the disk without that check.  The layout::

    runs/<run id>/<task key>.<suffix>                          a plain task's persisted value
    runs/<run id>/<map key>/chunk-<start>-<stop>-base.<suffix>  a map chunk's first run
    runs/<run id>/<map key>/chunk-<start>-<stop>-w<AAA><WWWWWWWWW>.<suffix>
                                                               a retry's patch over that chunk:
                                                               run attempt (3 digits or more),
                                                               work id (9 digits)
    cache/<flow>/<task key>/<key>.<suffix>                     a plain task's cache entry
    cache/<flow>/<task key>/<key>.meta.json                    what that entry's key is made of
    cache/<flow>/<task key>/items/seg-<time ns, 20 digits>-<8 hex>.arrow
                                                               a mapped task's cached items

``<suffix>`` is ``arrow`` or ``pkl`` (``ResultStore.write`` picks it by the
value).  A task key holds '/' between a subflow's key and its own; a flow
name, a run id and a cache key never do.  A cache key that would read as a
segment name is stored as its SHA-256 (``cache_file_key``), so a path parses
back to the fields it was built from, whatever the task key (round-trip
tests: tests/test_results_layout.py).  This module imports only
``exceptions``: the worker and the driver both use it, without Ray.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from rayflow.exceptions import UnsafePathError

RUNS = "runs"
CACHE = "cache"
SEGMENTS_FOLDER = "items"
META_SUFFIX = ".meta.json"
VALUE_SUFFIXES = (".arrow", ".pkl")
WORK_ID_DIGITS = 9
WORK_ID_MAX = 10**WORK_ID_DIGITS - 1

_SAFE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_SEGMENT = re.compile(r"seg-(\d{20})-([0-9a-f]{8})\.arrow")
_SEGMENT_STEM = re.compile(r"seg-\d{20}-[0-9a-f]{8}")
_CHUNK = re.compile(r"chunk-(\d+)-(\d+)-(?:base|w(\d{3,})(\d{9}))\.(arrow|pkl)")


def _joined(*parts: str) -> str:
    """The parts joined by '/'; an empty part or segment is refused (``runs//x`` would name
    another place).  '.' and '..' are ``paths.under_root``'s to refuse, as the store joins the
    name to its root."""
    for part in parts:
        if not isinstance(part, str) or "" in part.split("/"):
            raise UnsafePathError(f"refusing a result name with an empty part: {'/'.join(map(str, parts))!r}", path="/".join(map(str, parts)), root="")
    return "/".join(parts)


# -- runs/ ---------------------------------------------------------------------------


def persist_name(run_id: str, task_key: str) -> str:
    """Where a run's value of a plain task is written (the suffix is added by the store)."""
    return _joined(RUNS, run_id, task_key)


def chunk_folder(run_id: str, map_key: str) -> str:
    """The folder of a run's stored chunks of a map, with its trailing '/'."""
    return _joined(RUNS, run_id, map_key) + "/"


def chunk_name(run_id: str, map_key: str, start: int, stop: int, attempt: int | None = None, work_id: int | None = None) -> str:
    """A chunk's stored result: its first run (no ``attempt``) or a retry's patch, laid over
    it in the order of (run attempt, work id)."""
    if not 0 <= start <= stop:
        raise ValueError(f"chunk range {start}-{stop} is not a range")
    if attempt is None:
        suffix = "base"
    else:
        if work_id is None or not 0 <= work_id <= WORK_ID_MAX or attempt < 0:
            raise ValueError(f"a chunk patch needs an attempt >= 0 and a work id 0 to {WORK_ID_MAX}, got {attempt}, {work_id}")
        suffix = f"w{attempt:03d}{work_id:0{WORK_ID_DIGITS}d}"
    return chunk_folder(run_id, map_key) + f"chunk-{start}-{stop}-{suffix}"


@dataclass(frozen=True)
class StoredChunk:
    start: int
    stop: int
    attempt: int | None  # None: the chunk's first run ("base")
    work_id: int | None

    @property
    def is_base(self) -> bool:
        return self.attempt is None

    @property
    def order(self) -> tuple[int, int]:
        """Patches are laid over their base in this order."""
        return (self.attempt or 0, self.work_id or 0)


def parse_chunk(file_name: str) -> StoredChunk | None:
    """The fields of a stored chunk's file name (``chunk-...`` with its suffix, no folder), or
    None for any other file."""
    match = _CHUNK.fullmatch(file_name)
    if match is None:
        return None
    attempt = int(match[3]) if match[3] is not None else None
    work_id = int(match[4]) if match[4] is not None else None
    return StoredChunk(int(match[1]), int(match[2]), attempt, work_id)


# -- cache/ --------------------------------------------------------------------------


def cache_file_key(key: str) -> str:
    """The name a cache key is stored under: the key itself when it is a plain file name (and
    does not read as a segment's), else its SHA-256 in hex (a key never names a path)."""
    if not _SAFE_KEY.fullmatch(key) or key.strip(".") == "" or _SEGMENT_STEM.fullmatch(key):
        return hashlib.sha256(key.encode()).hexdigest()
    return key


def cache_folder(flow_name: str, task_key: str = "") -> str:
    """The cache folder of a task (of a flow, without ``task_key``; of all, without either),
    with its trailing '/', as a listing's prefix."""
    parts = [CACHE] + [p for p in (flow_name, task_key) if p]
    if task_key and not flow_name:
        raise ValueError("a task's cache folder needs its flow")
    return _joined(*parts) + "/"


def cache_name(flow_name: str, task_key: str, file_key: str) -> str:
    """A plain task's cache entry (``file_key`` as ``cache_file_key`` gives it)."""
    return _joined(CACHE, flow_name, task_key, file_key)


def meta_name(entry: str) -> str:
    """What an entry's key is made of, beside it; ``entry`` is the entry's name *without* its
    value suffix (``cache_name``'s, or ``strip_suffix`` of a stored path)."""
    return entry + META_SUFFIX


def segment_folder(flow_name: str, task_key: str) -> str:
    """The folder of a mapped task's cached items (no trailing '/')."""
    return _joined(CACHE, flow_name, task_key, SEGMENTS_FOLDER)


def segment_name(flow_name: str, task_key: str, time_ns: int, token: str) -> str:
    """A new segment: named by the time it is written, so a folder's listing sorts oldest first."""
    name = f"seg-{time_ns:020d}-{token}.arrow"
    if not _SEGMENT.fullmatch(name):
        raise ValueError(f"bad segment name {name!r} (time {time_ns}, token {token!r}: 8 hex digits)")
    return f"{segment_folder(flow_name, task_key)}/{name}"


def is_segment(file_name: str) -> bool:
    """Whether a file name (no folder) is a segment's."""
    return _SEGMENT.fullmatch(file_name) is not None


def strip_suffix(path: str) -> str:
    """A stored value's name without its one value suffix (``x.arrow.pkl``: ``x.arrow``)."""
    for suffix in VALUE_SUFFIXES:
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


@dataclass(frozen=True)
class CacheEntry:
    flow_name: str
    task_key: str
    key: str  # the file key; a segment's is "items/seg-..." (its name without the suffix)
    segment: bool


def parse_cache_path(path: str) -> CacheEntry | None:
    """The fields of a path under ``cache/`` (relative to the store's root): a plain task's
    entry or a segment; None for anything else (an entry's ``.meta.json``, a stray file)."""
    parts = path.split("/")
    if len(parts) < 4 or parts[0] != CACHE or "" in parts:
        return None
    flow_name, name = parts[1], parts[-1]
    if len(parts) >= 5 and parts[-2] == SEGMENTS_FOLDER and is_segment(name):
        return CacheEntry(flow_name, "/".join(parts[2:-2]), f"{SEGMENTS_FOLDER}/{strip_suffix(name)}", True)
    key = strip_suffix(name)
    if key == name or not key:  # not a value: a .meta.json, a temporary file
        return None
    return CacheEntry(flow_name, "/".join(parts[2:-1]), key, False)
