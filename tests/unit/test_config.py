"""Config loading and validation: every kind of bad value fails up front with one line naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from fluxir.config import (
    Config,
    ConfigError,
    ModelConfig,
    config_from_dict,
    field_docs,
    load_config,
    parse_override,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repo_params_file_is_valid_and_matches_defaults():
    cfg = load_config(REPO / "params.yaml")
    assert isinstance(cfg, Config)
    assert cfg.model.base == "tiny"
    assert cfg.model.max_sequence_length == 512


def test_good_file_with_values_is_typed(tmp_path):
    cfg = load_config(write(tmp_path, "model:\n  base: /models/flux\n  tiny_seed: 7\n  dtype: bfloat16\n"))
    assert cfg.model == ModelConfig(base="/models/flux", tiny_seed=7, dtype="bfloat16")
    assert cfg.tracking.experiment == "fluxir"  # untouched section keeps its defaults


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  bse: tiny\n", "model.bse: unknown key; allowed keys are base, tiny_dir"),
        ("modle:\n  base: tiny\n", "modle: unknown key; allowed keys are model, tracking"),
        ("model:\n  tiny_seed: seven\n", "model.tiny_seed='seven': must be an integer"),
        ("model:\n  tiny_seed: 1.5\n", "model.tiny_seed=1.5: must be an integer"),
        ("model:\n  tiny_seed: true\n", "model.tiny_seed=True: must be an integer"),
        ("model:\n  tiny_seed: -1\n", "model.tiny_seed=-1: must be in [0, inf)"),
        ("model:\n  max_sequence_length: 0\n", "model.max_sequence_length=0: must be in [1, 512]"),
        ("model:\n  max_sequence_length: 513\n", "model.max_sequence_length=513: must be in [1, 512]"),
        ("model:\n  dtype: fp8\n", "model.dtype='fp8': must be one of 'float32', 'bfloat16', 'float16'"),
        ("model:\n  device: tpu\n", "model.device='tpu': must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("model:\n  base: 3\n", "model.base=3: must be a string"),
        ("model: [1, 2]\n", "model=[1, 2]: must be a mapping"),
        ("- a\n- b\n", "must be a mapping of sections"),
        ("model:\n  base: [unclosed\n", "is not valid YAML"),
    ],
)
def test_bad_values_fail_with_one_line_naming_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="params file not found; run from the project root"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_applied_and_validated(tmp_path):
    path = write(tmp_path, "model:\n  tiny_seed: 1\n")
    assert load_config(path, {"model.tiny_seed": 5}).model.tiny_seed == 5
    with pytest.raises(ConfigError, match=r"model.tiny_seed=-2: must be in \[0, inf\)"):
        load_config(path, {"model.tiny_seed": -2})
    assert parse_override("model.dtype=bfloat16") == ("model.dtype", "bfloat16")
    assert parse_override("model.tiny_seed=3") == ("model.tiny_seed", 3)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("model.tiny_seed")


def test_every_field_of_every_section_has_a_docstring():
    for section in dataclasses.fields(Config):
        cls = section.type if isinstance(section.type, type) else type(getattr(Config(), section.name))
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{section.name}: fields without a docstring: {missing}"


def test_params_yaml_sets_only_known_sections():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(raw) <= {f.name for f in dataclasses.fields(Config)}
    config_from_dict(raw)  # and it validates
