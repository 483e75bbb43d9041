"""Typed configuration: one dataclass per top-level section of params.yaml.

Everything is validated up front, before any work starts: an unknown key, a value of the wrong type
or one out of range stops the run with a single line naming the key, the value and what is allowed,
e.g. ``score.keep_quantile=1.7: must be in (0, 1]``.

A field may carry a constraint in its metadata:
  ``interval("(0, 1]")``  numeric range, brackets say open/closed, ``inf`` allowed as a bound;
  ``Literal[...]`` in the annotation lists the allowed strings.
Every field has a one-line docstring right under it (read by ``fluxir config show``).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A params file that cannot be used; the message is one line naming key, value and the fix."""


def interval(spec: str) -> dict[str, Any]:
    """Field metadata for a numeric range written like ``"(0, 1]"`` or ``"[1, inf)"``."""
    spec = spec.strip()
    if spec[0] not in "([" or spec[-1] not in ")]":
        raise ValueError(f"bad interval spec {spec!r}")
    lo, hi = (float(part) for part in spec[1:-1].split(","))
    return {"interval": (spec, lo, hi, spec[0] == "(", spec[-1] == ")")}


# ----------------------------------------------------------------------------------------------
# Sections


@dataclass
class ModelConfig:
    base: str = "tiny"
    """Base text-to-image model: 'tiny' (random-weight FLUX architecture), a hub id or a local folder."""
    tiny_dir: str = "data/models/tiny-flux"
    """Folder where `fluxir models build-tiny` writes the tiny FLUX pipeline used when base is 'tiny'."""
    tiny_seed: int = field(default=0, metadata=interval("[0, inf)"))
    """Seed for the tiny model's random weights; the same seed gives bitwise-identical files."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weight dtype for the base model; bfloat16 on GPUs, float32 on CPU."""
    device: str = "auto"
    """Torch device for model work: 'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:N'."""
    max_sequence_length: int = field(default=512, metadata=interval("[1, 512]"))
    """T5 prompt length in tokens (FLUX.1-dev uses 512; it also sets the size of theta_p)."""

    def __post_init__(self) -> None:
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"model.device={self.device!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns.db"
    """MLflow tracking URI; the MLFLOW_TRACKING_URI environment variable overrides it."""
    experiment: str = "fluxir"
    """MLflow experiment name that runs are recorded under."""


@dataclass
class RestoreConfig:
    scale: int = field(default=4, metadata=interval("[1, 16]"))
    """Upscaling factor from the LQ input to the restored output (the paper trains x4)."""
    steps: int = field(default=20, metadata=interval("[1, 1000]"))
    """Flow-matching Euler sampling steps (paper: 20)."""
    guidance: float = field(default=3.5, metadata=interval("[0, 100]"))
    """Value fed to FLUX.1-dev's guidance embedding; must match what the adapter was trained with."""
    tile: int = field(default=1024, metadata=interval("[16, inf)"))
    """Tile size in output pixels (multiple of 16); larger outputs are restored tile by tile."""
    overlap: int = field(default=128, metadata=interval("[0, inf)"))
    """Overlap between neighbouring tiles in output pixels (multiple of 16); seams are blended."""
    seed: int = field(default=0, metadata=interval("[0, inf)"))
    """Seed of the initial noise; the same seed and input give the same output."""
    max_input_pixels: int = field(default=50_000_000, metadata=interval("[1, inf)"))
    """Refuse LQ inputs with more pixels than this (protects against decompression bombs)."""

    def __post_init__(self) -> None:
        for name in ("tile", "overlap"):
            if getattr(self, name) % 16:
                raise ConfigError(f"restore.{name}={getattr(self, name)}: must be a multiple of 16")
        if self.overlap >= self.tile:
            raise ConfigError(f"restore.overlap={self.overlap}: must be smaller than restore.tile={self.tile}")


@dataclass
class Config:
    """The whole params.yaml: one attribute per section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The base FLUX model (tiny or real) and where it runs."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking settings."""
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    """Restoring images with a trained adapter (`fluxir restore`)."""


# ----------------------------------------------------------------------------------------------
# Loading and validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against annotation ``tp``; return it (ints accepted for floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: must be one of {', '.join(repr(a) for a in allowed)}")
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r}: must be {_type_name(tp)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: must be {_type_name(tp)}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}={value!r}: must be null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: must be a string")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    raise TypeError(f"config field {key} has an unsupported annotation {tp!r}")


def _check_interval(key: str, value: Any, meta: dict[str, Any]) -> None:
    if "interval" not in meta or value is None:
        return
    spec, lo, hi, lo_open, hi_open = meta["interval"]
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            raise ConfigError(f"{key}={value!r}: must be in {spec}")
        below = v <= lo if lo_open else v < lo
        above = v >= hi if hi_open else v > hi
        if below or above:
            raise ConfigError(f"{key}={value!r}: must be in {spec}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}={raw!r}: must be a mapping of keys to values")
    hints = typing.get_type_hints(cls, include_extras=False)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{key}: unknown key; allowed keys are {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        value = _coerce(key, value, hints[name])
        _check_interval(key, value, fields[name].metadata)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a __post_init__ check that forgot to name its key
        raise ConfigError(f"{prefix}: {exc}") from exc


def config_from_dict(raw: dict[str, Any] | None) -> Config:
    """Validate a parsed params mapping and return the typed Config."""
    return _build(Config, raw or {}, "")


def load_config(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Config:
    """Read, merge ``overrides`` (dotted keys, e.g. ``{"score.keep_quantile": 0.9}``) and validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of sections (model:, tracking:, ...)")
    for dotted, value in (overrides or {}).items():
        apply_override(raw, dotted, value)
    return config_from_dict(raw)


def apply_override(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted == "a.b"``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: cannot set a key inside a non-mapping value")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read as YAML (``0.9``, ``true``, ``[1,2]``)."""
    if "=" not in text:
        raise ConfigError(f"{text!r}: overrides are written key=value, e.g. model.tiny_seed=3")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for logging the resolved config to MLflow and to files)."""
    return dataclasses.asdict(cfg)


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstring under each field of a config dataclass, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value.strip()
    return docs
