"""A profile with a pipeline of its own: ``<profile>/dvc.yaml``, derived from the root dvc.yaml.

The tiny demo (``dvc repro``) and the ``mini`` run (``dvc repro mini/dvc.yaml``, ``make demo-mini``) share
the stage graph but not their data: the profile's stages read ``<profile>/params.yaml`` (written by
``fluxir config write-defaults``) and keep their outputs under ``data/<profile>/`` and
``reports/<profile>/``, so both runs' results and lock files live side by side in one checkout.

The profile pipeline is generated, never edited by hand, so it cannot drift from the root one: every
stage's command gets ``--params <profile>/params.yaml``, its params come from that file, its data and
report paths move under the profile, and the root's ``build-model`` is replaced by the profile's base
stage (``pretrain`` for ``mini``: it trains the base model here). A test checks the committed file is what
:func:`render` writes.

    python -m fluxir.orchestration.profile_pipeline mini [--check]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from fluxir.config.presets import MINI_PHOTOS, remap_path

ROOT_PIPELINE = Path("dvc.yaml")
COMMON_DEPS = [
    "src/fluxir/__init__.py",
    "src/fluxir/errors.py",
    "src/fluxir/io.py",
    "src/fluxir/net.py",
    "src/fluxir/config",
    "src/fluxir/tracking",
    "src/fluxir/stages/__init__.py",
    "src/fluxir/stages/library_bars.py",
]

BASE_STAGES: dict[str, dict[str, dict[str, Any]]] = {
    "mini": {
        "pretrain": {
            "cmd": "python -m fluxir.stages.pretrain",
            "deps": [
                "src/fluxir/stages/pretrain.py",
                *COMMON_DEPS,
                "src/fluxir/pretrain",
                "src/fluxir/models/__init__.py",
                "src/fluxir/models/flux.py",
                "src/fluxir/models/tiny.py",
                "src/fluxir/data/__init__.py",
                "src/fluxir/data/images.py",
            ],
            "params": ["pretrain", "model"],
            # the work folder (checkpoints) is not an output: DVC would delete it before a rerun, and a
            # rerun resumes from it
            "outs": ["data/models", MINI_PHOTOS, {"reports/pretrain": {"cache": False}}],
        }
    }
}
"""What replaces the root's build-model stage in each profile pipeline (paths before the profile's remap)."""

EXTRA_DEPS: dict[str, dict[str, list[str]]] = {"mini": {"benchmark": [MINI_PHOTOS]}}
"""Inputs a profile's stage reads beyond the root's: mini's benchmark set is its held-out photos."""


def _remap_entries(entries: list[Any], profile: str) -> list[Any]:
    out: list[Any] = []
    for entry in entries:
        if isinstance(entry, dict):  # {path: {cache: false, ...}}
            out.append({remap_path(path, profile): options for path, options in entry.items()})
        else:
            out.append(remap_path(entry, profile))
    return out


def profile_stage(stage: dict[str, Any], profile: str) -> dict[str, Any]:
    """One root stage as the profile runs it (from the project root, with the profile's params file)."""
    params_file = f"{profile}/params.yaml"
    out: dict[str, Any] = {"wdir": "..", "cmd": f"{stage['cmd']} --params {params_file}"}
    out["deps"] = _remap_entries(stage.get("deps", []), profile)
    out["params"] = [{params_file: list(stage.get("params", []))}]
    for key in ("outs", "metrics"):
        if key in stage:
            out[key] = _remap_entries(stage[key], profile)
    return out


def profile_pipeline(root: dict[str, Any], profile: str) -> dict[str, Any]:
    """The whole ``<profile>/dvc.yaml`` from the root pipeline's mapping."""
    stages: dict[str, Any] = {}
    for name, stage in {**BASE_STAGES[profile], **root["stages"]}.items():
        if name == "build-model":
            continue  # the profile's base stage builds (or trains) the base model instead
        stage = copy.deepcopy(stage)
        stage.setdefault("deps", []).extend(EXTRA_DEPS.get(profile, {}).get(name, []))
        stages[name] = profile_stage(stage, profile)
    plots = []
    for plot in root.get("plots", []):
        for path, options in plot.items():
            plots.append({f"../{remap_path(path, profile)}": options})  # plots are relative to the dvc.yaml
    return {"stages": stages, "plots": plots}


def render(profile: str, root_pipeline: Path = ROOT_PIPELINE) -> str:
    """The text of ``<profile>/dvc.yaml``."""
    root = yaml.safe_load(root_pipeline.read_text())
    head = (
        f"# The `{profile}` profile's pipeline: generated from dvc.yaml by\n"
        f"# `python -m fluxir.orchestration.profile_pipeline {profile}`; do not edit by hand.\n"
        f"# Run it with `dvc repro {profile}/dvc.yaml` (make demo-{profile}); params: {profile}/params.yaml.\n"
    )
    body = yaml.safe_dump(profile_pipeline(root, profile), sort_keys=False, width=110)
    return head + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxir.orchestration.profile_pipeline")
    parser.add_argument("profile", choices=sorted(BASE_STAGES))
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file differs")
    args = parser.parse_args(argv)
    path = Path(args.profile) / "dvc.yaml"
    text = render(args.profile)
    if args.check:
        same = path.is_file() and path.read_text() == text
        if not same:
            print(
                f"{path}: differs from dvc.yaml; run `python -m fluxir.orchestration.profile_pipeline {args.profile}`"
            )
        return 0 if same else 1
    from fluxir.io import write_text_atomic

    write_text_atomic(path, text)
    print(f"{path}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
