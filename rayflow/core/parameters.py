"""Flow parameters: the flow function's signature, validated by pydantic.

Validation happens before anything is submitted, and reports every bad
field at once (missing, unknown, or of the wrong type).
"""

from __future__ import annotations

import inspect
import json
import pathlib
import types
import typing
from collections.abc import Callable, Mapping
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


def parameter_values(
    model: type[BaseModel] | None, *, typed: Mapping[str, Any] | None = None, text: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The one parser of parameter values, whatever gave them: ``typed`` values (a JSON object
    from ``--params-json``, a ``flows.toml`` table, Python) are taken as they are; ``text`` values
    (``-p name=value``, the UI's run-now form) become what the flow's model expects, by the field's
    type (``value_from_text``).  Text overrides typed.  Validation (``validate_parameters``) comes
    after, and names any field whose value is still wrong.  ``model`` None (a flow that does not
    load here): every text is JSON where it parses."""
    values = dict(typed or {})
    fields = model.model_fields if model is not None else {}
    for name, raw in (text or {}).items():
        field = fields.get(name)
        values[name] = value_from_text(field.annotation if field is not None else Any, raw)
    return values


def value_from_text(annotation: Any, text: str) -> Any:
    """A parameter's value typed as text: the text itself for a ``str`` or a secret (``takes_text``),
    so "2024" for a ``str`` stays "2024"; else JSON where it parses (``5``, ``true``, ``[1, 2]``,
    ``{"a": 1}``), else the text, which validation then refuses, naming the field, where the
    type does not take it."""
    if takes_text(annotation):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def text_of_value(annotation: Any, value: Any) -> str:
    """The text that ``value_from_text`` turns back into ``value`` (a form's default): a ``str``
    field's value as it is, else JSON.  "" for a secret or a value JSON cannot write."""
    if is_secret(value):
        return ""
    if takes_text(annotation) and isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return ""


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
    """A parameter whose text value (``-p``, the run-now form) is taken as text, never parsed as
    JSON: a ``str`` (``str | None`` too, a str Enum, a ``Literal`` of strings, a path), or a
    secret (a secret that looks like a number stays the text it was, and is never shown in an error)."""
    if annotation is str:
        return True
    options = [a for a in typing.get_args(annotation) if a is not type(None)] if _is_union(annotation) else [annotation]
    if len(options) != 1:
        return False
    if typing.get_origin(options[0]) is typing.Literal:  # Literal["eu", "us"]: text; Literal[1, 2]: parsed
        return all(isinstance(choice, str) for choice in typing.get_args(options[0]))
    if typing.get_origin(options[0]) is not None:  # pydantic.Secret[str]: text; Secret[int]: parsed
        return is_secret_annotation(options[0]) and typing.get_args(options[0]) in ((str,), (bytes,))
    # str and its subclasses (a str Enum), paths, secrets: "2024" is a name, never a number
    return isinstance(options[0], type) and issubclass(options[0], (str, pathlib.PurePath, SecretStr, SecretBytes))


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)
