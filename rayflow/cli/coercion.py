"""Option values read without pydantic where the answer is plain: a start-up cost of every command.

Newer typer coerces every option value (a ``--limit 20``, a default ``None``) through a
pydantic ``TypeAdapter`` built on first use, so any command, ``rayflow runs`` included, paid
for importing pydantic and building adapters (about 0.1 s of its start-up) before doing
anything.  ``install`` gives typer's parameters a coercion that answers the plain cases
itself (a ``str``, a list of them, an ``int`` or ``float`` written in digits and within its
bounds, a value already of the type) and hands every other value, unchanged, to the coercion typer would have built
(which raises its own error for a bad one): the values and errors are typer's, only the
plain ones come sooner.  With a typer that has none of this (older ones coerce through
click), ``install`` does nothing.
"""

from __future__ import annotations

import re
from typing import Any

_INT = re.compile(r"-?[0-9]{1,18}")  # what int() and pydantic read alike (no sign +, no _, no spaces)
_FLOAT = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,15})?")
_PLAIN_NUMBERS = (int, float)


def _plain(info: Any) -> bool:
    """An option with nothing but its type and bounds: no parser, clamp or click type."""
    return (
        getattr(info, "parser", None) is None and getattr(info, "click_type", None) is None
        and not getattr(info, "clamp", False)
    )


def fast_value(annotation: Any, value: Any, low: Any = None, high: Any = None) -> tuple[bool, Any]:
    """``(True, value as typer would coerce it)`` for a plain case, else ``(False, None)``; a
    number out of its bounds ``low``..``high`` is not a plain case (typer words the refusal)."""
    if annotation is str:
        return (True, value) if type(value) is str else (False, None)
    if annotation in _PLAIN_NUMBERS:
        if type(value) is annotation:
            number = value
        elif type(value) is str and (_INT if annotation is int else _FLOAT).fullmatch(value):
            number = annotation(value)
        else:
            return False, None
        if (low is not None and not number >= low) or (high is not None and not number <= high):
            return False, None
        return True, number
    if getattr(annotation, "__origin__", None) is list and getattr(annotation, "__args__", None) == (str,):
        if isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
            return True, list(value)
    return False, None


def install() -> bool:
    """Give typer's parameters the fast coercion (once); False where this typer has no such layer."""
    try:
        from typer import _coercion, core
    except ImportError:  # pragma: no cover - an older typer: click coerces, no pydantic
        return False
    param_class = getattr(core, "_TyperParameter", None)
    base = getattr(_coercion, "RuntimeParam", None)
    build = getattr(_coercion, "build_runtime_param", None)
    if param_class is None or base is None or build is None or getattr(param_class, "_rayflow_fast", False):
        return bool(param_class and getattr(param_class, "_rayflow_fast", False))

    class FastRuntimeParam(base):  # type: ignore[misc, valid-type]
        """Typer's RuntimeParam (its None and multi-value rules kept) answering plain values itself."""

        def __init__(self, descriptor: Any) -> None:
            object.__setattr__(self, "parameter_info", descriptor.parameter_info)
            object.__setattr__(self, "annotation", descriptor.annotation)
            object.__setattr__(self, "_descriptor", descriptor)
            object.__setattr__(self, "_typer", None)

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            info = self.parameter_info
            done, coerced = fast_value(self.annotation, value, info.min, info.max)
            if done:
                return coerced
            if self._typer is None:  # the value typer's own coercion reads (or refuses)
                object.__setattr__(self, "_typer", build(self._descriptor))
            return self._typer._coerce_value(value, param=param, ctx=ctx)

    original = param_class.get_runtime_param

    def get_runtime_param(self: Any) -> Any:
        descriptor = getattr(self, "type_descriptor", None)
        if getattr(self, "_runtime_param", None) is None and descriptor is not None:
            if descriptor.file_annotation is None and _plain(descriptor.parameter_info):
                self._runtime_param = FastRuntimeParam(descriptor)
        return original(self)

    param_class.get_runtime_param = get_runtime_param
    param_class._rayflow_fast = True
    return True
