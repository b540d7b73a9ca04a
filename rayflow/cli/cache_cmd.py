"""``rayflow cache ls|clear``: the result cache's entries, read through ``rayflow.results_layout``."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Optional

import typer

from rayflow.cli.exits import EXIT_USAGE
from rayflow.cli.usage import fail as _fail

StorageOption = Annotated[
    Optional[str],  # noqa: UP007
    typer.Option("--storage", help="Result storage (directory or URI). Default: RAYFLOW_RESULTS, else RAYFLOW_HOME/results."),
]
FlowFilter = Annotated[Optional[str], typer.Option("--flow", help="Only this flow's entries.")]  # noqa: UP007
TaskFilter = Annotated[Optional[str], typer.Option("--task", help="Only this task key's entries.")]  # noqa: UP007


def _cache_entries(storage: str | None, flow: str | None, task: str | None) -> tuple[Any, list[tuple[str, str, str, Any]]]:
    """(store, [(flow, task key, cache key, StoredFile)]) under cache/<flow>/<task key>/<key>.<suffix>.
    Storage that cannot be read is bad usage, named as the result storage (not the table's message)."""
    from rayflow.exceptions import ResultStoreError
    from rayflow.results import ResultStore
    from rayflow.results_layout import cache_folder, parse_cache_path

    try:
        store = ResultStore(storage)
        files = list(store.list(cache_folder(flow or "")))
    except (ResultStoreError, OSError) as exc:
        raise _fail(f"cannot read the result storage: {exc}", EXIT_USAGE) from None
    entries = []
    for info in files:
        entry = parse_cache_path(info.path)  # None: an entry's .meta.json, a stray file
        if entry is not None and (flow is None or entry.flow_name == flow) and (task is None or entry.task_key == task):
            entries.append((entry.flow_name, entry.task_key, entry.key, info))
    return store, sorted(entries, key=lambda e: (e[0], e[1], e[3].mtime or 0))


def cache_ls(storage: StorageOption = None, flow: FlowFilter = None, task: TaskFilter = None) -> None:
    """List cached results: flow, task, key, bytes, when written (tab-separated)."""
    _, entries = _cache_entries(storage, flow, task)
    for entry_flow, entry_task, key, info in entries:
        written = datetime.datetime.fromtimestamp(info.mtime).isoformat(timespec="seconds") if info.mtime else "-"
        print(f"{entry_flow}\t{entry_task}\t{key}\t{info.size}\t{written}")


def cache_clear(storage: StorageOption = None, flow: FlowFilter = None, task: TaskFilter = None) -> None:
    """Remove cached results (all, or a flow's, or a task's): those tasks run again next time."""
    from rayflow.results_layout import meta_name, strip_suffix

    store, entries = _cache_entries(storage, flow, task)
    removed = 0
    for _, _, _, info in entries:
        removed += store.delete(info.path)
        store.delete(meta_name(strip_suffix(info.path)))
    print(f"removed {removed} cached result(s) from {store.location}")


