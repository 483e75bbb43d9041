"""`fluxir models ...`: build the tiny FLUX model, check a base model folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="<subcommand>", required=True)
    build = sub.add_parser(
        "build-tiny",
        help="Write a tiny random-weight FLUX pipeline (diffusers format) to OUT_DIR.",
        description="Write a tiny random-weight FLUX pipeline (diffusers format) to OUT_DIR. "
        "For plumbing checks on CPU: it is not a quality model.",
    )
    build.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    build.add_argument("--seed", type=int, default=0, help="weight seed; the same seed gives identical files")
    check = sub.add_parser("check", help="Check that a base model folder or hub id loads, and describe it.")
    check.add_argument("base", metavar="DIR_OR_ID")


def run(args: argparse.Namespace) -> int:
    if args.models_command == "build-tiny":
        from fluxir.models.tiny import save_tiny_pipeline

        out = save_tiny_pipeline(args.out_dir, seed=args.seed)
        print(f"wrote tiny FLUX pipeline (seed {args.seed}) to {out}")
        return 0
    if args.models_command == "check":
        from fluxir.models.flux import load_flux

        pipe = load_flux(args.base)
        t = pipe.transformer.config
        n = sum(p.numel() for p in pipe.transformer.parameters())
        print(
            f"{args.base}: FluxPipeline, transformer {t.num_layers} double + {t.num_single_layers} single blocks, "
            f"hidden {t.num_attention_heads * t.attention_head_dim}, {n / 1e6:.3f}M parameters"
        )
        return 0
    raise AssertionError(args.models_command)
