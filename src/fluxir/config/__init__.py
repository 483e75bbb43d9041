"""Typed configuration of params.yaml (schema), named presets (profiles) and the `fluxir config` commands.

Modules: ``base`` (strict types, the section decorator, ConfigError), ``schema`` (the sections and
Config), ``degradation`` (the degradation values, defined once, and the degrade section), ``pretrain`` (the
mini base's training), ``messages``
(pydantic errors as one line), ``loading`` (files and overrides), ``presets`` (profiles and the generated
params.yaml), ``commands`` (``fluxir config check|show|write-defaults``). This is the bottom layer: it
imports only ``fluxir.errors`` and ``fluxir.io``.
"""

from fluxir.config.base import ConfigError, field_docs, to_dict
from fluxir.config.degradation import (
    DegradationFields,
    DegradeConfig,
    DegradeOverrides,
    degradation_param_fields,
)
from fluxir.config.loading import apply_override, config_from_dict, load_config, parse_override
from fluxir.config.pretrain import PretrainConfig
from fluxir.config.schema import (
    BUILTIN_METHODS,
    AblateConfig,
    BenchmarkConfig,
    BenchmarkDataset,
    Config,
    FilterConfig,
    GenerateConfig,
    ModelConfig,
    RestoreConfig,
    ScoreConfig,
    SRModel,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "BUILTIN_METHODS",
    "AblateConfig",
    "BenchmarkConfig",
    "BenchmarkDataset",
    "Config",
    "ConfigError",
    "DegradationFields",
    "DegradeConfig",
    "DegradeOverrides",
    "FilterConfig",
    "GenerateConfig",
    "ModelConfig",
    "PretrainConfig",
    "RestoreConfig",
    "SRModel",
    "ScoreConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_override",
    "config_from_dict",
    "degradation_param_fields",
    "field_docs",
    "load_config",
    "parse_override",
    "to_dict",
]
