"""A plain task's use of the result store, in the worker that runs it.

Before the call: with a ``cache_key_fn``, compute the key from the call's
arguments and look it up under ``cache/<flow>/<task key>/<key>``; a stored
result younger than ``cache_expiration`` is the task's value (CACHED), and
the function does not run.  After a successful call: write the value under
that key (a cache entry) and, with ``persist``, under
``runs/<run id>/<task key>``.  Every write is atomic (``rayflow.results``).

What never fails a task here: an argument that cannot be hashed (the call
runs uncached, with a warning naming the argument), a key function that
raises (the same), a cache entry that cannot be read (a warning naming the
file; the task runs and the entry is written again), a cache write that
fails (a warning).  What does: a ``persist`` write that fails, since the
user asked for the value to be kept.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import time
from dataclasses import dataclass
from typing import Any

from rayflow.cache import CacheContext, Uncacheable
from rayflow.engine.protocol import ResultPolicy
from rayflow.engine.worker.logs import get_run_logger
from rayflow.exceptions import CorruptResultError, MissingResultError, ResultStoreError
from rayflow.results import ResultStore

MISS = object()
_SAFE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass
class Lookup:
    """The cache key of a call (None: uncached) and, on a hit, the stored value and its path."""

    key: str | None = None
    value: Any = MISS
    path: str | None = None


def cache_name(policy: ResultPolicy, task_key: str, key: str) -> str:
    return f"cache/{policy.flow_name}/{task_key}/{key}"


def persist_name(run_id: str, task_key: str) -> str:
    return f"runs/{run_id}/{task_key}"


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
        key = policy.cache_key_fn(context, dict(arguments))
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
    if not _SAFE_KEY.fullmatch(key) or key.strip(".") == "":  # a key names a file: never a path
        key = hashlib.sha256(key.encode()).hexdigest()
    if policy.refresh_cache:
        return Lookup(key)
    store = ResultStore(policy.store)
    name = cache_name(policy, task_key, key)
    try:
        path = store.find(name)
        if path is None:
            return Lookup(key)
        if policy.cache_expiration is not None:
            info = store.stat(path)
            if info is None or info.mtime is None or time.time() - info.mtime > policy.cache_expiration:
                return Lookup(key)  # expired: run, and the new result replaces it
        return Lookup(key, store.read(path), path)
    except MissingResultError:
        return Lookup(key)  # removed between finding and reading it
    except CorruptResultError as exc:
        logger.warning("task %s: %s; running it again", task_key, exc)
        return Lookup(key)
    except ResultStoreError as exc:
        logger.warning("task %s: the cache cannot be read (%s); running it", task_key, exc)
        return Lookup(key)


def keep(policy: ResultPolicy, run_id: str, task_key: str, lookup: Lookup | None, value: Any, *, cached: bool = False) -> str | None:
    """Write the value where the policy says; the path it is kept under (persisted, else cached).
    ``cached``: the value came from the cache (it is persisted for this run, not cached again)."""
    store = ResultStore(policy.store)
    kept = None
    if lookup is not None and lookup.key is not None and not cached:
        try:
            kept = store.write(cache_name(policy, task_key, lookup.key), value)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot take it is a warning, never a failure
            get_run_logger().warning("task %s: its result was not cached: %s", task_key, exc)
    if policy.persist:
        kept = store.write(persist_name(run_id, task_key), value)  # a failure fails the task
    return kept
