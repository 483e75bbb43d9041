"""The mini profile's own pipeline: generated from dvc.yaml, its data and reports under the profile."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from fluxir.config import load_config, to_dict
from fluxir.config.presets import pipeline_config, remap_path
from fluxir.orchestration import profile_pipeline

REPO = Path(__file__).resolve().parents[2]


def strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def test_remap_moves_only_data_and_reports_paths():
    assert remap_path("data/generate", "mini") == "data/mini/generate"
    assert remap_path("reports", "mini") == "reports/mini"
    assert remap_path("database/x", "mini") == "database/x"  # not the data/ folder
    assert remap_path("configs/deepspeed/zero2.json", "mini") == "configs/deepspeed/zero2.json"
    assert remap_path("sqlite:///mlruns.db", "mini") == "sqlite:///mlruns.db"


def test_the_committed_mini_pipeline_is_what_the_generator_writes(monkeypatch):
    monkeypatch.chdir(REPO)
    assert (REPO / "mini" / "dvc.yaml").read_text() == profile_pipeline.render("mini")
    assert profile_pipeline.main(["mini", "--check"]) == 0


def test_mini_pipeline_keeps_its_outputs_under_the_profile():
    stages = yaml.safe_load((REPO / "mini" / "dvc.yaml").read_text())["stages"]
    assert list(stages)[0] == "pretrain" and "build-model" not in stages
    root = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(stages) - {"pretrain"} == set(root) - {"build-model"}
    for name, stage in stages.items():
        assert stage["wdir"] == ".." and stage["cmd"].endswith("--params mini/params.yaml")
        assert list(stage["params"][0]) == ["mini/params.yaml"]
        for entry in stage["outs"] + stage.get("metrics", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            assert path.startswith(("data/mini/", "reports/mini/")), (name, path)
        data_deps = [d for d in stage["deps"] if d.startswith("data/")]
        assert all(d.startswith("data/mini/") for d in data_deps), (name, data_deps)
    assert "data/mini/pretrain/photos" in stages["benchmark"]["deps"]


def test_mini_params_file_is_the_profile_with_its_paths_moved():
    cfg = load_config(REPO / "mini" / "params.yaml")
    assert cfg == pipeline_config("mini")
    # the base the chain loads is the folder the pretrain stage writes
    assert cfg.model.base == cfg.pretrain.out_dir == "data/mini/models/mini-flux"
    assert cfg.benchmark.datasets[0].hq_dir == "data/mini/pretrain/photos/held_out"
    assert cfg.model.max_sequence_length == cfg.pretrain.max_sequence_length
    paths = [s for s in strings(to_dict(cfg)) if s.startswith(("data", "reports"))]
    assert paths and all(s.startswith(("data/mini", "reports/mini")) for s in paths), paths
    # and nothing else than the profile's keys and the moved paths differs from the defaults
    tiny = load_config(REPO / "params.yaml")
    assert dataclasses.replace(cfg.restore) == tiny.restore
