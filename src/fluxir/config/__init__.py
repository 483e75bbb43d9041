"""Typed configuration of params.yaml (schema), named presets (profiles) and the `fluxir config` commands."""

from fluxir.config.schema import *  # noqa: F403
from fluxir.config.schema import (  # noqa: F401
    ConfigError,
    apply_override,
    config_from_dict,
    field_docs,
    load_config,
    parse_override,
    to_dict,
)
