"""Stage pretrain: train the ``mini`` base model here, on CPU, from photos shipped in installed packages.

The ``mini`` profile's pipeline (``mini/dvc.yaml``) starts here instead of the root pipeline's build-model:
a FLUX-layout VAE and a small FLUX transformer (an empty-prompt flow-matching prior) are trained on the
train split of the photo set and saved as a diffusers FluxPipeline folder at ``pretrain.out_dir``, which the
profile's ``model.base`` points at, so every later stage loads it through the same ``load_flux`` as
FLUX.1-dev. The held-out photos (``<photos_dir>/held_out/``) are never seen by any training step; the
profile's benchmark set is made from them. A rerun resumes both trainings from ``pretrain.work_dir``.
"""

from __future__ import annotations

import argparse
import json

from fluxir.config import Config
from fluxir.stages import add_common_arguments, run_stage, tracked_stage
from fluxir.tracking.lineage import log_run_facts
from fluxir.tracking.runs import flatten


def pretrain(cfg: Config) -> dict:
    """Run (or resume) the pretraining; the metrics it reports (held-out VAE PSNR, prior loss)."""
    from fluxir.pretrain.build import run_pretrain

    return run_pretrain(cfg.pretrain)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with tracked_stage("pretrain", args) as cfg:  # a child of the pipeline's MLflow run, if any
        metrics = pretrain(cfg)
        numbers = {k: v for k, v in flatten(metrics).items() if isinstance(v, int | float)}
        log_run_facts("pretrain", numbers)  # the stage's MLflow child run; the files hold them too
    print(f"pretrain: {cfg.pretrain.out_dir}\n{json.dumps(metrics, indent=2)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage("pretrain", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
