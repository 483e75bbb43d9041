"""Defaults live once, in the schema: params.yaml and the profiles are generated from it and checked here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from fluxir.cli import main
from fluxir.config import (
    Config,
    ConfigError,
    DegradationFields,
    DegradeOverrides,
    RestoreConfig,
    apply_override,
    config_from_dict,
    degradation_param_fields,
    field_docs,
    load_config,
    to_dict,
)
from fluxir.config.presets import PAPER, default_value, profiles, render_params, render_profile

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "configs" / "profiles"
REGENERATE = "differs from the schema; run `fluxir config write-defaults` and commit the result"


def test_params_yaml_is_generated_from_the_schema():
    assert (REPO / "params.yaml").read_text(encoding="utf-8") == render_params(), f"params.yaml {REGENERATE}"


def test_params_yaml_loads_to_the_default_config_and_sets_every_key():
    assert load_config(REPO / "params.yaml") == Config()
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for section, values in to_dict(Config()).items():
        written = {k for k, v in values.items() if not isinstance(v, dict)}  # overrides: {} sets none
        assert written <= set(raw[section]), f"params.yaml {section}: keys missing (DVC would not track them)"


def test_profile_files_are_generated_from_the_presets():
    assert sorted(p.stem for p in PROFILES.glob("*.yaml")) == sorted(profiles())
    for name in profiles():
        assert (PROFILES / f"{name}.yaml").read_text(encoding="utf-8") == render_profile(name), (
            f"configs/profiles/{name}.yaml {REGENERATE}"
        )


def test_tiny_is_the_defaults_of_the_keys_every_profile_sets():
    named = profiles()
    assert all(set(values) == set(named["tiny"]) for values in named.values())
    assert named["tiny"] == {key: default_value(key) for key in PAPER}
    assert named["tiny"]["generate.num_images"] == Config().generate.num_images == 48


@pytest.mark.parametrize("name", sorted(profiles()))
def test_every_profile_key_exists_in_the_schema_and_validates(name):
    values = yaml.safe_load((PROFILES / f"{name}.yaml").read_text(encoding="utf-8"))
    raw = to_dict(Config())
    for dotted, value in values.items():
        default_value(dotted)  # KeyError names a key the schema does not have
        apply_override(raw, dotted, value)
    cfg = to_dict(config_from_dict(raw))
    for dotted, value in values.items():
        section, key = dotted.split(".")
        assert cfg[section][key] == value, f"{name}: {dotted} did not land as written"


def test_unknown_profile_key_is_named():
    with pytest.raises(KeyError, match="generate.num_image: not a key of params.yaml"):
        default_value("generate.num_image")


def test_write_defaults_writes_the_files_and_check_reports_a_stale_one(tmp_path, capsys):
    params, folder = tmp_path / "params.yaml", tmp_path / "profiles"
    args = ["config", "write-defaults", "--params", str(params), "--profiles", str(folder)]
    assert main(args) == 0
    assert params.read_text(encoding="utf-8") == render_params()
    assert (folder / "paper.yaml").read_text(encoding="utf-8") == render_profile("paper")
    assert main([*args, "--check"]) == 0
    params.write_text(params.read_text(encoding="utf-8").replace("num_images: 48", "num_images: 50"))
    capsys.readouterr()
    assert main([*args, "--check"]) == 1
    assert "params.yaml: differs from the schema's defaults" in capsys.readouterr().out
    assert "num_images: 50" in params.read_text(encoding="utf-8"), "--check writes nothing"


def test_generated_params_carry_help_and_paper_values():
    text = render_params()
    assert "  # Images per shard folder (shard_000/, shard_001/, ...); 1000 at paper scale.\n" in text
    assert "num_images: 48" in text and "# paper: 350000" in text
    assert yaml.safe_load(text)["degrade"]["overrides"] == {}


def test_show_prints_every_key_with_its_help(capsys):
    assert main(["config", "show", "--params", str(REPO / "params.yaml")]) == 0
    out = capsys.readouterr().out
    for section in dataclasses.fields(Config):
        cls = type(getattr(Config(), section.name))
        for name, doc in field_docs(cls).items():
            assert f"{name}: " in out and f"# {doc}" in out, (
                f"{section.name}.{name} is not shown with its help"
            )
    assert "    noise_range: None  # First noise: [lo, hi] Gaussian sigma on the 0-255 scale." in out


def test_degradation_values_are_defined_once():
    names = [f.name for f in dataclasses.fields(DegradationFields)]
    assert [f.name for f in dataclasses.fields(DegradeOverrides)] == names
    assert [name for name, _ in degradation_param_fields()] == names
    assert field_docs(DegradeOverrides) == field_docs(DegradationFields)
    assert all(field_docs(DegradationFields).values())
    assert to_dict(DegradeOverrides()) == dict.fromkeys(names)
    from fluxir.degradation.presets import DegradationParams

    assert [f.name for f in dataclasses.fields(DegradationParams)] == names


def test_overrides_keep_the_ranges_of_the_definition():
    with pytest.raises(ConfigError, match=r"^degrade.overrides.usm_radius=0: must be in \[1, 1001\]$"):
        config_from_dict({"degrade": {"overrides": {"usm_radius": 0}}})
    with pytest.raises(ConfigError, match=r"^degrade.overrides.gt_usm=1: must be true or false or null$"):
        config_from_dict({"degrade": {"overrides": {"gt_usm": 1}}})


def test_restore_options_are_the_restore_section():
    from fluxir.restoration.pipeline import RestoreOptions

    assert RestoreOptions is RestoreConfig
    assert RestoreOptions(4, 2, 3.5, 64, 16) == RestoreConfig(steps=2, tile=64, overlap=16)
    with pytest.raises(ConfigError, match=r"^restore.tile=120: must be a multiple of 16$"):
        RestoreOptions(tile=120, overlap=16)
