"""Flow parameters: the flow function's signature, validated by pydantic.

Validation happens before anything is submitted, and reports every bad
field at once (missing, unknown, or of the wrong type).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretBytes, SecretStr, ValidationError, create_model

from rayflow.exceptions import DefinitionError, ParameterError

try:
    from pydantic import Secret as _Secret  # pydantic 2.7+: Secret[...] of any type

    _SECRETS: tuple[type, ...] = (SecretStr, SecretBytes, _Secret)
except ImportError:  # pragma: no cover - older pydantic
    _SECRETS = (SecretStr, SecretBytes)


class _ParamsBase(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def parameters_model(fn: Callable[..., Any], flow_name: str) -> type[BaseModel]:
    """A pydantic model with one field per parameter of ``fn``."""
    fields: dict[str, Any] = {}
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:  # unresolvable forward references: validate as Any
        hints = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise DefinitionError(
                f"flow '{flow_name}': parameter '{p.name}' must be an ordinary named parameter "
                "(no *args, **kwargs or positional-only parameters)"
            )
        if p.name.startswith("_"):
            raise DefinitionError(f"flow '{flow_name}': parameter names may not start with '_' ({p.name})")
        annotation = hints.get(p.name, Any)
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (annotation, default)
    return create_model(f"{flow_name}_parameters", __base__=_ParamsBase, **fields)


def validate_parameters(
    model: type[BaseModel], flow_name: str, values: dict[str, Any], *, deferred: set[str] = frozenset()
) -> dict[str, Any]:
    """The coerced parameter values, or ParameterError listing every bad field.

    ``deferred`` names parameters whose values are not known yet (a subflow given a
    task result): they are neither checked nor returned.
    """
    if deferred:
        unknown = sorted(deferred - set(model.model_fields))
        model = create_model(
            f"{model.__name__}_partial", __base__=model, **{n: (Any, None) for n in deferred if n not in unknown}
        )
        values = {**values, **dict.fromkeys(unknown)}
    try:
        instance = model.model_validate(values)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for err in exc.errors():
            name = ".".join(str(part) for part in err["loc"]) or "?"
            if err["type"] == "missing":
                msg = "missing required parameter"
            elif err["type"] == "extra_forbidden":
                msg = "unknown parameter"
            elif err["loc"] and is_secret_annotation(model.model_fields.get(str(err["loc"][0]), None)):
                msg = f"{err['msg']} (a secret: its value is not shown)"
            else:
                msg = f"{err['msg']} (got {_short(err.get('input'))})"
            errors.setdefault(name, msg)
        listing = "; ".join(f"{k}: {v}" for k, v in errors.items())
        raise ParameterError(
            f"invalid parameters for flow '{flow_name}': {listing}", flow_name=flow_name, errors=errors
        ) from None
    return {name: getattr(instance, name) for name in type(instance).model_fields if name not in deferred}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parameter_annotations(model: type[BaseModel]) -> dict[str, Any]:
    return {name: f.annotation for name, f in model.model_fields.items()}


def is_secret(value: Any) -> bool:
    """A pydantic secret (SecretStr, SecretBytes, Secret[...]): shown as *** wherever parameters are recorded."""
    return isinstance(value, _SECRETS)


def is_secret_annotation(annotation: Any) -> bool:
    """Whether a parameter annotated so holds a secret (``SecretStr``, ``SecretStr | None``, ...);
    also takes a pydantic field.  A bad value of such a parameter is named, never shown."""
    annotation = getattr(annotation, "annotation", annotation)
    origin = typing.get_origin(annotation) or getattr(annotation, "__pydantic_generic_metadata__", {}).get("origin")
    for kind in (annotation, origin):
        if isinstance(kind, type) and issubclass(kind, _SECRETS):
            return True
    return any(is_secret_annotation(arg) for arg in typing.get_args(annotation))


def takes_text(annotation: Any) -> bool:
    """A parameter whose command-line value is taken as text, never parsed as JSON: a ``str``, or a
    secret (a secret that looks like a number stays the text it was, and is never shown in an error)."""
    if annotation is str:
        return True
    options = [a for a in typing.get_args(annotation) if a is not type(None)] if _is_union(annotation) else [annotation]
    if len(options) != 1:
        return False
    if typing.get_origin(options[0]) is not None:  # pydantic.Secret[str]: text; Secret[int]: parsed
        return is_secret_annotation(options[0]) and typing.get_args(options[0]) in ((str,), (bytes,))
    return isinstance(options[0], type) and issubclass(options[0], (SecretStr, SecretBytes))


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)
