"""A plain task's use of the result store, in the worker that runs it.

Before the call: with a ``cache_key_fn``, compute the key from the call's
arguments and look it up under ``cache/<flow>/<task key>/<key>``; a stored
result younger than ``cache_expiration`` is the task's value (CACHED), and
the function does not run.  After a successful call: write the value under
that key (a cache entry).  With ``persist`` the value is written under
``runs/<run id>/<task key>`` behind the task: its report names the place
(``to_persist``) and the orchestrator has a write work do it
(``engine.worker.execute.write_behind``) while downstream tasks go on.
Every write is atomic (``rayflow.results``).

What never fails a task here: an argument that cannot be hashed (the call
runs uncached, with a warning naming the argument), a key function that
raises (the same), a cache entry that cannot be read (a warning naming the
file; the task runs and the entry is written again), a cache write that
fails (a warning).  A ``persist`` write that fails fails the run (the user
asked for the value to be kept), not the task, which has ended.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any

import json

from rayflow.cache import CacheContext, Uncacheable, _explained, explain_miss
from rayflow.engine.protocol import ResultPolicy
from rayflow.engine.worker.logs import get_run_logger
from rayflow.exceptions import CorruptResultError, MissingResultError, ResultStoreError
from rayflow.results import ResultStore
from rayflow.results_layout import META_SUFFIX, cache_file_key, cache_folder, meta_name, persist_name
from rayflow.results_layout import cache_name as _cache_name

MISS = object()


@dataclass
class Lookup:
    """The cache key of a call (None: uncached) and, on a hit, the stored value and its path."""

    key: str | None = None
    value: Any = MISS
    path: str | None = None
    parts: dict[str, str] | None = None  # what the key is made of, kept beside the entry
    reason: str = ""  # why a cached task runs: "cache miss: ..." (its state's message)
    replace: bool = False  # the entry there is to be replaced (refreshed, expired, unreadable)


def cache_name(policy: ResultPolicy, task_key: str, key: str) -> str:
    return _cache_name(policy.flow_name, task_key, key)


def look_up(policy: ResultPolicy, task_key: str, fn: Any, args: tuple, kwargs: dict) -> Lookup:
    logger = get_run_logger()
    if policy.load_from is not None:  # a resumed run: this task's result from the run it resumes
        try:
            return Lookup(None, ResultStore(policy.store).read(policy.load_from), policy.load_from)
        except ResultStoreError as exc:
            logger.warning("task %s runs again: its stored result cannot be loaded: %s", task_key, exc)
    if policy.cache_key_fn is None:
        return Lookup()
    context = CacheContext(policy.flow_name, task_key, policy.task_name, fn, policy.lineage_key)
    try:
        arguments = inspect.signature(fn).bind(*args, **kwargs).arguments
        key, parts = _explained(policy.cache_key_fn, context, dict(arguments))
    except Uncacheable as exc:
        logger.warning("task %s runs uncached: %s", task_key, exc)
        return Lookup()
    except Exception as exc:  # noqa: BLE001 - the user's key function
        logger.warning("task %s runs uncached: its cache_key_fn raised %s: %s", task_key, type(exc).__name__, exc)
        return Lookup()
    if key is None:
        return Lookup()
    if not isinstance(key, str):
        logger.warning("task %s runs uncached: cache_key_fn returned %s, not a str", task_key, type(key).__name__)
        return Lookup()
    key = cache_file_key(key)  # a key names a file: never a path, never a segment's name
    if policy.refresh_cache:
        return Lookup(key, parts=parts, reason="cache refreshed (refresh_cache=True)", replace=True)
    store = ResultStore(policy.store)
    name = cache_name(policy, task_key, key)
    try:
        path = store.find(name)
        if path is None:
            return Lookup(key, parts=parts, reason=f"cache miss: {_why_missing(store, policy, task_key, parts)}")
        if policy.cache_expiration is not None:
            info = store.stat(path)
            age = time.time() - info.mtime if info is not None and info.mtime is not None else None
            if age is None or age > policy.cache_expiration:  # expired: run, and the new result replaces it
                told = f"written {age:.0f}s ago" if age is not None else "its age unknown"
                reason = f"cache miss: the entry expired ({told}, cache_expiration {policy.cache_expiration:g}s)"
                return Lookup(key, parts=parts, reason=reason, replace=True)
        return Lookup(key, store.read(path), path, parts)
    except MissingResultError:
        return Lookup(key, parts=parts, reason="cache miss: the entry was removed")
    except CorruptResultError as exc:
        logger.warning("task %s: %s; running it again", task_key, exc)
        return Lookup(key, parts=parts, reason="cache miss: the entry could not be read", replace=True)
    except ResultStoreError as exc:
        logger.warning("task %s: the cache cannot be read (%s); running it", task_key, exc)
        return Lookup(key, parts=parts, reason="cache miss: the cache cannot be read")


def _why_missing(store: ResultStore, policy: ResultPolicy, task_key: str, parts: dict[str, str] | None) -> str:
    """Compare with the task's newest entry: which part of the key changed since."""
    if parts is None:
        return "no entry for this key (a key function's parts are not known)"
    folder = cache_folder(policy.flow_name, task_key)
    metas = sorted((f for f in store.list(folder) if f.path.endswith(META_SUFFIX)), key=lambda f: f.mtime or 0)
    if not metas:
        return "no cached result for this task yet"
    try:
        earlier = json.loads(store.read_bytes(metas[-1].path))
    except (ResultStoreError, ValueError):
        return "no entry for this key"
    return explain_miss(parts, earlier.get("parts") or {}) + " since the newest entry"



def keep(policy: ResultPolicy, task_key: str, lookup: Lookup | None, value: Any) -> str | None:
    """Write the value to the cache where the policy says; the path of the entry, if any.
    (Persisting it for the run is a write-behind the orchestrator asks for: ``to_persist``.)"""
    store = ResultStore(policy.store)
    kept = None
    if lookup is not None and lookup.key is not None:
        try:
            name = cache_name(policy, task_key, lookup.key)
            kept = store.write(name, value, first_wins=not lookup.replace)  # racing runs: the first entry stays
            if lookup.parts is not None:  # beside the value, written after it: explains later misses
                meta = {"parts": lookup.parts, "written_at": time.time(), "path": kept}
                store.write_bytes(meta_name(name), json.dumps(meta).encode())
        except Exception as exc:  # noqa: BLE001 - a cache that cannot take it is a warning, never a failure
            get_run_logger().warning("task %s: its result was not cached: %s", task_key, exc)
    return kept


def to_persist(policy: ResultPolicy | None, run_id: str, task_key: str) -> tuple[str, str] | None:
    """(store, name) this run's value of the task is written to behind it, or None."""
    if policy is None or not policy.persist:
        return None
    return (policy.store, persist_name(run_id, task_key))
