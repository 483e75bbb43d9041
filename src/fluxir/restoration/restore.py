"""`fluxir restore IN OUT`: restore an image or a folder of images with a trained FluxIR adapter.

A run first plans, from file names and image headers only (seconds), then loads the model for what is
left to do. Everything the plan can see is refused or skipped before minutes of model loading:

* **One file**: OUT is the output image (``.png``, ``.jpg``, ``.jpeg`` or ``.webp``), or a folder (one
  that exists, or a name without a suffix) that receives ``<name>.png``. Anything that stops the file
  from being restored (an OUT suffix the writer cannot encode, an unreadable or corrupt image, an
  oversized output) is a one-line error, exit 2.
* **A folder**: every image under it (by :data:`IMAGE_SUFFIXES`, recursive) goes to
  ``OUT/<relative path>.png``. Hidden entries (a name starting with ``.``, or anything inside such a
  folder: ``.git/``, ``.DS_Store``, macOS ``._*`` resource forks, temp files) are not part of the
  folder's content and are ignored; every other file is listed as skipped with its reason. A run never
  stops at one bad file: each unreadable or unusable image is skipped and reported, and outputs that
  already exist are kept (rerun after a crash to finish the rest; ``--overwrite`` redoes them).
* **Clashes**: two inputs that would be restored to the same output (``a.png`` and ``a.jpg`` both
  become ``a.png``), or an output that would replace an input, refuse the whole run up front (exit 2,
  naming both): renaming is the user's choice, and a silently renamed output would change name as the
  folder changes.
* **Size**: an input whose header declares more than ``restore.max_input_pixels`` is refused before
  decoding (a decompression bomb), and one whose output (its size x ``restore.scale``) would be more than
  ``restore.max_output_pixels`` is refused unless ``--force``: the message names the size, the limit and
  the tile count (a 6000 x 4000 photo at x4 is 486 tiles of 1024 px: hours on a CPU).

* **A write that fails** (a full disk, a read-only folder) stops the run: a full disk does not get better
  for the next file. The summary of what was done is printed, then one line naming the output and the
  error (exit 1 for the machine's: ENOSPC, EDQUOT, EROFS); finished outputs are kept, the failed one
  is not left half-written, and a rerun does the rest.

Exit status: 0 when every image was restored or kept, :data:`SKIPPED_EXIT` (3) when a folder run skipped
any file (after printing the summary, so scripts can tell), 2 when the run was refused, 1 when the
machine stopped it (a full disk).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from fluxir.data.images import IMAGE_SUFFIXES, OUTPUT_SUFFIXES
from fluxir.errors import UserError, printable
from fluxir.restoration.tiling import tile_starts

SKIPPED_EXIT = 3
"""Exit status of a folder run that skipped any file; the summary above it names each with its reason."""

# The pipeline's output grid (PIXELS_PER_TOKEN in fluxir.restoration.pipeline: 8x VAE x 2x2 latent
# packing). Not imported from there: counting tiles to refuse a job must not cost a torch import.
TILE_GRID = 16


class RestoreError(UserError, ValueError):
    """A restore run that cannot start (bad arguments, missing input); printed as one line."""


class RestoreStopped(UserError):
    """A run stopped by a write that would fail for every later file too (a full disk, a read-only or
    unwritable folder); ``report`` holds what was done, ``exit_status`` is the path error's (1 for the
    machine's: ENOSPC, EDQUOT, EROFS)."""

    def __init__(self, message: str, exit_status: int, report: RestoreReport) -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.report = report


@dataclass
class RestoreReport:
    restored: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # outputs already present from an earlier run
    skipped: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class RestorePlan:
    """What a run will do, decided from names and headers before any model is loaded."""

    todo: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output) to restore
    kept: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _supported_inputs() -> str:
    return ", ".join(sorted(IMAGE_SUFFIXES))


def is_hidden(path: Path, root: Path) -> bool:
    """Whether ``path`` or a folder between ``root`` and it is hidden (its name starts with a dot)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def unsupported_reason(path: Path) -> str | None:
    """Why a file in an input folder is not restored by its suffix, or None for an image suffix."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return None
    what = f"unsupported file type '{suffix}'" if suffix else "no file suffix"
    return f"{what}; restore reads {_supported_inputs()} (convert it to one of them)"


def collect_inputs(source: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The images to restore and the other files found with the reason each is not restored.

    A file is taken as it is (its content decides); a folder gives every non-hidden file under it,
    sorted and recursive.
    """
    if source.is_file():
        return [source], []
    if not source.is_dir():
        raise RestoreError(f"input {source} does not exist; pass an image file or a folder of images")
    images, others = [], []
    for path in sorted(p for p in source.rglob("*") if p.is_file() and not is_hidden(p, source)):
        reason = unsupported_reason(path)
        if reason is None:
            images.append(path)
        else:
            others.append((path, reason))
    return images, others


def output_path(source: Path, image: Path, out: Path) -> Path:
    """Where the restored ``image`` goes: OUT (or OUT/<name>.png) for a file, else OUT/<relative path>.png."""
    if source.is_file():
        return out / (image.stem + ".png") if out.is_dir() or not out.suffix else out
    return (out / image.relative_to(source)).with_suffix(".png")


def check_output_suffix(target: Path) -> None:
    """Refuse an output file the writer cannot encode, before any work (it would fail only at the end)."""
    if target.suffix.lower() not in OUTPUT_SUFFIXES:
        raise RestoreError(
            f"{target}: '{target.suffix}' is not an image type restore can write; "
            f"end OUT with {', '.join(OUTPUT_SUFFIXES)}, or give a folder"
        )


def refuse_clashes(pairs: list[tuple[Path, Path]]) -> None:
    """Refuse a run where two inputs would be restored to one output, or an output would replace an input."""
    inputs = {image.resolve() for image, _ in pairs}
    claimed: dict[Path, Path] = {}
    clashes: list[str] = []
    for image, target in pairs:
        key = target.resolve()
        if key in claimed:
            clashes.append(
                f"{target}: {claimed[key]} and {image} would both be restored there (outputs are named "
                "<input name>.png); rename one of them"
            )
        elif key in inputs:
            clashes.append(f"{target}: restoring {image} would replace an input image; choose another OUT")
        claimed.setdefault(key, image)
    if clashes:
        others = len(clashes) - 1
        more = f" ({others} more clash{'es' if others > 1 else ''})" if others else ""
        raise RestoreError(clashes[0] + more)


def header_size(image: Path) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding a pixel; None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(image) as im:
            return im.size
    except Exception:  # unreadable headers are reported by the decoder with a precise reason
        return None


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    """Tiles the pipeline restores for a ``height`` x ``width`` output (its layout on the 16 px grid)."""
    rows, cols = (
        len(tile_starts(-(-side // TILE_GRID), tile // TILE_GRID, overlap // TILE_GRID))
        for side in (height, width)
    )
    return rows * cols


def size_problem(image: Path, options, force: bool = False) -> str | None:
    """Why ``image`` is too large to restore, from its header only, or None.

    ``options`` is the restore config: its input limit always applies (a decompression bomb), its output
    limit unless ``force``.
    """
    size = header_size(image)
    if size is None:
        return None
    width, height = size
    if width * height > options.max_input_pixels:
        return (
            f"{width}x{height} px is more than restore.max_input_pixels={options.max_input_pixels}; "
            "raise it if the machine has the memory"
        )
    out_w, out_h = width * options.scale, height * options.scale
    if force or out_w * out_h <= options.max_output_pixels:
        return None
    tiles = tile_count(out_h, out_w, options.tile, options.overlap)
    return (
        f"the x{options.scale} output would be {out_w}x{out_h} px ({out_w * out_h / 1e6:.3g} MP, {tiles} "
        f"tile{'s' if tiles != 1 else ''} of {options.tile} px), more than "
        f"restore.max_output_pixels={options.max_output_pixels}; pass --force to restore it anyway, "
        "or raise restore.max_output_pixels, or lower --scale"
    )


def plan_restore(
    source: Path, out: Path, options, overwrite: bool = False, force: bool = False
) -> RestorePlan:
    """Decide every input's fate from names and headers; raise RestoreError for a run that cannot start."""
    images, others = collect_inputs(source)
    if not images:
        extra = f" ({len(others)} other files)" if others else ""
        raise RestoreError(f"no images ({_supported_inputs()}) found under {source}{extra}")
    pairs = [(image, output_path(source, image, out)) for image in images]
    if source.is_file():
        check_output_suffix(pairs[0][1])
    refuse_clashes(pairs)
    plan = RestorePlan(skipped=list(others))
    for image, target in pairs:
        if target.exists() and not overwrite:
            plan.kept.append(target)
        elif (problem := size_problem(image, options, force)) is not None:
            plan.skipped.append((image, problem))
        else:
            plan.todo.append((image, target))
    return plan


def restore_paths(pipeline, plan: RestorePlan, options) -> RestoreReport:
    """Restore what ``plan`` has to do; return a RestoreReport (never raises per file)."""
    from fluxir.data.images import ImageDecodeError, load_rgb, write_image_atomic
    from fluxir.restoration.pipeline import RestoreInputError

    report = RestoreReport(kept=list(plan.kept), skipped=list(plan.skipped))
    for image, target in tqdm(plan.todo, desc="restore", unit="img", disable=len(plan.todo) < 2):
        try:
            lq = load_rgb(image)
            restored = pipeline(lq, options, progress=len(plan.todo) == 1)
        except (ImageDecodeError, RestoreInputError) as exc:
            report.skipped.append((image, str(exc)))
            continue
        try:
            write_image_atomic(target, restored)  # whole or not at all: no partial file under its name
        except OSError as exc:
            raise _write_stopped(exc, target, report, len(plan.todo)) from exc
        report.restored.append(target)
    return report


def _write_stopped(exc: OSError, target: Path, report: RestoreReport, total: int) -> OSError | RestoreStopped:
    """A failed write as RestoreStopped (one line naming the output, what was done), or ``exc`` as it is
    when the error is not a known file-system one. A full disk does not get better for the next file, so
    the run stops rather than skip every remaining file."""
    from fluxir.errors import path_error

    named = OSError(exc.errno, exc.strerror, exc.filename or str(target))  # a write() error names no file
    known = path_error(named)
    if known is None:
        return exc
    status, line = known
    done = len(report.restored)
    return RestoreStopped(
        f"{line}; stopped after restoring {done} of {total} image(s), rerun the same command to do the rest",
        status,
        report,
    )


def print_report(report: RestoreReport) -> int:
    """Print the summary line and every skipped file with its reason; return the run's exit status."""
    print(f"restored {len(report.restored)}, kept {len(report.kept)} existing, skipped {len(report.skipped)}")
    for path, reason in sorted(report.skipped):
        print(f"  skipped {printable(path)}: {printable(reason)}")  # one line each, whatever the name holds
    return SKIPPED_EXIT if report.skipped else 0


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
    parser.add_argument(
        "--force",
        action="store_true",
        help="restore outputs larger than restore.max_output_pixels (many tiles: hours on a CPU)",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file for defaults")


def run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    plan = plan_restore(args.input, args.output, cfg.restore, args.overwrite, args.force)
    if args.input.is_file():  # a single bad file fails before minutes of model loading
        _refuse_single_file(args.input, plan)
    if not plan.todo:  # everything kept or skipped: no model to load
        return print_report(RestoreReport(kept=plan.kept, skipped=plan.skipped))
    from fluxir.restoration.sources import adapter_source

    try:
        with adapter_source(args.adapter, cfg.tracking.uri) as source:
            report = _restore(args, cfg, source, plan)
    except RestoreStopped as exc:
        if not args.input.is_file():
            print_report(exc.report)  # what was done and skipped so far, then the one error line
        raise
    if args.input.is_file() and report.skipped:
        raise RestoreError(f"{report.skipped[0][0]}: {report.skipped[0][1]}")
    return print_report(report)


def _config(args: argparse.Namespace):
    from fluxir.config import apply_override, config_from_dict, load_config

    overrides = {
        f"restore.{name}": getattr(args, name) for name in RESTORE_FLAGS if getattr(args, name) is not None
    }
    if args.dtype is not None:
        overrides["model.dtype"] = DTYPE_FLAGS[args.dtype]
    if args.params.is_file():
        return load_config(args.params, overrides)
    raw: dict = {}  # outside a project folder: built-in defaults plus the flags
    for dotted, value in overrides.items():
        apply_override(raw, dotted, value)
    return config_from_dict(raw)


def _refuse_single_file(image: Path, plan: RestorePlan) -> None:
    """One line for a lone input the plan skipped or that does not decode, before the model loads."""
    from fluxir.data.images import ImageDecodeError, load_rgb

    if plan.skipped:
        raise RestoreError(f"{image}: {plan.skipped[0][1]}")
    if plan.todo:
        try:
            load_rgb(image)
        except ImageDecodeError as exc:
            raise RestoreError(f"{image}: {exc}") from exc


def _restore(args: argparse.Namespace, cfg, source, plan: RestorePlan) -> RestoreReport:
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
    return restore_paths(pipeline, plan, r)
