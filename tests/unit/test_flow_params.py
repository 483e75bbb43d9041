"""A Prefect deployment run is refused before anything runs when it names another project or a path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fluxir.config import ConfigError
from fluxir.config.remote import check_remote_overrides, is_path_like, settable_keys
from fluxir.errors import UserError
from fluxir.orchestration import flow_params

REPO = Path(__file__).resolve().parents[2]


def _all_keys() -> list[str]:
    import dataclasses

    from fluxir.config import Config

    keys: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            tp = cls.__pydantic_fields__[f.name].annotation  # type: ignore[attr-defined]
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                keys.append(f"{prefix}{f.name}")

    walk(Config, "")
    return keys


def test_every_path_like_setting_of_the_schema_is_refused() -> None:
    path_keys = [k for k in _all_keys() if is_path_like(k.rsplit(".", 1)[-1])]
    # the kind, not a list: whatever the schema calls *_dir, *manifest*, *_file, base, uri ... today
    for expected in ("generate.out_dir", "score.in_manifest", "train.deepspeed_config", "model.base",
                     "model.tiny_dir", "tracking.uri", "generate.prompts_file", "train.cache_dir"):  # fmt: skip
        assert expected in path_keys
    allowed = settable_keys()
    for key in path_keys:
        assert key not in allowed
        with pytest.raises(ConfigError, match="path or location setting"):
            check_remote_overrides({key: "/tmp/elsewhere"})


@pytest.mark.parametrize(
    "key", ["benchmark.datasets", "benchmark.sr_models", "generate.source", "score.metrics"]
)
def test_sections_with_paths_and_free_text_are_refused(key: str) -> None:
    with pytest.raises(ConfigError):
        check_remote_overrides({key: []})


def test_unknown_keys_and_non_mappings_are_refused() -> None:
    with pytest.raises(ConfigError, match="not a setting the flow accepts"):
        check_remote_overrides({"generate.nope": 1})
    with pytest.raises(ConfigError, match="mapping"):
        check_remote_overrides(["generate.num_images"])


def test_numbers_and_choices_pass_and_values_are_range_checked() -> None:
    assert check_remote_overrides({"generate.num_images": 4, "train.engine": "torch"})
    with pytest.raises(ConfigError, match="generate.width"):
        flow_params.flow_settings(REPO, "tiny", {"generate.width": 1})


def test_foreign_project_and_bad_shard_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="only the project it was served from"):
        flow_params.served_project(str(tmp_path), REPO)
    assert flow_params.served_project(".", REPO) == REPO
    with pytest.raises(UserError, match="shard_deployment"):
        flow_params.check_shards(2, "attacker/deployment", None)
    with pytest.raises(UserError, match="shard_url"):
        flow_params.check_shards(2, None, "s3://bucket/../x")
    with pytest.raises(UserError, match="run_key"):
        flow_params.check_run_key("../../x")
    with pytest.raises(UserError, match="profile"):
        flow_params.flow_settings(REPO, "../evil", {})


@pytest.fixture
def flow_module(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("prefect")
    monkeypatch.syspath_prepend(str(REPO / "flows"))
    import fluxir_flow

    ran: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        ran.append(args)
        raise AssertionError(f"a command ran: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    yield fluxir_flow, ran
    sys.modules.pop("fluxir_flow", None)


@pytest.mark.parametrize(
    "params",
    [
        {"project_dir": "/tmp/attacker"},
        {"overrides": {"generate.out_dir": "/tmp/attacker"}},
        {"overrides": {"train.deepspeed_config": "/tmp/attacker/ds.json"}},
        {"overrides": {"model.base": "/tmp/attacker/model"}},
        {"shard_deployment": "attacker/run-anything"},
    ],
)
def test_the_deployment_flow_refuses_before_running_anything(flow_module, params: dict) -> None:
    module, ran = flow_module
    params_file = REPO / "params.yaml"
    before = params_file.read_bytes()
    with pytest.raises(UserError):
        module.fluxir.fn(**params)
    assert ran == []
    assert params_file.read_bytes() == before


def test_the_shard_flow_refuses_paths_in_its_run_key(flow_module) -> None:
    module, ran = flow_module
    with pytest.raises(UserError, match="run_key"):
        module.shard.fn("generate", 0, 4, "../../../home", overrides={})
    with pytest.raises(UserError, match="project_dir"):
        module.shard.fn("generate", 0, 4, "key", overrides={}, project_dir="/tmp/attacker")
    assert ran == []
