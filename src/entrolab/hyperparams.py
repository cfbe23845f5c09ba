"""Checking a component's hyperparameter values against the annotations of its constructor.

``Registry.build`` calls :func:`coerce` (through ``registry.check_value``) for every key of a
recipe block, so a value of the wrong type is a ConfigError naming the key and the value instead
of a TypeError deep inside the component (``'>=' not supported between 'str' and 'int'``).
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from typing import Any, Callable, Literal, Union


def factory_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations of a factory's parameters (a class: of its ``__init__``)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    if target is object.__init__:
        return {}
    try:
        return typing.get_type_hints(target)
    except Exception:  # a name only imported under TYPE_CHECKING, say: keep the plain (non-string) ones
        raw = getattr(target, "__annotations__", {}) or {}
        return {k: v for k, v in raw.items() if not isinstance(v, str)}


class Mismatch(Exception):
    """A hyperparameter value does not fit its annotation (``check_value`` turns it into a ConfigError)."""


def describe(ann: Any) -> str:
    """A short readable name of an annotation: ``float``, ``one of 'a', 'b'``, ``float or None``."""
    if ann is type(None):
        return "None"
    if isinstance(ann, type):
        return ann.__name__
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    return str(ann).replace("typing.", "").replace("collections.abc.", "")


def coerce(value: Any, ann: Any, *, allow_inf: bool) -> Any:
    """``value`` checked against ``ann`` (ints become floats where a float is expected); raises Mismatch.

    Only the annotations a YAML value can meet are checked (None, bool, int, float, str, Literal,
    unions, and tuple/list/Sequence/dict of those); anything else (a class, a callable, Any) is
    accepted as it is, for the component's own checks.
    """
    if ann is Any or ann is inspect.Parameter.empty:
        return value
    if ann is type(None) or ann is None:
        if value is None:
            return None
        raise Mismatch
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise Mismatch
    if origin in (Union, types.UnionType):
        for arm in args:
            try:
                return coerce(value, arm, allow_inf=allow_inf)
            except Mismatch:
                continue
        raise Mismatch
    if ann is bool or ann is str:
        if isinstance(value, ann):
            return value
        raise Mismatch
    if ann is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise Mismatch
    if ann is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Mismatch
        value = float(value)
        # NaN is never a hyperparameter; inf only where the default itself is infinite ("no limit").
        if math.isnan(value) or (math.isinf(value) and not allow_inf):
            raise Mismatch
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], allow_inf=allow_inf) for v in value)
        if args and len(args) != len(value):
            raise Mismatch
        return tuple(coerce(v, a, allow_inf=allow_inf) for v, a in zip(value, args)) if args else tuple(value)
    if origin in (list, collections.abc.Sequence):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise Mismatch
        items = [coerce(v, args[0], allow_inf=allow_inf) for v in value] if args else list(value)
        return items if origin is list else type(value)(items)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise Mismatch
        if not args:
            return value
        return {coerce(k, args[0], allow_inf=allow_inf): coerce(v, args[1], allow_inf=allow_inf)
                for k, v in value.items()}
    return value  # a class, a callable, ...: the component checks it


def expected(ann: Any, *, allow_inf: bool) -> str:
    """What ``ann`` accepts, for an error message: ``float (finite)``, ``int or None``, ..."""
    return describe(ann) + ("" if allow_inf or not _mentions_float(ann) else " (finite)")


def _mentions_float(ann: Any) -> bool:
    return ann is float or any(_mentions_float(a) for a in typing.get_args(ann))
