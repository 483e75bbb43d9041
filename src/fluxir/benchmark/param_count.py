"""`fluxir params`: count FluxIR adapter parameters at a base model's shape, beside the paper's Table 2.

Nothing is downloaded and no weights are allocated: the base transformer is built on the meta device from
its config (FLUX.1-dev's is below; ``--base DIR`` reads a local one) and the adapter from it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fluxir.models.flux import FLUX_DEV, ModelNotFoundError

# black-forest-labs/FLUX.1-dev transformer/config.json (architecture keys).
FLUX_DEV_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
FLUX_DEV_MAX_SEQUENCE_LENGTH = 512  # FluxPipeline's T5 length for FLUX.1-dev

TABLE2_RANKS: tuple[int | None, ...] = (16, 32, 64, 128, None)  # None = full rank
# Table 2 (millions): the adapter without SE layers, and the SE layers per rank.
PAPER_WITHOUT_SE_M = 387.0
PAPER_SE_M: dict[int | None, float] = {16: 11.6, 32: 22.8, 64: 45.2, 128: 90.0, None: 1076.2}


def load_base_config(base: str) -> tuple[str, dict]:
    """(name, transformer config) for 'flux-dev' (or its hub id), 'tiny', or a local folder.

    A folder may be a diffusers pipeline (its ``transformer/config.json`` is read) or a transformer folder.
    """
    if base in ("flux-dev", FLUX_DEV):
        return "flux-dev", dict(FLUX_DEV_TRANSFORMER)
    if base == "tiny":
        from fluxir.models.tiny import TINY_TRANSFORMER

        return "tiny", dict(TINY_TRANSFORMER)
    folder = Path(base).expanduser()
    for path in (folder / "transformer" / "config.json", folder / "config.json"):
        if path.is_file():
            config = json.loads(path.read_text())
            if config.get("_class_name", "FluxTransformer2DModel") != "FluxTransformer2DModel":
                raise ModelNotFoundError(
                    f"{path} describes a {config['_class_name']}, not a FluxTransformer2DModel"
                )
            return str(folder), config
    raise ModelNotFoundError(
        f"--base {base}: expected 'flux-dev', 'tiny', or a folder holding transformer/config.json or config.json"
    )


def _is_flux_dev_shape(config: dict) -> bool:
    keys = [k for k in FLUX_DEV_TRANSFORMER if k not in ("patch_size", "axes_dims_rope")]
    return all(config.get(k) == FLUX_DEV_TRANSFORMER[k] for k in keys)


def count_rows(
    config: dict,
    ranks: tuple[int | None, ...],
    control: str = "se",
    text_control: bool = True,
    learnable_embeddings: bool = True,
    max_sequence_length: int = FLUX_DEV_MAX_SEQUENCE_LENGTH,
) -> tuple[int, list[dict]]:
    """Base parameter count and one row of adapter counts per rank, with Table 2's values where they apply."""
    from diffusers import FluxTransformer2DModel

    from fluxir.models.adapter import FluxIRAdapter, count_parameters

    with torch.device("meta"):
        transformer = FluxTransformer2DModel.from_config(config)
    paper = (
        _is_flux_dev_shape(config)
        and control == "se"
        and text_control
        and learnable_embeddings
        and max_sequence_length == FLUX_DEV_MAX_SEQUENCE_LENGTH
    )
    rows = []
    for rank in ranks:
        adapter = FluxIRAdapter.from_flux(
            transformer,
            rank=rank,
            control=control,
            text_control=text_control,
            learnable_embeddings=learnable_embeddings,
            max_sequence_length=max_sequence_length,
        )
        counts = count_parameters(adapter)
        rows.append(
            {
                "rank": "full" if adapter.config.rank is None else adapter.config.rank,
                **counts,
                "paper_without_se_M": PAPER_WITHOUT_SE_M if paper else None,
                "paper_se_M": PAPER_SE_M.get(rank) if paper else None,
            }
        )
    return sum(p.numel() for p in transformer.parameters()), rows


def _rank(text: str) -> int | None:
    if text == "full":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive integer or 'full'")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base",
        default="flux-dev",
        help="'flux-dev' (built-in FLUX.1-dev shapes), 'tiny', or a local pipeline/transformer folder",
    )
    ranks = parser.add_mutually_exclusive_group()
    ranks.add_argument("--rank", type=_rank, default=32, help="SE rank, or 'full' (default 32)")
    ranks.add_argument("--all-ranks", action="store_true", help="Table 2's ranks: 16, 32, 64, 128, full")
    parser.add_argument("--control", choices=("se", "single_mlp"), default="se", help="Table 5 variant")
    parser.add_argument("--no-text-control", action="store_true", help="without SE_p (Table 6)")
    parser.add_argument(
        "--no-learnable-embeddings", action="store_true", help="without theta_p, theta_y (Table 6)"
    )
    parser.add_argument(
        "--max-sequence-length",
        type=int,
        default=FLUX_DEV_MAX_SEQUENCE_LENGTH,
        help="T5 length (theta_p rows)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from fluxir.config import ConfigError

    if args.control == "single_mlp" and args.all_ranks:
        raise ConfigError("--all-ranks: control 'single_mlp' is one full-rank MLP and has no rank")
    if args.max_sequence_length < 1:
        raise ConfigError(f"--max-sequence-length={args.max_sequence_length}: must be positive")
    name, config = load_base_config(args.base)
    variant = {
        "control": args.control,
        "text_control": not args.no_text_control,
        "learnable_embeddings": not args.no_learnable_embeddings,
        "max_sequence_length": args.max_sequence_length,
    }
    ranks = TABLE2_RANKS if args.all_ranks else (args.rank,)
    base_parameters, rows = count_rows(config, ranks, **variant)
    if args.json:
        print(
            json.dumps(
                {"base": name, "base_parameters": base_parameters, "variant": variant, "rows": rows}, indent=2
            )
        )
        return 0

    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    print(
        f"FluxIR adapter for {name}: base transformer {base_parameters / 1e9:.2f}B parameters, hidden {hidden}, "
        f"{config['num_layers']} double + {config['num_single_layers']} single blocks"
    )
    print("variant: " + ", ".join(f"{k} {v}" for k, v in variant.items()))
    print(f"{'rank':>6} {'w/o SE [M]':>12} {'paper':>7} {'SE [M]':>10} {'paper':>8} {'total [M]':>11}")
    for row in rows:
        paper_wo = f"{row['paper_without_se_M']:g}" if row["paper_without_se_M"] is not None else "-"
        paper_se = f"{row['paper_se_M']:g}" if row["paper_se_M"] is not None else "-"
        print(
            f"{row['rank']!s:>6} {row['without_se'] / 1e6:12.2f} {paper_wo:>7} {row['se'] / 1e6:10.2f} "
            f"{paper_se:>8} {row['total'] / 1e6:11.2f}"
        )
    return 0
