"""Which settings a remote caller (a Prefect deployment's parameters) may override, derived from the schema.

A flow run's overrides come from anyone who can reach the Prefect API, so they are an allow-list: a
dotted key must name a leaf setting of :class:`~fluxir.config.schema.Config`, and that setting must be
neither path-like nor free text. Path-like is decided by the field's *name* (``*_dir``, ``*_file``,
``*manifest*``, ``*_config``, ``*_cache``, ``*_home``, ``base``, ``uri``, ...) so that a path setting
added later is refused without anyone remembering to list it; free text (a plain ``str`` or a list of
them, which could be a model id, a folder or a command-line word) is refused too, except the few
fields below that only name things. A list of nested sections (``benchmark.datasets``) is refused
when any of its fields is. Values are then checked by the schema itself (ranges, types, cross-field).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from fluxir.config.base import ConfigError
from fluxir.config.schema import Config

PATH_NAME = re.compile(
    r"(_dir|_dirs|_file|_files|_path|_config|_cache|_home|_url|_uri)$|manifest|^(base|uri|path|adapter|dataset|source|weights|checkpoint)$"
)
"""Field names that hold a path, a location or something loaded by name."""

SAFE_TEXT = frozenset({"tracking.experiment", "generate.prompt", "device"})
"""Free-text settings that only name things (matched by dotted key, or by field name for ``device``)."""


def is_path_like(name: str) -> bool:
    """Whether a field name (the last part of a dotted key) looks like a path or location setting."""
    return bool(PATH_NAME.search(name))


def _section_type(tp: Any) -> type | None:
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _leaf_types(tp: Any) -> list[Any]:
    """The scalar and section types inside an annotation (through Optional, list, Annotated)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _leaf_types(typing.get_args(tp)[0])
    if origin in (list, tuple, typing.Union) or str(origin) == "types.UnionType":
        return [t for arg in typing.get_args(tp) for t in _leaf_types(arg)]
    return [tp]


def _has_path(cls: type) -> bool:
    """Whether a section (or a section nested in it) has a path-like or free-text field."""
    for name, info in cls.__pydantic_fields__.items():  # type: ignore[attr-defined]
        if is_path_like(name):
            return True
        for leaf in _leaf_types(info.annotation):
            if (sub := _section_type(leaf)) is not None and _has_path(sub):
                return True
    return False


def settable_keys() -> dict[str, Any]:
    """Every dotted key a remote caller may override, with its annotation."""
    allowed: dict[str, Any] = {}

    def walk(cls: type, prefix: str) -> None:
        for name, info in cls.__pydantic_fields__.items():  # type: ignore[attr-defined]
            key, tp = f"{prefix}{name}", info.annotation
            if (sub := _section_type(tp)) is not None:
                walk(sub, f"{key}.")
                continue
            leaves = _leaf_types(tp)
            if is_path_like(name) or any(
                (s := _section_type(t)) is not None and _has_path(s) for t in leaves
            ):
                continue
            if str in leaves and key not in SAFE_TEXT and name not in SAFE_TEXT:
                continue
            allowed[key] = tp

    walk(Config, "")
    return allowed


def check_remote_overrides(overrides: Any) -> dict[str, Any]:
    """``overrides`` if every key is an allowed setting; ConfigError naming the first that is not.

    Only the keys are checked here; the values are validated with the whole config by the caller
    (``load_config(params, overrides)``), which enforces every declared range.
    """
    if overrides is None:
        return {}
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ConfigError("overrides: must be a mapping of dotted setting names to values")
    allowed = settable_keys()
    for key in overrides:
        if key in allowed:
            continue
        if is_path_like(key.rsplit(".", 1)[-1]) or key.rsplit(".", 1)[-1] in ("datasets", "sr_models"):
            raise ConfigError(
                f"overrides: {key!r} is a path or location setting and cannot be set through the flow; "
                "change it in params.yaml of the served project"
            )
        raise ConfigError(
            f"overrides: {key!r} is not a setting the flow accepts; allowed are numbers, switches and "
            "choices of the schema (see `fluxir config show`), never paths or free text"
        )
    return dict(overrides)
