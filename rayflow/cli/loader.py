"""The CLI's targets (see rayflow.core.loader): a module target is looked for in the current
directory first, as ``python -m`` and uvicorn do, for every command that loads one (``run``,
``resume``, ``graph``, ``serve``, ``submit``, ...)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

from rayflow.core.flow import Flow
from rayflow.core.loader import TargetError
from rayflow.core.loader import load_flow as _load_flow

__all__ = ["TargetError", "load_flow"]


def load_flow(target: str) -> Flow:
    """The flow of ``target``; ``package.module:flow`` imported from the current directory first.
    The directory stays first on ``sys.path`` when the module came from it (its neighbours and
    lazy imports are found there too), and is taken away again otherwise."""
    location = target.rpartition(":")[0]
    if not location or location.endswith(".py") or "/" in location or "\\" in location:
        return _load_flow(target)  # a file by path (or a malformed target: the core loader says why)
    try:
        cwd = os.getcwd()
    except OSError:  # the current directory was removed
        return _load_flow(target)
    added = not sys.path or sys.path[0] not in ("", cwd)
    if added:
        sys.path.insert(0, cwd)
    try:
        flow = _load_flow(target)
    except TargetError as exc:
        _drop(cwd, added)
        top = location.split(".")[0]
        if top not in sys.modules and _nowhere(top):
            raise TargetError(
                f"cannot import module {location!r}: it is neither in the current directory {cwd} ({top}.py or "
                f"{top}/) nor installed; run rayflow from the directory that holds it"
            ) from None
        raise exc from None
    module = sys.modules.get(location)
    path = getattr(module, "__file__", None)
    if not (path and pathlib.Path(path).resolve().is_relative_to(pathlib.Path(cwd).resolve())):
        _drop(cwd, added)
    return flow


def _nowhere(top: str) -> bool:
    try:
        return importlib.util.find_spec(top) is None
    except (ImportError, ValueError):
        return False


def _drop(cwd: str, added: bool) -> None:
    if added and sys.path and sys.path[0] == cwd:
        del sys.path[0]
