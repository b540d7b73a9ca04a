"""A task's payload: pickled once by the plan, unpickled by every worker.

Functions that cloudpickle ships by value (every ``@rf.task`` function, whose
module attribute is the Task rather than the function, and anything defined
in a script or inside a function) arrive as new code objects.  cloudpickle
3.0 to 3.1.2 kept their ``co_filename``; 3.1.3 replaces it with
``"<dynamic-code>"`` so that payloads are the same bytes wherever the code was
defined.  Without the file name a user's traceback names no file and shows no
source line.  So each code object is pickled with the file name it had and
the source lines it spans; loading gives the file name back and, where that
file is not there (a cluster node without the user's checkout), serves the
lines from ``linecache``, where tracebacks look for them.
"""

from __future__ import annotations

import io
import linecache
import os
import types
from typing import Any

import cloudpickle

Source = tuple[int, tuple[str, ...]]  # (first line number, the lines from there)


def dump_payload(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)``, with the origin of each code object shipped by value."""
    buffer = io.BytesIO()
    _OriginPickler(buffer).dump(obj)
    return buffer.getvalue()


def load_payload(payload: bytes) -> Any:
    """Plain ``cloudpickle.loads``: the payload names ``restore_code``, which does the restoring.

    Kept as the one way workers load payloads, so the rule stays in this module.
    """
    return cloudpickle.loads(payload)


def restore_code(make: Any, args: tuple[Any, ...], filename: str, source: Source | None) -> types.CodeType:
    """Runs while unpickling (the reduction points here by name, so keep it importable)."""
    code = make(*args)
    if code.co_filename != filename:
        code = code.replace(co_filename=filename)
    if source is not None and not os.path.exists(filename):
        _remember_source(filename, source)
    return code


class _OriginPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, wrapping its reduction of code objects in ``restore_code``."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self._covered: dict[str, list[tuple[int, int]]] = {}  # lines already shipped, per file

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            reduce_code = self.dispatch_table.get(types.CodeType)
            if reduce_code is not None:
                make, args = reduce_code(obj)
                return restore_code, (make, args, obj.co_filename, self._source_of(obj))
        return super().reducer_override(obj)

    def _source_of(self, code: types.CodeType) -> Source | None:
        """The lines the code spans, once per payload: a nested function's lie inside its parent's."""
        first, last = code.co_firstlineno, _last_line(code)
        covered = self._covered.setdefault(code.co_filename, [])
        if any(lo <= first and last <= hi for lo, hi in covered):
            return None
        lines = linecache.getlines(code.co_filename)
        if len(lines) < last:
            return None  # no source here either (exec'd code, or the file changed)
        covered.append((first, last))
        return first, tuple(lines[first - 1 : last])


def _last_line(code: types.CodeType) -> int:
    """Where the code's last expression ends (3.11+ positions), or its last line (3.10)."""
    positions = code.co_positions() if hasattr(code, "co_positions") else ((n, n) for _, _, n in code.co_lines())
    return max((end or start or 0 for start, end, *_ in positions), default=0) or code.co_firstlineno


def _remember_source(filename: str, source: Source) -> None:
    """Put the lines where ``linecache.getline`` finds them; ``mtime=None`` keeps ``checkcache`` off them."""
    first, lines = source
    entry = linecache.cache.get(filename)
    known = list(entry[2]) if entry is not None and len(entry) == 4 and entry[1] is None else []
    if len(known) < first - 1 + len(lines):
        known.extend("\n" for _ in range(first - 1 + len(lines) - len(known)))
    known[first - 1 : first - 1 + len(lines)] = lines
    linecache.cache[filename] = (sum(map(len, known)), None, known, filename)
