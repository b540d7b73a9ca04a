"""``rf.artifacts``: what a task wants a person to see, recorded with its run.

    rf.artifacts.markdown("# Report\\n*all good*", key="daily-report")
    rf.artifacts.table([{"city": "Oslo", "rows": 12}], key="counts")
    rf.artifacts.link("https://example.com/dashboard", text="the dashboard")
    rf.artifacts.image(png_bytes)            # or a path to a PNG file
    rf.artifacts.progress(0.5, key="load")

Called inside a task (on a Ray worker or in-process, in a map's items too), an artifact
travels like the task's log records (engine.worker.logs): it is kept in the capture context of
the running work, goes back with the work's report (``AttemptResult.artifacts``,
``ChunkSummary.artifacts``) and the run's HistoryRecorder writes it with the run, its attempt,
the task and the map index.  An artifact with a ``key`` is versioned across runs: each call is a
new version; ``progress`` with a key updates its run's one row (the last call wins, written when
the work ends).  Keys are 1 to 100 of ``A-Z a-z 0-9 _ . -``, starting with a letter or digit.

A bad argument (a wrong type, a fraction outside 0..1, a bad key, an image that is not a PNG
or cannot be read) is one ERROR record in the task's logs naming it; nothing is recorded, the
task goes on and the run does not fail.  Called outside a task (a task function called as a
plain function in a unit test), nothing is recorded: a ``UserWarning`` says so.

Limits (what is cut is said in the artifact's note): a table keeps its first ``MAX_ROWS`` rows and
``MAX_COLUMNS`` columns, cells of at most ``MAX_CELL_CHARS`` characters and ``MAX_TABLE_BYTES``
in all; markdown ``MAX_MARKDOWN_CHARS`` characters; an image at most ``MAX_IMAGE_BYTES`` (larger is
refused); a work (a task attempt, a map chunk) records at most ``MAX_PER_WORK`` artifacts and
``MAX_WORK_BYTES`` (the rest is dropped with one WARNING record).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import threading
import time
import warnings
from typing import Any
from urllib.parse import urlsplit

from rayflow.engine.worker.logs import current_context
from rayflow.states import error_text

__all__ = ["image", "link", "markdown", "progress", "table"]

MAX_ROWS = 1000
MAX_COLUMNS = 50
MAX_CELL_CHARS = 1000
MAX_TABLE_BYTES = 1_000_000
MAX_MARKDOWN_CHARS = 100_000
MAX_IMAGE_BYTES = 1024 * 1024
MAX_LINK_CHARS = 2000
MAX_PER_WORK = 100
MAX_WORK_BYTES = 10 * 1024 * 1024
LINK_SCHEMES = ("http", "https")
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KINDS = ("markdown", "table", "link", "image", "progress")

_lock = threading.Lock()  # the items of a concurrent chunk share their work's context


class ArtifactError(ValueError):
    """A bad argument of an ``rf.artifacts`` call: its message is the ERROR record logged."""


def markdown(text: str, key: str | None = None) -> None:
    """Markdown text, rendered safely on the run's pages (no raw HTML, no scripts)."""
    _record("markdown", key, lambda: _markdown(text))


def table(rows: Any, key: str | None = None) -> None:
    """A table: a list of dicts or of lists, a dict of columns, a pandas DataFrame or a pyarrow Table."""
    _record("table", key, lambda: _table(rows))


def link(url: str, text: str | None = None, key: str | None = None) -> None:
    """A link (http or https) with an optional text."""
    _record("link", key, lambda: _link(url, text))


def image(png: bytes | str | os.PathLike, key: str | None = None) -> None:
    """A PNG image: its bytes or the path of a PNG file (at most MAX_IMAGE_BYTES)."""
    _record("image", key, lambda: _image(png))


def progress(fraction: float, key: str) -> None:
    """How far the task is, 0 to 1; the run's row of ``key`` is updated by each call."""
    _record("progress", key, lambda: _progress(fraction), key_required=True)


# -- recording -----------------------------------------------------------------------


def _record(kind: str, key: Any, make: Any, *, key_required: bool = False) -> None:
    context = current_context()
    try:
        _check_key(key, key_required)
        data, blob = make()
        text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except Exception as exc:  # noqa: BLE001 - a bad argument (or a value that breaks reading it) never fails the task
        reason = str(exc) if isinstance(exc, ArtifactError) else f"cannot read the argument: {error_text(type(exc).__name__, str(exc))}"
        problem = f"rf.artifacts.{kind}: {reason}; the artifact is not recorded"
        if context is None:
            warnings.warn(f"{problem} (and it was called outside a task)", UserWarning, stacklevel=3)
        else:
            context.add("ERROR", problem)
        return
    if context is None:
        warnings.warn(
            f"rf.artifacts.{kind} was called outside a task: nothing is recorded "
            "(artifacts are kept with a run's tasks)", UserWarning, stacklevel=3,
        )
        return
    size = len(text) + len(blob or "")
    row = (time.time(), kind, key, context.task_key, context.map_index(), summary(kind, data), text, blob)
    with _lock:
        held = context.artifacts
        if kind == "progress":  # one row per key: the last call wins
            for i, earlier in enumerate(held):
                if earlier[1] == "progress" and earlier[2] == key:
                    held[i] = row
                    return
        used = context.artifact_bytes
        if len(held) >= MAX_PER_WORK or used + size > MAX_WORK_BYTES:
            context.artifacts_dropped += 1
            if context.artifacts_dropped == 1:
                context.add(
                    "WARNING", f"rf.artifacts.{kind}: this work recorded {len(held)} artifacts ({used} bytes); "
                    f"at most {MAX_PER_WORK} and {MAX_WORK_BYTES} bytes are kept per task attempt or map chunk: "
                    "this one and any later are dropped",
                )
            return
        context.artifact_bytes = used + size
        held.append(row)


def summary(kind: str, data: dict) -> str:
    """One short line about an artifact, for lists (read without its data)."""
    if kind == "markdown":
        line = next((ln.strip().lstrip("#").strip() for ln in data["text"].splitlines() if ln.strip()), "")
        return _text(line, 120)
    if kind == "table":
        return f"{data['total_rows']} rows × {data['total_columns']} columns"
    if kind == "link":
        return _text(data.get("text") or data["url"], 120)
    if kind == "image":
        size = f"{data['bytes']} bytes" if data["bytes"] < 1024 else f"{round(data['bytes'] / 1024)} kB"
        return f"PNG {data['width']}×{data['height']}, {size}"
    return f"{data['fraction']:.0%}"


def _check_key(key: Any, required: bool) -> None:
    if key is None:
        if required:
            raise ArtifactError("a key is required (progress is updated by its key)")
        return
    if not isinstance(key, str):
        raise ArtifactError(f"key must be a string, not {type(key).__name__}")
    if not KEY.fullmatch(key):
        raise ArtifactError(
            f"key {key[:120]!r} is not 1 to 100 of letters, digits, '_', '.' and '-' starting with a letter or digit"
        )


# -- each kind: (data for JSON, base64 image or None), or ArtifactError ---------------------


def _markdown(text: Any) -> tuple[dict, None]:
    if not isinstance(text, str):
        raise ArtifactError(f"text must be a string, not {type(text).__name__}")
    if len(text) <= MAX_MARKDOWN_CHARS:
        return {"text": text}, None
    note = f"cut at {MAX_MARKDOWN_CHARS} of {len(text)} characters"
    return {"text": text[:MAX_MARKDOWN_CHARS], "note": note}, None


def _link(url: Any, text: Any) -> tuple[dict, None]:
    if not isinstance(url, str):
        raise ArtifactError(f"url must be a string, not {type(url).__name__}")
    if len(url) > MAX_LINK_CHARS:
        raise ArtifactError(f"url is longer than {MAX_LINK_CHARS} characters")
    scheme = urlsplit(url.strip()).scheme.lower()
    if scheme not in LINK_SCHEMES or any(c in url for c in "\r\n\t") or not urlsplit(url.strip()).netloc:
        raise ArtifactError(f"url must be an http or https address, not {url[:80]!r}")
    if text is not None and not isinstance(text, str):
        raise ArtifactError(f"text must be a string or None, not {type(text).__name__}")
    return {"url": url.strip(), "text": (text or "")[:500] or None}, None


def _progress(fraction: Any) -> tuple[dict, None]:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ArtifactError(f"fraction must be a number from 0 to 1, not {type(fraction).__name__}")
    if not (math.isfinite(fraction) and 0 <= fraction <= 1):
        raise ArtifactError(f"fraction must be from 0 to 1, not {fraction!r}")
    return {"fraction": float(fraction)}, None


def _image(png: Any) -> tuple[dict, str]:
    if isinstance(png, (bytes, bytearray, memoryview)):
        data = bytes(png)
    elif isinstance(png, (str, os.PathLike)):
        try:
            size = os.stat(png).st_size
            if size > MAX_IMAGE_BYTES:
                raise ArtifactError(f"the image {os.fspath(png)!r} is {size} bytes; at most {MAX_IMAGE_BYTES} are kept")
            with open(png, "rb") as fh:
                data = fh.read(MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            raise ArtifactError(f"cannot read the image {os.fspath(png)!r}: {exc.strerror or exc}") from None
    else:
        raise ArtifactError(f"image must be PNG bytes or the path of a PNG file, not {type(png).__name__}")
    if len(data) > MAX_IMAGE_BYTES:
        raise ArtifactError(f"the image is {len(data)} bytes; at most {MAX_IMAGE_BYTES} are kept")
    if not data.startswith(PNG_SIGNATURE) or len(data) < 24 or data[12:16] != b"IHDR":
        raise ArtifactError("the image is not a PNG (only PNG images are recorded)")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return {"bytes": len(data), "width": width, "height": height}, base64.b64encode(data).decode("ascii")


def _table(rows: Any) -> tuple[dict, None]:
    columns, total_rows, body = _columns_and_rows(rows)
    total_columns = len(columns)
    columns = [_text(c, 200) for c in columns[:MAX_COLUMNS]]
    kept: list[list[Any]] = []
    used = 0
    for row in body:
        if len(kept) >= MAX_ROWS:
            break
        cells = [_cell(v) for v in row[:MAX_COLUMNS]]
        used += len(json.dumps(cells, allow_nan=False))
        if used > MAX_TABLE_BYTES:
            break
        kept.append(cells)
    data: dict[str, Any] = {"columns": columns, "rows": kept, "total_rows": total_rows, "total_columns": total_columns}
    cut = []
    if len(kept) < total_rows:
        cut.append(f"the first {len(kept)} of {total_rows} rows")
    if len(columns) < total_columns:
        cut.append(f"the first {len(columns)} of {total_columns} columns")
    if cut:
        data["note"] = (
            f"showing {' and '.join(cut)} (tables are cut at {MAX_ROWS} rows, {MAX_COLUMNS} columns "
            f"and {MAX_TABLE_BYTES // 1000} kB)"
        )
    return data, None


def _columns_and_rows(rows: Any) -> tuple[list[Any], int, Any]:
    """The columns, the number of rows, and an iterator of rows (lists) of any accepted input."""
    module = type(rows).__module__ or ""
    if module.startswith("pyarrow") and hasattr(rows, "column_names") and hasattr(rows, "slice"):
        head = rows.slice(0, MAX_ROWS)
        names = list(rows.column_names)
        pylist = head.select(names[:MAX_COLUMNS]).to_pylist() if names else []
        return names, rows.num_rows, ([r[n] for n in names[:MAX_COLUMNS]] for r in pylist)
    if module.startswith("pandas") and hasattr(rows, "columns") and hasattr(rows, "iloc"):
        names = list(rows.columns)
        head = rows.iloc[:MAX_ROWS, :MAX_COLUMNS]
        return names, len(rows), (list(r) for r in head.itertuples(index=False, name=None))
    if isinstance(rows, dict):
        names = list(rows)
        values = [rows[n] for n in names]
        if not all(isinstance(v, (list, tuple)) for v in values):
            raise ArtifactError("a dict given as a table must map each column to a list of its values")
        count = max((len(v) for v in values), default=0)
        return names, count, ([v[i] if i < len(v) else None for v in values] for i in range(count))
    if not isinstance(rows, (list, tuple)):
        raise ArtifactError(
            f"rows must be a list of dicts or of lists, a dict of columns, a pandas DataFrame or a "
            f"pyarrow Table, not {type(rows).__name__}"
        )
    if all(isinstance(r, dict) for r in rows):
        names = list(dict.fromkeys(k for r in rows[:MAX_ROWS] for k in r))
        return names, len(rows), ([r.get(n) for n in names] for r in rows)
    if all(isinstance(r, (list, tuple)) for r in rows):
        width = max((len(r) for r in rows[:MAX_ROWS]), default=0)
        return [str(i) for i in range(width)], len(rows), (list(r) + [None] * (width - len(r)) for r in rows)
    kinds = sorted({type(r).__name__ for r in rows})
    raise ArtifactError(f"rows must all be dicts or all be lists, not a mix of {', '.join(kinds)}")


def _cell(value: Any) -> Any:
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # a numpy scalar: its Python value
        value = value.item()
    if value is None or isinstance(value, (bool, int)):
        return value if not isinstance(value, int) or abs(value) < 2**53 or isinstance(value, bool) else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return _text(value, MAX_CELL_CHARS)


def _text(value: Any, limit: int) -> str:
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception as exc:  # noqa: BLE001 - a user's __str__ that raises
        text = f"<{type(value).__name__}: str() failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"
