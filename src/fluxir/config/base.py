"""The building blocks of every config section: strict value types, the ``section`` decorator, ConfigError.

Sections are **pydantic v2 dataclasses**, not ``BaseModel``s. Callers and tests treat configs as
dataclasses (``dataclasses.replace(cfg.degrade, sizes=...)``, ``dataclasses.asdict``,
``dataclasses.fields``, ``dataclasses.is_dataclass`` in the MLflow logger), and pydantic dataclasses keep
all of that working unchanged while validating on construction: ``dataclasses.replace`` re-validates the
copy. Settings shared by every section (``SETTINGS``):

* ``extra="forbid"``: an unknown key is an error that names the allowed ones;
* ``frozen=True``: a config is a value; a variant is made with ``dataclasses.replace`` (validated), so no
  assignment can leave a section in a state its cross-field checks would refuse;
* ``allow_inf_nan=False``: NaN and inf are refused everywhere;
* ``use_attribute_docstrings=True``: the docstring under each field is its description (the help that
  ``fluxir config show`` prints and params.yaml carries as comments).

Scalars are strict (``Int``, ``Float``, ``Bool``, ``Str``): ``"3"`` is not an integer, ``true`` is not a
number, ``1.5`` is not an integer; an integer is accepted where a number is expected (and becomes a
float). Strictness is set per type rather than with ``strict=True`` on the config, because strict mode
would also refuse a mapping where a nested section is expected.

A section that fails validation raises :class:`ConfigError` with one line in the ``key=value: must be ...``
style, whether it was built from params.yaml or directly in code (``RestoreConfig(tile=10)``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic import dataclasses as pydantic_dataclasses

from fluxir.config.messages import ConfigError, one_line

__all__ = [
    "SETTINGS",
    "Bool",
    "ConfigError",
    "Device",
    "Float",
    "Int",
    "Str",
    "field_docs",
    "section",
    "to_dict",
]

SETTINGS = ConfigDict(
    extra="forbid",
    frozen=True,
    allow_inf_nan=False,
    use_attribute_docstrings=True,
)

Int = StrictInt
Float = StrictFloat
Bool = StrictBool
Str = StrictStr


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,3})?)$")


def _device(value: str) -> str:
    # checked whole: 'cuda:abc' or 'cudax' would otherwise pass here and fail deep inside torch
    if not _DEVICE.match(value):
        raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return value


Device = Annotated[StrictStr, AfterValidator(_device)]
"""A torch device name: 'auto' (cuda if available, else cpu), 'cpu', 'cuda' or 'cuda:N'."""

T = TypeVar("T")


def _none_is_empty(cls: type, data: Any) -> Any:
    # `model:` with nothing under it is YAML null: the section with its defaults, as an empty mapping would be
    return {} if data is None else data


def section(key: str):
    """Class decorator: a frozen pydantic dataclass with ``SETTINGS`` whose errors are one-line ConfigErrors.

    ``key`` is the section's dotted place in params.yaml (``"restore"``, ``"degrade.overrides"``); it
    prefixes the keys in the messages of a section built directly in code.
    """

    def wrap(cls: type[T]) -> type[T]:
        cls._none_is_empty = model_validator(mode="before")(classmethod(_none_is_empty))  # type: ignore[attr-defined]
        cls = pydantic_dataclasses.dataclass(cls, config=SETTINGS)
        validated_init = cls.__init__

        @functools.wraps(validated_init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                validated_init(self, *args, **kwargs)
            except ValidationError as exc:
                names = [f.name for f in dataclasses.fields(cls)]
                raw = dict(zip(names, args, strict=False)) | kwargs
                raise ConfigError(one_line(exc, cls, raw, prefix=key)) from None

        cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return wrap


def field_docs(cls: type) -> dict[str, str]:
    """The one-line help of each field of a config section (its attribute docstring)."""
    return {name: info.description or "" for name, info in cls.__pydantic_fields__.items()}  # type: ignore[attr-defined]


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for logging the resolved config to MLflow and to files)."""
    return dataclasses.asdict(cfg)
