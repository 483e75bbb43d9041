"""Pydantic's ValidationError flattened into the one line a user reads: ``key=value: must be ...``.

Examples: ``score.keep_quantile=1.7: must be in (0, 1]``, ``model.tiny_seed='seven': must be an integer``,
``model.bse: unknown key; allowed keys are base, tiny_dir, ...``. The key is the dotted path in params.yaml
(list items as ``[i]``); the value is the one the user wrote (numbers where a number is expected shown as
floats, as the config holds them). A range is always shown whole, from the field's ``Field`` bounds,
and a range error on a list item names the whole list. Cross-field checks raise ConfigError with their own
full message, which is kept as it is. The first error is reported (unknown keys first): one fix at a time.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from fluxir.errors import UserError


class ConfigError(UserError, ValueError):
    """A params file that cannot be used; the message is one line naming key, value and the fix."""


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_UNKNOWN_KEY_ERRORS = {"unexpected_keyword_argument", "extra_forbidden"}


def one_line(exc: ValidationError, root: type, raw: Any, prefix: str = "") -> str:
    """The first error of ``exc`` (raised validating ``raw`` as ``root``) as one line naming its key."""
    errors = exc.errors()
    first = next((e for e in errors if e["type"] in _UNKNOWN_KEY_ERRORS), errors[0])
    loc = tuple(first["loc"])
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):  # a cross-field check: its message already names the keys
        return str(cause)
    tp, bounds = _resolve(root, loc)
    if first["type"] in _UNKNOWN_KEY_ERRORS:
        owner = _bare(_resolve(root, loc[:-1])[0])
        allowed = ", ".join(f.name for f in dataclasses.fields(owner)) if _is_section(owner) else "?"
        return f"{_key(prefix, loc)}: unknown key; allowed keys are {allowed}"
    if first["type"] in _BOUND_ERRORS:
        while loc and isinstance(loc[-1], int):  # a list item out of range: show the whole list
            loc = loc[:-1]
        whole, _ = _resolve(root, loc)
        value = _shown(_lookup(raw, loc, first["input"]), whole)
        return f"{_key(prefix, loc)}={value!r}: must be in {_interval(bounds)}"
    shown = "" if first["type"] == "missing" else f"={_shown(first['input'], tp)!r}"
    return f"{_key(prefix, loc)}{shown}: {_problem(first, tp, cause)}"


def _problem(error: Any, tp: Any, cause: BaseException | None) -> str:
    kind = error["type"]
    if cause is not None:  # a ValueError from a field validator says "must be ..."
        return str(cause)
    if kind == "literal_error":
        return "must be one of " + ", ".join(repr(a) for a in typing.get_args(_bare(tp)))
    if kind in ("dataclass_type", "dataclass_exact_type", "dict_type", "model_type"):
        return "must be a mapping of keys to values"
    if kind == "finite_number":
        return "must be a finite number (not NaN or inf)"
    if kind == "missing":
        return "must be set"
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "int_from_float":
        return f"must be {_describe(tp)}"
    if kind == "multiple_of":
        return f"must be a multiple of {error['ctx']['multiple_of']}"
    return "must be valid: " + error["msg"][:1].lower() + error["msg"][1:]


def _key(prefix: str, loc: tuple[Any, ...]) -> str:
    key = prefix
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key = f"{key}.{part}" if key else str(part)
    return key or "params"


def _lookup(raw: Any, loc: tuple[Any, ...], default: Any) -> Any:
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return default
    return node


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "__pydantic_fields__")


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """``tp`` without ``Annotated`` and ``| None`` wrappers, and the metadata found on the way."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            metadata += list(tp.__metadata__)
            tp = typing.get_args(tp)[0]
        elif origin in (types.UnionType, typing.Union):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp, metadata
            tp = args[0]
        else:
            return tp, metadata


def _bare(tp: Any) -> Any:
    return _unwrap(tp)[0]


def _resolve(root: type, loc: tuple[Any, ...]) -> tuple[Any, list[Any]]:
    """The annotation at ``loc`` under ``root`` (as written) and the constraint metadata that applies to it."""
    tp: Any = root
    metadata: list[Any] = []
    for part in loc:
        tp, _ = _unwrap(tp)
        if isinstance(part, str) and _is_section(tp):
            info: FieldInfo | None = tp.__pydantic_fields__.get(part)
            if info is None:
                return Any, []
            tp, metadata = info.annotation, list(info.metadata)
        elif isinstance(part, int) and typing.get_origin(tp) in (list, tuple):
            tp, metadata = (typing.get_args(tp) or (Any,))[0], []
        else:
            return Any, []
    return tp, metadata + _unwrap(tp)[1]


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            found |= _constraints(list(item.metadata))
            continue
        for name in ("ge", "gt", "le", "lt"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def _interval(metadata: list[Any]) -> str:
    """``[0, 1]``, ``(0, inf)``: the field's whole range written the way a reader expects."""
    bounds = _constraints(metadata)
    low = (
        f"[{_number(bounds['ge'])}"
        if "ge" in bounds
        else f"({_number(bounds['gt'])}"
        if "gt" in bounds
        else "(-inf"
    )
    high = (
        f"{_number(bounds['le'])}]"
        if "le" in bounds
        else f"{_number(bounds['lt'])})"
        if "lt" in bounds
        else "inf)"
    )
    return f"{low}, {high}"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(tp: Any) -> str:
    """'an integer', 'a list of numbers', 'a string or null': what a value of annotation ``tp`` looks like."""
    bare, _ = _unwrap(tp)
    nullable = typing.get_origin(tp) in (types.UnionType, typing.Union) and type(None) in typing.get_args(tp)
    origin = typing.get_origin(bare)
    if origin in (list, tuple):
        item = (typing.get_args(bare) or (Any,))[0]
        text = f"a list of {_plural(item)}"
    elif origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in typing.get_args(bare))
    else:
        text = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
            bare, "a mapping of keys to values" if _is_section(bare) else getattr(bare, "__name__", str(bare))
        )
    return text + (" or null" if nullable else "")


def _plural(tp: Any) -> str:
    bare, _ = _unwrap(tp)
    if typing.get_origin(bare) in (list, tuple):
        return "lists of " + _plural((typing.get_args(bare) or (Any,))[0])
    return {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}.get(
        bare, "mappings"
    )


def _shown(value: Any, tp: Any) -> Any:
    """``value`` as the config would hold it: integers given for numbers become floats."""
    bare, _ = _unwrap(tp)
    if bare is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(bare) in (list, tuple) and isinstance(value, list):
        item = (typing.get_args(bare) or (Any,))[0]
        return [_shown(v, item) for v in value]
    return value
