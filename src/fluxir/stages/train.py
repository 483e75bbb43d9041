"""Stage train: fit the FluxIR adapter on the degraded pairs (paper section 3.3) with DeepSpeed ZeRO.

    python -m fluxir.stages.train [--params params.yaml] [--set train.max_steps=100 ...]   (one process)
    torchrun --nproc_per_node N -m fluxir.stages.train ...                                 (N processes)
    deepspeed --num_gpus N --module fluxir.stages.train ...                                (N GPUs)
    fluxir train ...

A rerun resumes from the newest complete checkpoint in ``<train.out_dir>/checkpoints`` and continues to
``train.max_steps``. Outputs: ``<out_dir>/adapter/`` (save_pretrained; `fluxir restore --adapter` reads
it), ``<report_dir>/loss.csv`` and ``val.csv`` (DVC plots), ``<report_dir>/metrics.json``.
"""

from __future__ import annotations

import argparse
import logging

from fluxir.stages import add_common_arguments, load_stage_config, run_stage, setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    # The deepspeed launcher appends --local_rank=N; the rank is read from the environment instead.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    cfg = load_stage_config(args)
    setup_logging()
    from fluxir.train.build import build_trainer  # torch, diffusers, deepspeed: only when training

    trainer = build_trainer(cfg)
    if not trainer.world.is_main:
        logging.getLogger("fluxir").setLevel(logging.WARNING)
    from fluxir.tracking.lineage import stage_run

    with stage_run("train", cfg):  # child of the pipeline run (rank 0); the trainer logs into it
        state = trainer.train()
        if trainer.world.is_main and cfg.train.track:
            _publish(cfg, trainer)
    if trainer.world.is_main:
        last = state.history[-1] if state.history else {}
        print(
            f"train: {state.step} steps, final loss {last.get('loss', float('nan')):.5f}; "
            f"adapter in {trainer.out_dir / 'adapter'}"
        )
    _close_process_group()
    return 0


def _publish(cfg, trainer) -> None:
    """The adapter as a registered MLflow model version (fluxir.train.publish); like all tracking, a
    failure is a warning and never fails the stage."""
    from fluxir.train.publish import publish_adapter

    try:
        publish_adapter(cfg, trainer.out_dir / "adapter", trainer.prompt)
    except Exception as exc:  # noqa: BLE001 - the adapter on disk is the stage's output either way
        logging.getLogger("fluxir").warning(
            "MLflow: adapter not registered (%s: %s)", type(exc).__name__, exc
        )


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    return run_stage("train", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
