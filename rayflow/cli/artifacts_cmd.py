"""``rayflow artifacts ls`` and ``rayflow artifacts show``: what tasks recorded with ``rf.artifacts``,
read from the run history.  Registered through ``exits.handled`` and ``exits.history_errors``;
the store and rich are imported when a command runs.  An unknown run or key is one line, exit 1
(as ``show`` of an unknown run)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from rayflow.cli.exits import EXIT_FAILED, EXIT_USAGE
from rayflow.cli.usage import fail

HEADERS = ["key", "version", "kind", "content", "run", "task", "recorded"]
MAX_NUMBER = 10**9  # --limit and --version: past it SQLite cannot take the number (one line, not a traceback)


def ls(
    run: Annotated[Optional[str], typer.Option("--run", help="The artifacts of this run (with or without a key).")] = None,  # noqa: UP007
    key: Annotated[Optional[str], typer.Option("--key", help="Every version of this key, newest first.")] = None,  # noqa: UP007
    limit: Annotated[int, typer.Option("--limit", help="At most this many artifacts.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """Artifacts from the run history: the latest version of each key, newest first; with --run
    a run's artifacts in the order recorded; with --key every version of that key."""
    from rayflow.store import RunStore

    if not 1 <= limit <= MAX_NUMBER:
        raise fail(f"--limit must be from 1 to {MAX_NUMBER}, not {limit}", EXIT_USAGE)
    store = RunStore()
    if run is not None:
        if store.run_state(run) is None:
            raise fail(f"no run {run!r} in the run history at {store.path}", EXIT_FAILED)
        rows = store.run_artifacts(run, key=key, limit=limit, data=False)
        title = f"artifacts of run {run}" + (f" with key {key}" if key else "")
    elif key is not None:
        rows = store.artifact_versions(key, limit=limit)
        if not rows:
            raise fail(f"no artifact {key!r} in the run history at {store.path}", EXIT_FAILED)
        title = f"versions of artifact {key}"
    else:
        rows = store.latest_artifacts(limit=limit)
        title = "artifacts (the latest version of each key)"
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rayflow.cli.output import emit_table

    if not rows:
        print("no artifacts" + (f" in run {run}" if run else "") + ": tasks record them with rf.artifacts.markdown(...), table, link, image, progress")
        return
    emit_table(HEADERS, [_cells(r) for r in rows], title=title)


def show(
    key: Annotated[str, typer.Argument(help="The artifact's key.")],
    version: Annotated[Optional[int], typer.Option("--version", help="This version (default: the latest).")] = None,  # noqa: UP007
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts (an image: its size, not its bytes).")] = False,
) -> None:
    """An artifact's latest version (or --version N): markdown as written, a table, a link, an
    image's size, a progress; then where it came from and how many versions it has."""
    from rayflow.store import RunStore

    if version is not None and not 1 <= version <= MAX_NUMBER:
        raise fail(f"--version must be from 1 to {MAX_NUMBER} (versions count from 1), not {version}", EXIT_USAGE)
    store = RunStore()
    artifact = store.artifact(key, version=version)
    if artifact is None:
        which = f"{key!r} version {version}" if version is not None else repr(key)
        raise fail(f"no artifact {which} in the run history at {store.path}", EXIT_FAILED)
    if as_json:
        print(json.dumps(artifact, indent=2))
        return
    _print_body(artifact)
    latest = store.artifact_versions(key, limit=1)[0]["version"]
    task = f" task {artifact['task_key']}" if artifact["task_key"] else ""
    index = f"[{artifact['map_index']}]" if artifact["map_index"] is not None else ""
    print(f"artifact {key} version {artifact['version']} of {latest} · {artifact['kind']} · run {artifact['run_id']}{task}{index}")


def _print_body(artifact: dict[str, Any]) -> None:
    from rayflow.cli.output import terminal_safe  # rich, loaded only when a body is printed

    data, kind = artifact["data"], artifact["kind"]
    if kind == "markdown":
        print(terminal_safe(data["text"]))
    elif kind == "table":
        from rayflow.cli.output import emit_table

        emit_table([str(c) for c in data["columns"]], [["" if c is None else str(c) for c in row] for row in data["rows"]])
    elif kind == "link":
        print(terminal_safe(f"{data['text']} <{data['url']}>" if data.get("text") else data["url"]))
    elif kind == "image":
        print(f"an image, {artifact['summary']}: `rayflow ui` shows it")
    else:
        fraction = float(data["fraction"])
        print(f"[{'#' * round(30 * fraction)}{'.' * (30 - round(30 * fraction))}] {fraction:.0%}")
    if data.get("note"):
        print(data["note"])


def _cells(row: dict[str, Any]) -> list[str]:
    from rayflow.presentation import when

    task = (row["task_key"] or "-") + (f"[{row['map_index']}]" if row["map_index"] is not None else "")
    version = str(row["version"]) if row["version"] is not None else "-"
    return [row["key"] or "-", version, row["kind"], row["summary"] or "", row["run_id"], task, when(row["at"])]
