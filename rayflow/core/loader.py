"""Find a flow from a target, ``path/to/file.py:flow_name`` or ``package.module:flow_name``, and
say where a flow can be found again (``flow_target``: recorded with each run, so a run can be
resumed from its id alone)."""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys
import traceback
from types import ModuleType

import cloudpickle

from rayflow.core.flow import Flow
from rayflow.exceptions import TargetError
from rayflow.paths import resolved
from rayflow.states import error_text



def flow_target(flow: Flow) -> str | None:
    """The target that loads ``flow`` again: its module (or, for a script, its file) and name."""
    fn = flow.fn
    name = getattr(fn, "__name__", None)
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if name is None or module is None or not isinstance(getattr(module, name, None), Flow):
        return None  # defined inside a function, or renamed: not loadable by a target
    filename = getattr(module, "__file__", None)
    if module.__name__ == "__main__" or getattr(module, "__rayflow_by_value__", False):
        return f"{resolved(filename)}:{name}" if filename else None
    return f"{module.__name__}:{name}"


def load_flow(target: str) -> Flow:
    location, sep, name = target.rpartition(":")
    if not sep or not location or not name:
        raise TargetError(f"target {target!r} must look like path/to/file.py:flow_name or package.module:flow_name")
    module = _load_module(location)
    try:
        obj = getattr(module, name)
    except AttributeError:
        flows = sorted(k for k, v in vars(module).items() if isinstance(v, Flow))
        raise TargetError(f"{location} has no attribute {name!r}; flows defined there: {flows or 'none'}") from None
    if not isinstance(obj, Flow):
        raise TargetError(f"{location}:{name} is a {type(obj).__name__}, not a flow (decorate it with @rf.flow)")
    return obj


def _where(exc: BaseException, path: pathlib.Path) -> str:
    """' at line N' of the file being imported, where its own code raised."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if pathlib.Path(frame.filename).resolve() == path:
            line = frame.lineno
    return f" at line {line}" if line is not None else ""


def _load_module(location: str) -> ModuleType:
    if location.endswith(".py") or "/" in location or "\\" in location:
        path = pathlib.Path(location).resolve()
        if not path.is_file():
            raise TargetError(f"no such file: {location}")
        name = path.stem
        existing = sys.modules.get(name)
        if existing is not None and getattr(existing, "__file__", None) and pathlib.Path(existing.__file__).resolve() == path:
            return existing  # loaded already (imported, or an earlier target): one module, one set of classes
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TargetError(f"cannot import {location}")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            sys.modules.pop(name, None)
            raise TargetError(f"{exc.filename or location}:{exc.lineno}: syntax error: {exc.msg}") from None
        except Exception as exc:  # noqa: BLE001 - the file's own code failed while it was imported
            sys.modules.pop(name, None)
            raise TargetError(f"importing {location} failed{_where(exc, path)}: {error_text(type(exc).__name__, str(exc))}") from None
        # Workers cannot import a file by path: ship its functions and classes by value.
        cloudpickle.register_pickle_by_value(module)
        module.__rayflow_by_value__ = True  # type: ignore[attr-defined]
        return module
    try:
        return importlib.import_module(location)
    except ModuleNotFoundError as exc:
        raise TargetError(f"cannot import module {location!r}: {exc}") from None
    except SyntaxError as exc:
        raise TargetError(f"{exc.filename or location}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - the module's own code failed while it was imported
        raise TargetError(f"importing {location} failed: {error_text(type(exc).__name__, str(exc))}") from None
