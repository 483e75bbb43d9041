"""Reading params files and ``--set`` overrides into a validated :class:`~fluxir.config.schema.Config`.

Every way a file can be unusable is one ConfigError line naming the file (and the line where YAML knows
it): missing, not UTF-8, empty, not YAML, a key written twice in one mapping (YAML would silently keep
the last one), not a mapping, or any value the schema refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fluxir.config.base import ConfigError
from fluxir.config.messages import one_line
from fluxir.config.schema import Config


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a mapping with the same key twice."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise ConfigError(
                f"line {line}: key {key!r} is set twice in one mapping (first on line {seen[key]})"
            )
        seen.setdefault(key, line)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(text: str, source: str) -> Any:
    """Parse ``text`` (from ``source``, named in errors) with duplicate keys refused."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{where} is not valid YAML ({problem})") from None


def read_params(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a params file (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or pass --params PATH")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    raw = read_yaml(text, str(path))
    if raw is None:
        raise ConfigError(
            f"{path}: the params file is empty; write the settings (`fluxir config write-defaults` makes a full file)"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of sections (model:, tracking:, ...)")
    return raw


def config_from_dict(raw: dict[str, Any] | None) -> Config:
    """Validate a parsed params mapping and return the typed Config."""
    raw = raw or {}
    try:
        return Config.__pydantic_validator__.validate_python(raw)  # type: ignore[attr-defined]
    except ValidationError as exc:
        raise ConfigError(one_line(exc, Config, raw)) from None


def load_config(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Config:
    """Read, merge ``overrides`` (dotted keys, e.g. ``{"score.keep_quantile": 0.9}``) and validate."""
    raw = read_params(path)
    for dotted, value in (overrides or {}).items():
        apply_override(raw, dotted, value)
    return config_from_dict(raw)


def apply_override(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted == "a.b"``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        if node.get(part) is None:  # absent, or written with nothing under it
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: cannot set a key inside a non-mapping value")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read as YAML (``0.9``, ``true``, ``[1,2]``)."""
    if "=" not in text:
        raise ConfigError(f"{text!r}: overrides are written key=value, e.g. model.tiny_seed=3")
    key, value = text.split("=", 1)
    return key.strip(), read_yaml(value, f"--set {key.strip()}")
