"""The CLI's targets (see rayflow.core.loader): a module target is looked for in the current
directory first, as ``python -m`` and uvicorn do, by every command that loads one (``run``,
``resume``, ``graph``, ``serve``, ``submit``, ...): they all load through ``load_flow`` here."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

from rayflow.core.flow import Flow
from rayflow.core.loader import TargetError
from rayflow.core.loader import load_flow as _load_flow

__all__ = ["TargetError", "load_flow"]


def load_flow(target: str, directory: str | None = None) -> Flow:
    """The flow of ``target``; ``package.module:flow`` imported from ``directory`` (the current one
    unless given: ``submit --working-dir``) first.  The directory stays first on ``sys.path`` when
    the module came from it (its neighbours and lazy imports are found there too), and is taken
    away again otherwise."""
    location = target.rpartition(":")[0]
    if not location or location.endswith(".py") or "/" in location or "\\" in location:
        return _load_flow(target)  # a file by path (or a malformed target: the core loader says why)
    try:
        folder = os.path.abspath(directory) if directory is not None else os.getcwd()
    except OSError:  # the current directory was removed
        return _load_flow(target)
    added = not sys.path or sys.path[0] not in (folder, "" if directory is None else folder)
    if added:
        sys.path.insert(0, folder)
    try:
        flow = _load_flow(target)
    except TargetError:
        _drop(folder, added)
        top = location.split(".")[0]
        if top in sys.modules or not _nowhere(top):
            raise  # found, and failed to import: the core loader's message says how
        where = f"the current directory {folder}" if directory is None else f"the directory {folder}"
        raise TargetError(
            f"cannot import module {location!r}: it is neither in {where} ({top}.py or {top}/) nor installed; "
            "run rayflow from the directory that holds it"
        ) from None
    if not _came_from(location.split(".")[0], folder) or folder in sys.path[1:]:
        _drop(folder, added)  # found elsewhere, or found there anyway: sys.path as it was
    return flow


def _came_from(top: str, folder: str) -> bool:
    """Whether module or package ``top`` was imported from ``folder`` (``top.py`` or ``top/``)."""
    path = getattr(sys.modules.get(top), "__file__", None)
    if not path:
        return False
    here, there = pathlib.Path(path).resolve(), pathlib.Path(folder).resolve()
    return here == there / f"{top}.py" or here.is_relative_to(there / top)


def _nowhere(top: str) -> bool:
    """Whether no module or package ``top`` is found on ``sys.path``."""
    try:
        return importlib.util.find_spec(top) is None
    except (ImportError, ValueError):
        return False


def _drop(folder: str, added: bool) -> None:
    if added and sys.path and sys.path[0] == folder:
        del sys.path[0]
