"""`fluxir restore IN OUT`: restore an image or a folder of images with a trained FluxIR adapter.

A folder run never stops at one bad file: each unreadable or unusable image is skipped and reported
with its reason, and outputs that already exist are kept (rerun after a crash to finish the rest).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from fluxir.data.images import IMAGE_SUFFIXES
from fluxir.errors import UserError


class RestoreError(UserError, ValueError):
    """A restore run that cannot start (bad arguments, missing input); printed as one line."""


@dataclass
class RestoreReport:
    restored: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # outputs already present from an earlier run
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def collect_inputs(source: Path) -> list[Path]:
    """The images to restore: the file itself, or every image file under a folder (sorted, recursive)."""
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    raise RestoreError(f"input {source} does not exist; pass an image file or a folder of images")


def output_path(source: Path, image: Path, out: Path) -> Path:
    """Where the restored ``image`` goes: ``out`` for a single file, else out/<relative path>.png."""
    if source.is_file():
        return out if out.suffix else out / (image.stem + ".png")
    return (out / image.relative_to(source)).with_suffix(".png")


def check_size(image: Path, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` before decoding any pixel."""
    from PIL import Image

    from fluxir.data.images import ImageDecodeError

    try:
        with Image.open(image) as im:
            width, height = im.size
    except Exception:  # unreadable headers are reported by the decoder with a precise reason
        return
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{width}x{height} px is more than restore.max_input_pixels={max_pixels}; "
            "raise it if the machine has the memory"
        )


def restore_paths(pipeline, source: Path, out: Path, options, max_pixels: int, overwrite: bool = False):
    """Restore every image of ``source`` into ``out``; return a RestoreReport (never raises per file)."""
    from fluxir.data.images import ImageDecodeError, load_rgb, write_image_atomic
    from fluxir.restoration.pipeline import RestoreInputError

    report = RestoreReport()
    images = collect_inputs(source)
    for image in tqdm(images, desc="restore", unit="img", disable=len(images) < 2):
        target = output_path(source, image, out)
        if target.exists() and not overwrite:
            report.kept.append(target)
            continue
        try:
            check_size(image, max_pixels)
            lq = load_rgb(image)
            restored = pipeline(lq, options, progress=len(images) == 1)
        except (ImageDecodeError, RestoreInputError) as exc:
            report.skipped.append((image, str(exc)))
            continue
        write_image_atomic(target, restored)
        report.restored.append(target)
    return report


DTYPE_FLAGS = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# Flags that override a restore.* setting of the same name for this run.
RESTORE_FLAGS = (
    "steps",
    "tile",
    "overlap",
    "scale",
    "seed",
    "color_fix",
    "tile_mode",
    "tile_batch",
    "offload",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="IN", help="an LQ image file or a folder of images")
    parser.add_argument("output", type=Path, metavar="OUT", help="output image file, or output folder")
    parser.add_argument(
        "--adapter",
        required=True,
        help="trained adapter: a folder (the train output), models:/NAME/VERSION or runs:/RUN_ID/adapter "
        "(MLflow), or a Hugging Face repo id in the local cache",
    )
    parser.add_argument("--base", help="base FLUX folder or hub id (default: model.base from params)")
    parser.add_argument("--steps", type=int, help="Euler sampling steps (default: restore.steps, 20)")
    parser.add_argument("--tile", type=int, help="tile size in output pixels, multiple of 16")
    parser.add_argument("--overlap", type=int, help="tile overlap in output pixels, multiple of 16")
    parser.add_argument("--scale", type=int, help="upscaling factor (default: restore.scale, 4)")
    parser.add_argument("--seed", type=int, help="noise seed")
    parser.add_argument(
        "--color-fix",
        dest="color_fix",
        choices=("wavelet", "adain", "none"),
        help="colours from the bicubic upscale (default: restore.color_fix)",
    )
    parser.add_argument(
        "--tile-mode",
        dest="tile_mode",
        choices=("fused", "per_tile"),
        help="fused: tiles share one latent trajectory; per_tile: tiles restored alone, pixels blended",
    )
    parser.add_argument(
        "--tile-batch", dest="tile_batch", type=int, help="fused tiles per model call (0: auto)"
    )
    parser.add_argument(
        "--offload",
        choices=("none", "model", "sequential"),
        help="keep weights on the CPU until a component (model) or a layer (sequential) runs",
    )
    parser.add_argument("--dtype", choices=tuple(DTYPE_FLAGS), help="weight dtype (default: model.dtype)")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file for defaults")


def run(args: argparse.Namespace) -> int:
    from fluxir.config import apply_override, config_from_dict, load_config
    from fluxir.restoration.sources import adapter_source

    overrides = {
        f"restore.{name}": getattr(args, name) for name in RESTORE_FLAGS if getattr(args, name) is not None
    }
    if args.dtype is not None:
        overrides["model.dtype"] = DTYPE_FLAGS[args.dtype]
    if args.params.is_file():
        cfg = load_config(args.params, overrides)
    else:  # outside a project folder: built-in defaults plus the flags
        raw: dict = {}
        for dotted, value in overrides.items():
            apply_override(raw, dotted, value)
        cfg = config_from_dict(raw)
    images = collect_inputs(args.input)  # fail on a missing input before loading any model
    if not images:
        raise RestoreError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {args.input}")
    if args.input.is_file():  # a single bad file fails before minutes of model loading
        from fluxir.data.images import ImageDecodeError, load_rgb

        try:
            check_size(args.input, cfg.restore.max_input_pixels)
            load_rgb(args.input)
        except ImageDecodeError as exc:
            raise RestoreError(f"{args.input}: {exc}") from exc
    with adapter_source(args.adapter, cfg.tracking.uri) as source:
        report = _restore(args, cfg, source)
    if args.input.is_file() and report.skipped:
        raise RestoreError(f"{report.skipped[0][0]}: {report.skipped[0][1]}")
    print(f"restored {len(report.restored)}, kept {len(report.kept)} existing, skipped {len(report.skipped)}")
    for path, reason in report.skipped:
        print(f"  skipped {path}: {reason}")
    return 0


def _restore(args: argparse.Namespace, cfg, source) -> RestoreReport:
    from fluxir.models.flux import DTYPES, pick_device, resolve_base
    from fluxir.restoration.pipeline import FluxIRPipeline

    # An explicit --base wins; else a base that came with an MLflow model; else model.base.
    base = args.base or (
        str(source.base) if source.base else resolve_base(cfg.model.base, cfg.model.tiny_dir)
    )
    r = cfg.restore
    pipeline = FluxIRPipeline.from_pretrained(
        base,
        source.folder,
        dtype=DTYPES[cfg.model.dtype],
        device=pick_device(cfg.model.device),
        offload=r.offload,
        prompt_file=source.prompt_file,
    )
    return restore_paths(pipeline, args.input, args.output, r, r.max_input_pixels, args.overwrite)
