"""Stage train: fit the FluxIR adapter on the degraded pairs (paper section 3.3) with DeepSpeed ZeRO.

    python -m fluxir.stages.train [--params params.yaml] [--set train.max_steps=100 ...]   (one process)
    torchrun --nproc_per_node N -m fluxir.stages.train ...                                 (N processes)
    deepspeed --num_gpus N --module fluxir.stages.train ...                                (N GPUs)
    fluxir train ...

A rerun resumes from the newest complete checkpoint in ``<train.out_dir>/checkpoints`` and continues to
``train.max_steps``. Outputs: ``<out_dir>/adapter/`` (save_pretrained; `fluxir restore --adapter` reads
it), ``<report_dir>/loss.csv`` and ``val.csv`` (DVC plots), ``<report_dir>/metrics.json``. One run per
``out_dir`` at a time: a second one stops at once with one line naming the first one's pid
(:mod:`fluxir.train.lock`).
"""

from __future__ import annotations

import argparse
import logging
from contextlib import AbstractContextManager, nullcontext

from fluxir.stages import add_common_arguments, load_stage_config, run_stage, setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    # The deepspeed launcher appends --local_rank=N; the rank is read from the environment instead.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--restart-on-change",
        action="store_true",
        help="if the checkpoints were made with other settings, pairs or base, remove them and start over "
        "(dvc.yaml passes it: DVC keeps the checkpoints between runs so that a killed run resumes)",
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_stage_config(args)
    setup_logging()
    from fluxir.tracking.lineage import is_secondary_rank, stage_run

    # Before anything heavy: the folder is this run's alone (else exit 2), and the MLflow policy (a server
    # that does not answer: exit 1, or untracked); then the child of the pipeline run the trainer logs into.
    with _lock_out_dir(cfg, is_secondary_rank()), stage_run("train", cfg, own_run=cfg.train.track):
        from fluxir.train.build import build_trainer  # torch, diffusers, deepspeed: only when training

        trainer = build_trainer(cfg)
        trainer.restart_on_change = args.restart_on_change
        if not trainer.world.is_main:
            logging.getLogger("fluxir").setLevel(logging.WARNING)
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


def _lock_out_dir(cfg, secondary: bool) -> AbstractContextManager:
    """``train.out_dir`` held by this run (fluxir.train.lock); the other processes of a multi-process run
    share the folder of the first, which holds it for them."""
    if secondary:
        return nullcontext()
    from fluxir.train.lock import hold_out_dir

    return hold_out_dir(cfg.train.out_dir)


def _publish(cfg, trainer) -> None:
    """The adapter as a registered MLflow model version (fluxir.train.publish); like all tracking, a
    failure is a warning (and a note in the stage's report) and never fails the stage. Skipped when the
    run was not tracked: there is no run to publish into, and the warning was given already."""
    from fluxir.tracking import policy
    from fluxir.tracking.lineage import resolve_uri
    from fluxir.train.publish import publish_adapter

    if policy.ran_untracked("train"):
        return
    try:
        publish_adapter(cfg, trainer.out_dir / "adapter", trainer.prompt)
    except Exception as exc:  # noqa: BLE001 - the adapter on disk is the stage's output either way
        policy.lost("train", resolve_uri(cfg.tracking.uri), exc, what="to register the adapter")


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    return run_stage("train", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
