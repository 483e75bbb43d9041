"""Stage build-model: make the base model available to the rest of the pipeline.

With ``model.base: tiny`` it builds the random-weight FLUX-architecture pipeline (seeded, bitwise
reproducible) into ``model.tiny_dir``. With a real base (hub id or folder) nothing is built: the stage
only records which base the run uses, so DVC reruns everything downstream when the base changes.
Either way it writes ``data/models/base.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fluxir.config import ModelConfig, load_config
from fluxir.models.flux import TINY

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    from fluxir.tracking.lineage import stage_run

    with stage_run("build-model", cfg):  # a child of the pipeline's MLflow run (none outside a pipeline)
        record = build_model(cfg.model)
        write_record(record)
    print(f"build-model: base {record['base']} at {record['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
