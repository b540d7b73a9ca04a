"""Names that become paths: the one rule for a run id, and paths kept under their root.

A run id names a folder of the result store (``runs/<run id>/``), a Ray job
(``rayflow-<run id>``), a page of the UI (``/runs/<run id>``) and a word on
the command line, so it is ``[A-Za-z0-9][A-Za-z0-9._-]*``, at most
``RUN_ID_MAX`` characters: no '/', no space, no markup, never '.' or '..',
and never read as an option.  ``check_run_id`` is the only place this rule
lives; every way a run gets its id calls it (``Flow.with_options``, both
runners as a run starts, ``rf.resume``, the command line's ``run``,
``submit`` and ``resume``), and ids rayflow makes itself (``new_run_id``, the one maker) follow it.

Behind the rule, ``under_root`` joins a path built from run ids, task keys
and cache keys to its root and refuses one that would climb out of it: no
absolute path, no '.' or '..' segment.  The check is on the text (it works
for ``s3://`` roots alike); links inside a root are the root owner's, as the
files are (see the README's Security section).
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import uuid
from typing import Any

from rayflow.exceptions import RunIdError, UnsafePathError

RUN_ID_MAX = 128
_RUN_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{RUN_ID_MAX - 1}}}")
RUN_ID_RULE = (
    f"a run id is 1 to {RUN_ID_MAX} letters, digits, '.', '_' and '-', starting with a letter or a digit"
)


def check_run_id(run_id: Any) -> str:
    """``run_id`` if it follows the rule, else RunIdError naming it and the rule."""
    if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id):
        return run_id
    if isinstance(run_id, str) and len(run_id) > 64:
        shown = f"{run_id[:32]!r}... ({len(run_id)} characters)"
    else:
        shown = repr(run_id)
    raise RunIdError(f"run id {shown} is not allowed: {RUN_ID_RULE}", run_id=run_id)


def new_run_id() -> str:
    """A run id rayflow makes (a run without ``run_id``, a scheduled fire, the UI's run now):
    12 lowercase hex digits, random, following the rule above.  The only place one is made."""
    return uuid.uuid4().hex[:12]


def under_root(root: str, path: str) -> str:
    """``root/path``, or UnsafePathError when ``path`` would leave ``root`` (absolute, or with a
    '.' or '..' segment).  An empty ``path`` is the root itself; a trailing '/' is kept."""
    if path.startswith("/") or any(part in (".", "..") for part in path.split("/")):
        raise UnsafePathError(f"refusing path {path!r}: it would be outside its root {root}", path=path, root=root)
    return f"{root.rstrip('/')}/{path}"


def resolved(path: str) -> str:
    """``path`` made absolute with its links resolved, once per (path, working directory): a
    path every run records (a script flow's file, the history's directory) costs a resolve once."""
    return _resolved(path, None if os.path.isabs(path) else os.getcwd())


@functools.lru_cache(maxsize=64)
def _resolved(path: str, cwd: str | None) -> str:
    return str(pathlib.Path(path).resolve())
