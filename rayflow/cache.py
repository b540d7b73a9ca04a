"""Cache keys: when two calls of a task are the same call.

A task with ``cache_key_fn=`` looks its key up in the result store before it
runs: a result stored under that key (and younger than ``cache_expiration``)
ends the task CACHED with that value, without running it.  Two policies come
with rayflow, and any callable ``(context, arguments) -> str | None`` will do
(None: do not cache this call):

- ``rf.cache.inputs``: the task's code (its bytecode, constants and the
  values it closes over) and every argument's value.  It is computed in the
  worker from the values themselves, so a changed input is a miss even when
  the upstream task that made it did not change.  Hashing pickles each
  argument: cheap for small values, as costly as a copy for a big one.
- ``rf.cache.lineage``: the task's code, its constant arguments and the
  *lineage keys of its upstream tasks* (each their code, constants and
  upstream, recursively), computed in the driver when the plan is compiled.
  A big DataFrame produced upstream is never hashed or pickled for a key.
  Right when the upstream tasks are deterministic functions of what they are
  given; wrong when an upstream reads the outside world (a file, a database,
  the clock), whose changes lineage cannot see: use ``inputs`` there.

``rf.cache.inputs.ignoring("client")`` leaves an argument out of the key, and
``policy_a + policy_b`` keys on both.  An argument that cannot be pickled
(a lock, a client, a generator) makes the call run uncached, with one warning
naming it, rather than cache on a partial key.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from rayflow.results_layout import is_segment
from rayflow.states import error_text


class Uncacheable(Exception):
    """An argument cannot be part of a cache key; ``argument`` names it."""

    def __init__(self, argument: str, reason: str):
        super().__init__(f"argument '{argument}' cannot be hashed for a cache key ({reason})")
        self.argument = argument


@dataclass(frozen=True)
class CacheContext:
    """What a key function knows besides the arguments."""

    flow_name: str
    task_key: str
    task_name: str
    fn: Callable[..., Any]
    lineage_key: str  # code + constant arguments + upstream lineage keys, from the plan
    upstream: Mapping[str, str] = field(default_factory=dict)  # argument name -> its upstream's lineage key


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """A digest of what a callable runs: its bytecode and constants (nested functions and lambdas
    included), the names it uses, its defaults and the values it closes over; for a bound method
    also its object, for a decorated function every wrapper's closure too, for a
    ``functools.partial`` its function and bound arguments, for a callable object the object.

    Not included: code reached through global names (a helper function in another module, say):
    changing such a helper does not change the key.  Stable across processes: sets and
    frozensets are ordered before they are hashed.
    """
    digest = hashlib.sha256()
    _digest_callable(digest, fn, set())
    return digest.hexdigest()


def code_digest(fn: Callable[..., Any]) -> str:
    """A digest of a function's code alone (bytecode, names, constants, nested code; through
    ``functools.wraps`` wrappers): stable across processes, cheap, blind to closed-over values."""
    digest = hashlib.sha256()
    for layer in (fn, *_wrapped(fn)):
        code = getattr(layer, "__code__", None)
        digest.update(repr(getattr(layer, "__qualname__", type(layer).__qualname__)).encode())
        if code is not None:
            _digest_code(digest, code)
    return digest.hexdigest()


def _wrapped(fn: Any) -> list[Any]:
    out: list[Any] = []
    while (fn := getattr(fn, "__wrapped__", None)) is not None and len(out) < 20:
        out.append(fn)
    return out


def _digest_callable(digest: Any, fn: Any, seen: set[int]) -> None:
    if id(fn) in seen:  # a recursive closure, or a cycle of wrappers
        digest.update(b"<seen>")
        return
    seen.add(id(fn))
    if isinstance(fn, functools.partial):
        digest.update(b"<partial>")
        _digest_callable(digest, fn.func, seen)
        digest.update(_value_bytes("<partial arguments>", (fn.args, fn.keywords)))
        return
    if isinstance(fn, types.MethodType):
        digest.update(b"<method>")
        digest.update(_closure_bytes(fn.__self__, seen))
        _digest_callable(digest, fn.__func__, seen)
        return
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object or a builtin: the object itself
        digest.update(repr(type(fn)).encode())
        digest.update(_value_bytes("<callable>", fn))
        return
    _digest_code(digest, code)
    digest.update(_value_bytes("<defaults>", (fn.__defaults__, fn.__kwdefaults__)))
    for cell in fn.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        digest.update(_closure_bytes(contents, seen))
    wrapped = getattr(fn, "__wrapped__", None)
    if wrapped is not None:  # functools.wraps: the function inside counts too
        digest.update(b"<wrapped>")
        _digest_callable(digest, wrapped, seen)


def _digest_code(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _digest_code(digest, const)
        else:
            digest.update(_value_bytes("<constant>", const))


def _closure_bytes(value: Any, seen: set[int]) -> bytes:
    if callable(value) and (isinstance(value, (types.FunctionType, types.MethodType, functools.partial))):
        inner = hashlib.sha256()
        _digest_callable(inner, value, seen)
        return inner.digest()
    try:
        return _value_bytes("<closure>", value)
    except Uncacheable:
        return repr(type(value)).encode()  # a client held in a closure: its type, not its state


def _canonical(value: Any) -> Any:
    """Sets and frozensets as sorted tuples (their order varies with hash randomisation)."""
    if isinstance(value, (set, frozenset)):
        items = [_canonical(v) for v in value]
        return (type(value).__name__, tuple(sorted(items, key=lambda v: pickle.dumps(v, protocol=5))))
    if type(value) in (list, tuple):
        return type(value)(_canonical(v) for v in value)
    if type(value) is dict:
        return {k: _canonical(v) for k, v in value.items()}
    return value


def _value_bytes(name: str, value: Any) -> bytes:
    try:
        value = _canonical(value)
    except Exception:  # noqa: BLE001 - unorderable members: pickled as they are
        pass
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:  # noqa: BLE001 - plain pickle cannot: functions, classes defined in scripts
        pass
    try:
        return cloudpickle.dumps(value, protocol=5)
    except Exception as exc:  # noqa: BLE001 - a lock, a socket, a generator
        raise Uncacheable(name, error_text(type(exc).__name__, str(exc))) from None


class CachePolicy:
    """A cache key function; ``+`` combines two, ``ignoring(...)`` leaves arguments out."""

    def __init__(self, ignored: frozenset[str] = frozenset()):
        self.ignored = ignored

    def ignoring(self, *names: str) -> CachePolicy:
        return type(self)(self.ignored | frozenset(names))

    def key(self, context: CacheContext, arguments: Mapping[str, Any]) -> str | None:
        parts = self.parts(context, arguments)
        if parts is None:
            return None
        text = "\0".join(f"{name}={value}" for name, value in sorted(parts.items()))
        return hashlib.sha256(f"{type(self).__name__}\0{text}".encode()).hexdigest()

    def parts(self, context: CacheContext, arguments: Mapping[str, Any]) -> dict[str, str] | None:
        """What the key is made of, by name (kept beside a cache entry, to explain a later miss)."""
        raise NotImplementedError

    def explained(self, context: CacheContext, arguments: Mapping[str, Any]) -> tuple[str | None, dict[str, str] | None]:
        """(key, parts) for these arguments, the ignored ones left out."""
        kept = {k: v for k, v in arguments.items() if k not in self.ignored}
        parts = self.parts(context, kept)
        return self.key(context, kept) if parts is not None else None, parts

    def __call__(self, context: CacheContext, arguments: Mapping[str, Any]) -> str | None:
        return self.explained(context, arguments)[0]

    def __add__(self, other: Callable[..., Any]) -> CachePolicy:
        return _Both(self, other)

    def __reduce__(self) -> Any:
        return (type(self), (self.ignored,))

    def __repr__(self) -> str:
        extra = f".ignoring({', '.join(map(repr, sorted(self.ignored)))})" if self.ignored else ""
        return f"rf.cache.{type(self).__name__.lower()}{extra}"


class Inputs(CachePolicy):
    """The task's code and the value of every argument."""

    def parts(self, context: CacheContext, arguments: Mapping[str, Any]) -> dict[str, str] | None:
        out = {"code": code_fingerprint(context.fn)}
        for name, value in arguments.items():
            out[f"input {name}"] = hashlib.sha256(_value_bytes(name, value)).hexdigest()
        return out


class Lineage(CachePolicy):
    """The task's code, its constant arguments and its upstream tasks' lineage keys."""

    def parts(self, context: CacheContext, arguments: Mapping[str, Any]) -> dict[str, str] | None:
        return {"lineage": context.lineage_key}  # computed by the plan without the ignored arguments

    def key(self, context: CacheContext, arguments: Mapping[str, Any]) -> str | None:
        return context.lineage_key


class _Both(CachePolicy):
    def __init__(self, first: Callable[..., Any], second: Callable[..., Any]):
        super().__init__()
        self.first, self.second = first, second

    def explained(self, context: CacheContext, arguments: Mapping[str, Any]) -> tuple[str | None, dict[str, str] | None]:
        (a, pa), (b, pb) = (_explained(p, context, arguments) for p in (self.first, self.second))
        if a is None or b is None:
            return None, None
        parts = {**(pa or {}), **(pb or {})} if pa is not None and pb is not None else None
        return hashlib.sha256(f"{a}\0{b}".encode()).hexdigest(), parts

    def __reduce__(self) -> Any:
        return (_Both, (self.first, self.second))

    def __repr__(self) -> str:
        return f"{self.first!r} + {self.second!r}"


def _explained(policy: Callable[..., Any], context: CacheContext, arguments: Mapping[str, Any]) -> tuple[str | None, dict[str, str] | None]:
    if isinstance(policy, CachePolicy):
        return policy.explained(context, arguments)
    return policy(context, arguments), None  # a plain key function: no parts to explain a miss with


def explain_miss(parts: Mapping[str, str], earlier: Mapping[str, str]) -> str:
    """Which part of a key differs from an earlier entry's: the code, inputs, or the lineage."""
    if parts.get("code") is not None and earlier.get("code") not in (None, parts["code"]):
        return "the code changed"
    changed = sorted(k.split(" ", 1)[1] for k in parts if k.startswith("input ") and earlier.get(k) != parts[k])
    gone = sorted(k.split(" ", 1)[1] for k in earlier if k.startswith("input ") and k not in parts)
    if changed or gone:
        return "input " + ", ".join(f"'{n}'" for n in changed + gone) + " changed"
    if parts.get("lineage") is not None and earlier.get("lineage") != parts["lineage"]:
        return "the lineage changed (this task's code or constants, or an upstream task's)"
    return "the key changed"


inputs = Inputs()
lineage = Lineage()


def lineage_key(fn: Callable[..., Any], constants: Any, upstream_keys: tuple[str, ...]) -> str:
    """The lineage key of a task: its code, its constant arguments (upstream refs replaced by
    their names; arguments a policy ignores left out) and its upstream tasks' lineage keys."""
    digest = hashlib.sha256(b"lineage\0")
    digest.update(code_fingerprint(fn).encode())
    try:
        digest.update(_value_bytes("<constants>", constants))
    except Uncacheable:
        digest.update(repr(constants).encode())
    for key in upstream_keys:
        digest.update(key.encode() + b"\0")
    return digest.hexdigest()


# -- which of a mapped task's cached segments a run reads (engine.worker.item_cache) -------


def snapshot(store: Any, folder: str, expiration: float | None, *, now: float | None = None) -> tuple[str, ...]:
    """The segments a run may read, oldest first (their names start with the time they were
    written): every one in ``folder`` (``results_layout.segment_folder``) younger than ``expiration``."""
    now = time.time() if now is None else now
    out = []
    for info in store.list(folder):
        if not is_segment(info.path.rsplit("/", 1)[-1]):
            continue
        if expiration is not None and (info.mtime is None or now - info.mtime > expiration):
            continue
        out.append(info.path)
    return tuple(sorted(out, key=lambda p: p.rsplit("/", 1)[-1]))
