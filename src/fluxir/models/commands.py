"""`fluxir models ...`: build the tiny FLUX model, check a base model folder, manage registered adapters.

fluxir models promote VERSION [--alias champion]   move an alias (champion) to a version, by command only
fluxir models list                                 versions of tracking.registered_model, aliases, lineage
fluxir models export VERSION|ALIAS DIR             the version's adapter folder, its card with the
                                                   benchmark table of that version: ready for push_to_hub
"""

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
    promote = sub.add_parser(
        "promote",
        help="Point an alias (default champion) of the registered adapter at VERSION.",
        description="Point an alias of tracking.registered_model at VERSION (a number, or an alias such as "
        "candidate). Aliases move only by this command, never as a side effect of train or benchmark.",
    )
    promote.add_argument("version", metavar="VERSION")
    promote.add_argument("--alias", default="champion", help="alias to move (default: %(default)s)")
    listing = sub.add_parser(
        "list", help="Registered adapter versions with aliases, lineage and benchmark run."
    )
    export = sub.add_parser(
        "export",
        help="Write a registered version's adapter folder with its model card and benchmark table to DIR.",
    )
    export.add_argument("version", metavar="VERSION_OR_ALIAS")
    export.add_argument("out_dir", type=Path, metavar="DIR")
    for registry_parser in (promote, listing, export):
        registry_parser.add_argument(
            "--params", type=Path, default=Path("params.yaml"), help="params file: tracking.* settings"
        )
        registry_parser.add_argument("--name", help="registered model (default: tracking.registered_model)")


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
    if args.models_command in ("promote", "list", "export"):
        from fluxir.models.registry_commands import run_registry_command

        return run_registry_command(args)
    raise AssertionError(args.models_command)
