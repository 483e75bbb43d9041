"""Stage build-model: make the base model available to the rest of the pipeline.

With ``model.base: tiny`` it builds the random-weight FLUX-architecture pipeline (seeded, bitwise
reproducible) into ``model.tiny_dir``. With a real base (hub id or folder) nothing is built: the stage
only records which base the run uses, so DVC reruns everything downstream when the base changes.
Either way it writes ``data/models/base.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fluxir.config import ModelConfig
from fluxir.io import write_text_atomic
from fluxir.models.flux import TINY
from fluxir.stages import add_common_arguments, run_stage, tracked_stage

BASE_RECORD = Path("data/models/base.json")


def build_model(cfg: ModelConfig) -> dict:
    """Build the tiny model when asked for; return a record of the base the pipeline will use."""
    if cfg.base == TINY:
        from fluxir.models.tiny import save_tiny_pipeline

        save_tiny_pipeline(cfg.tiny_dir, seed=cfg.tiny_seed)
        return {
            "base": TINY,
            "path": cfg.tiny_dir,
            "seed": cfg.tiny_seed,
            "quality": "random weights: plumbing only",
        }
    return {"base": cfg.base, "path": cfg.base, "seed": None, "quality": "real weights"}


def write_record(record: dict, path: Path = BASE_RECORD) -> None:
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with tracked_stage("build-model", args) as cfg:  # a child of the pipeline's MLflow run, if any
        record = build_model(cfg.model)
        write_record(record)
    print(f"build-model: base {record['base']} at {record['path']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage("build-model", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
