"""Stage generate: FluxGen step 1, acquire high-quality images (paper section 3.1).

Sources (``generate.source``):
  flux     FluxPipeline from ``model.base`` (the tiny model by default; FLUX.1-dev by id or folder).
           Paper settings: empty prompt, 1024x768, guidance 4, 20 steps.
  sdxl     stabilityai/stable-diffusion-xl-base-1.0 (the Table 4 ablation); any other value is taken
           as a diffusers text-to-image pipeline id or folder.
  folder   ingest real photos from ``generate.input_dir`` (DIV2K, LSDIR, ...): recursive,
           de-duplicated by content hash, odd files converted or rejected with a reason.

Image k uses seed ``seed + k`` and prompt ``k mod len(prompts)``; text embeddings are computed once
per distinct prompt. Batches are aligned to multiples of ``batch_size``, so a rerun after a crash
recomputes exactly the batches of an uninterrupted run and writes only the missing files.

Layout of ``out_dir``:
  shard_000/0000000.png ...  image k lives in shard k // shard_size
  manifest.parquet           one row per image (validated, kind 'generate')
  rejected.parquet           files the 'folder' source skipped, with the reason (kind 'rejected')
  run.json                   the settings the images were made with; a rerun with others stops
  .progress-<tag>-<seq>.parquet
                             rows made since the previous checkpoint, one part each (so bookkeeping is
                             linear: :mod:`fluxir.data.progress`); merged into the manifest, then removed

Every file here and in ``reports/generate/`` is a function of code, params and inputs: a fresh run and a
resumed one write the same bytes. When and how fast images were made (timings, images per second, how
many a resumed run made) goes to the log and MLflow (:func:`~fluxir.tracking.lineage.log_run_facts`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from fluxir.config import Config, ConfigError, GenerateConfig
from fluxir.data.fingerprint import source_fingerprint
from fluxir.data.images import encode_image
from fluxir.data.ingest import FILE_FORMATS, ingest_folder
from fluxir.data.manifest import MANIFEST_NAME, read_manifest, shard_relpath, write_manifest
from fluxir.data.progress import ProgressLog, progress_parts, read_progress, remove_progress
from fluxir.data.validate import validate_manifest
from fluxir.io import remove_partial_writes, sha256_bytes, sha256_file, write_bytes_atomic
from fluxir.models.text_to_image import FLUX, FOLDER, Render, make_render, model_id
from fluxir.stages import add_common_arguments, reports_root, run_stage, tracked_stage
from fluxir.tracking.lineage import log_run_facts

log = logging.getLogger(__spec__.name if __spec__ else __name__)  # "fluxir.stages.*" under python -m too

REJECTED_NAME = "rejected.parquet"
RUN_RECORD = "run.json"


def read_prompts(cfg: GenerateConfig) -> list[str]:
    """The prompt list: the lines of ``prompts_file`` (blank lines skipped), else ``[prompt]``."""
    if not cfg.prompts_file:
        return [cfg.prompt]
    path = Path(cfg.prompts_file)
    if not path.is_file():
        raise ConfigError(f"generate.prompts_file={cfg.prompts_file!r}: file not found")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"generate.prompts_file={cfg.prompts_file!r}: has no prompts (one per line)")
    return prompts


# ----------------------------------------------------------------------------------------------
# Core: text-to-image generation of an index range


def generate_images(
    render: Render,
    out_dir: Path,
    *,
    num_images: int,
    seed: int,
    prompts: Sequence[str],
    batch_size: int,
    shard_size: int,
    image_format: str = "png",
    start: int = 0,
    count: int | None = None,
    known: dict[str, dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
    checkpoint: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], int]:
    """Make images ``start .. start+count-1`` (clipped to ``num_images``) that are not on disk yet.

    Returns ``(rows, made)``: one manifest row per image of the range, whether made now or found on
    disk, and how many were made now. An image on disk keeps its row from ``known`` (keyed by path)
    or, without one, is hashed. ``meta`` is merged into every new row (source, model, width, height).
    ``checkpoint(rows)`` is called after every ``shard_size`` new images with the rows so far (one list
    that only grows: a :class:`~fluxir.data.progress.ProgressLog` writes just its new tail).

    Batches cover ``[b * batch_size, (b + 1) * batch_size)``; a batch with any missing image is
    rendered whole and only its missing images are written, so every image comes out of the same
    batch as in an uninterrupted run (batched and single-image outputs can differ in the last bit).
    """
    known = known or {}
    meta = meta or {}
    stop = num_images if count is None else min(num_images, start + count)
    fmt = FILE_FORMATS[image_format]

    def path_of(k: int) -> Path:
        return out_dir / shard_relpath(k, shard_size, image_format)

    def row(k: int, sha: str | None) -> dict[str, Any]:
        path = path_of(k)
        old = known.get(str(path))
        if sha is None and old is not None:
            return old
        return {
            "id": f"{k:07d}",
            "index": k,
            "path": str(path),
            "seed": seed + k,
            "prompt": prompts[k % len(prompts)],
            "sha256": sha if sha is not None else sha256_file(path),
            "origin_path": None,
            "origin_sha256": None,
            "note": "",
            **meta,
        }

    # Planned one batch at a time: nothing here grows with num_images (10 million requested images cost
    # what 10 do), only the rows of the images that exist.
    to_make = max(stop - start, 0) - count_on_disk(out_dir, start, stop, shard_size, image_format)
    rows: list[dict[str, Any]] = []
    made_now = since_checkpoint = 0
    bar = tqdm(total=to_make, unit="img", desc="generate", disable=not progress or not to_make)
    for b in range(start // batch_size, math.ceil(stop / batch_size) if stop > start else 0):
        members = range(b * batch_size, min((b + 1) * batch_size, num_images))
        todo = {k for k in members if start <= k < stop and not path_of(k).is_file()}
        made: dict[int, str] = {}
        if todo:
            images = render([prompts[k % len(prompts)] for k in members], [seed + k for k in members])
            for k, image in zip(members, images, strict=True):
                if k in todo:
                    data = encode_image(image, fmt)
                    write_bytes_atomic(path_of(k), data)
                    made[k] = sha256_bytes(data)
            bar.update(len(todo))
            made_now += len(todo)
            since_checkpoint += len(todo)
        rows += [row(k, made.get(k)) for k in members if start <= k < stop]
        if checkpoint is not None and since_checkpoint >= shard_size:
            checkpoint(rows)
            since_checkpoint = 0
    bar.close()
    return rows, made_now


def count_on_disk(out_dir: Path, start: int, stop: int, shard_size: int, image_format: str) -> int:
    """How many of images ``start .. stop-1`` are already on disk, from one listing of ``out_dir`` and of
    each shard folder there: memory and time grow with what exists, not with the range asked for."""
    first, last = start // shard_size, (stop - 1) // shard_size
    found = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(out_dir) as shards:
        for shard in shards:
            number = shard.name.removeprefix("shard_")
            if number == shard.name or not number.isdigit() or not first <= int(number) <= last:
                continue
            with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(shard.path) as files:
                for file in files:
                    index = file.name.partition(".")[0]
                    found += (
                        index.isdigit()
                        and start <= int(index) < stop
                        and shard_relpath(int(index), shard_size, image_format) == f"{shard.name}/{file.name}"
                        and file.is_file()
                    )
    return found


def remove_images(out_dir: Path, lo: int, hi: int | None, shard_size: int, image_format: str) -> list[int]:
    """Delete this stage's images with index in ``[lo, hi)`` (``hi`` None: no end); return their indexes.

    Only files named as this stage names image k (``shard_NNN/<k>.<fmt>``) go, from one listing of each
    shard folder that can hold such an index."""
    first, last = lo // shard_size, None if hi is None else (hi - 1) // shard_size
    removed: list[int] = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(out_dir) as shards:
        for shard in shards:
            number = shard.name.removeprefix("shard_")
            if number == shard.name or not number.isdigit() or int(number) < first:
                continue
            if last is not None and int(number) > last:
                continue
            with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(shard.path) as files:
                for file in files:
                    index = file.name.partition(".")[0]
                    if (
                        index.isdigit()
                        and int(index) >= lo
                        and (hi is None or int(index) < hi)
                        and shard_relpath(int(index), shard_size, image_format) == f"{shard.name}/{file.name}"
                        and file.is_file(follow_symlinks=False)
                    ):
                        os.unlink(file.path)
                        removed.append(int(index))
    return removed


def remove_beyond(out_dir: Path, num_images: int, batch_size: int, shard_size: int, image_format: str) -> int:
    """Make the folder what a fresh run of ``num_images`` would make, after an earlier (killed or finished)
    run with a larger ``generate.num_images``: its images with index >= ``num_images`` are deleted (the
    folder is a DVC output and holds exactly the images of its manifest), and so are those of the last,
    now smaller batch if that batch's images beyond ``num_images`` were there (they were rendered in the
    larger batch, and a batch's images can differ in the last bit from those of a smaller one: the rerun
    renders them again, as a fresh run would). Return how many files were deleted."""
    removed = remove_images(out_dir, num_images, None, shard_size, image_format)
    tail = num_images // batch_size * batch_size  # first index of the last batch, if it is now partial
    if tail < num_images and any(k < tail + batch_size for k in removed):
        removed += remove_images(out_dir, tail, num_images, shard_size, image_format)
    return len(removed)


# ----------------------------------------------------------------------------------------------
# Models


# ----------------------------------------------------------------------------------------------
# Stage


def run_record(cfg: Config, prompts: Sequence[str]) -> dict[str, Any]:
    """The settings that decide what the images are; a rerun must match them (num_images may change: a
    whole run with a smaller one removes the images beyond it, see :func:`remove_beyond`)."""
    g = cfg.generate
    common = {
        "source": g.source,
        "model": model_id(cfg),
        "shard_size": g.shard_size,
        "image_format": g.image_format,
    }
    if g.source == FOLDER:
        return common | {"min_short_side": g.min_short_side, "min_long_side": g.min_long_side}
    record = common | {
        "width": g.width,
        "height": g.height,
        "num_inference_steps": g.num_inference_steps,
        "guidance_scale": g.guidance_scale,
        "seed": g.seed,
        "prompts_sha256": sha256_bytes("\n".join(prompts).encode()),
        "dtype": cfg.model.dtype,
        "max_sequence_length": cfg.model.max_sequence_length,
    }
    if g.source == FLUX and cfg.model.base == "tiny":
        record["tiny_seed"] = cfg.model.tiny_seed
    if g.source == FLUX:  # a base retrained or rebuilt in place keeps its path, not its weights
        from fluxir.models.flux import resolve_base  # torch: only for a model source

        record["model_fingerprint"] = source_fingerprint(resolve_base(cfg.model.base, cfg.model.tiny_dir))
    return record


def check_run_record(out_dir: Path, record: dict[str, Any], restart: bool = False) -> None:
    """Write ``run.json`` on first use; later, if the settings differ from those on disk, stop (or, with
    ``restart``, as under ``dvc repro`` whose persisted output this is, remove the earlier run's files and
    start over)."""
    path = out_dir / RUN_RECORD
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [
            f"{k}: {old.get(k)!r} -> {record.get(k)!r}"
            for k in sorted(set(old) | set(record))
            if old.get(k) != record.get(k)
        ]
        if not diff:
            return
        if not restart:
            raise ConfigError(
                f"{out_dir} holds images made with other settings ({'; '.join(diff)}); "
                f"delete {out_dir}, set generate.out_dir to a new folder, or pass --restart-on-change"
            )
        removed = _remove_earlier_run(out_dir)
        log.warning(
            "settings changed (%s): removed %d files of the earlier run, starting over",
            "; ".join(diff),
            removed,
        )
    write_bytes_atomic(path, (json.dumps(record, indent=2) + "\n").encode())


def _remove_earlier_run(out_dir: Path) -> int:
    """Delete what an earlier run of this stage wrote in ``out_dir`` (its images, manifest, progress and
    run record), and nothing else: a user's own files in the folder stay."""
    manifest = out_dir / MANIFEST_NAME
    frames = ([read_manifest(manifest)] if manifest.is_file() else []) + read_progress(out_dir)
    paths = {Path(p) for df in frames for p in df.get("path", pd.Series(dtype=object)) if isinstance(p, str)}
    paths |= {manifest, out_dir / RUN_RECORD, *progress_parts(out_dir)}
    removed = 0
    root = out_dir.resolve()
    for path in paths:
        if path.resolve().is_relative_to(root) and path.is_file():
            path.unlink()
            removed += 1
    return removed


def _load_known(out_dir: Path) -> list[dict[str, Any]]:
    """Rows from the manifest and checkpoints of earlier runs whose image file is still there."""
    manifest = out_dir / MANIFEST_NAME
    frames = ([read_manifest(manifest)] if manifest.is_file() else []) + read_progress(out_dir)
    rows: dict[str, dict[str, Any]] = {}
    for df in frames:
        for r in df.to_dict("records"):
            if isinstance(r.get("path"), str) and os.path.isfile(r["path"]):
                rows[r["path"]] = {k: (None if _isna(v) else v) for k, v in r.items()}
    return list(rows.values())


def _isna(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Manifest rows -> DataFrame sorted by index, with stable dtypes (nullable seed).

    No creation time: the manifest is a DVC output, and the same images must give the same bytes.
    """
    columns = [
        "id", "index", "path", "source", "model", "seed", "prompt", "width", "height",
        "sha256", "origin_path", "origin_sha256", "note",
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=columns)
    df["index"] = df["index"].astype("int64")
    df["seed"] = df["seed"].astype("Int64")
    df["width"] = df["width"].astype("int64")
    df["height"] = df["height"].astype("int64")
    for col in ("origin_path", "origin_sha256"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df.sort_values("index", kind="stable").reset_index(drop=True)


def _progress_tag(start: int, count: int | None) -> str:
    """Parts of a whole run and of each index range (a shard worker) are named apart."""
    return "all" if count is None and start == 0 else f"{start}-{count}"


def _source_kind(source: str) -> str:
    """The manifest's ``source`` column: 'flux', 'folder', or 'diffusers' for any other pipeline."""
    return source if source in (FLUX, FOLDER) else "diffusers"


def _ingest(
    cfg: Config,
    out_dir: Path,
    known_rows: list[dict[str, Any]],
    checkpoint: Callable[[list[dict[str, Any]]], None],
    progress: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    g = cfg.generate
    input_dir = Path(g.input_dir)
    if not input_dir.is_dir():
        raise ConfigError(f"generate.input_dir={g.input_dir!r}: folder not found")
    by_origin = {r["origin_sha256"]: r for r in known_rows if r.get("origin_sha256")}
    rows, rejected = ingest_folder(
        input_dir,
        out_dir,
        shard_size=g.shard_size,
        image_format=g.image_format,
        min_short_side=g.min_short_side,
        min_long_side=g.min_long_side,
        workers=g.workers,
        known=by_origin,
        meta={"source": FOLDER, "model": g.input_dir},
        checkpoint=checkpoint,
        progress=progress,
    )
    return rows, rejected, sum(1 for r in rows if r["origin_sha256"] not in by_origin)


def run_generate(
    cfg: Config,
    start: int = 0,
    count: int | None = None,
    progress: bool = True,
    restart_on_change: bool = False,
) -> dict[str, Any]:
    """Run the stage; with ``start``/``count`` only that index range is made and no manifest is written.

    Returns the summary written to ``reports/generate/summary.json`` (or, for a range, the counts) plus
    this run's facts (``made_now``, ``seconds``, ``model_load_seconds``, ``images_per_second``), which
    go to the log and MLflow but not into the file.
    """
    g = cfg.generate
    out_dir = Path(g.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = remove_partial_writes(out_dir, subfolders=("shard_*",))  # its own folders, not a user's
    if stale:
        log.info("removed %d partial writes left by an interrupted run", stale)
    prompts = read_prompts(g) if g.source != FOLDER else [""]
    check_run_record(out_dir, run_record(cfg, prompts), restart=restart_on_change)
    known_rows = _load_known(out_dir)
    checkpoint = ProgressLog(out_dir, _progress_tag(start, count), "generate-progress", rows_to_frame).append

    t0 = time.perf_counter()
    rejected: list[dict[str, Any]] = []
    load_seconds = 0.0
    if g.source == FOLDER:
        rows, rejected, made = _ingest(cfg, out_dir, known_rows, checkpoint, progress)
    else:
        if start == 0 and count is None:  # a whole run: the folder ends with exactly num_images images
            beyond = remove_beyond(out_dir, g.num_images, g.batch_size, g.shard_size, g.image_format)
            if beyond:
                log.warning(
                    "generate.num_images=%d is smaller than an earlier run's: removed %d of its image(s) "
                    "(index >= %d, and the last batch's if it was rendered larger), so the folder and the "
                    "manifest hold exactly %d images, as a fresh run would",
                    g.num_images, beyond, g.num_images, g.num_images,
                )  # fmt: skip
                known_rows = [r for r in known_rows if os.path.isfile(r["path"])]
        render = make_render(cfg)
        rows, made = generate_images(
            render,
            out_dir,
            num_images=g.num_images,
            seed=g.seed,
            prompts=prompts,
            batch_size=g.batch_size,
            shard_size=g.shard_size,
            image_format=g.image_format,
            start=start,
            count=count,
            known={r["path"]: r for r in known_rows},
            meta={
                "source": _source_kind(g.source),
                "model": model_id(cfg),
                "width": g.width,
                "height": g.height,
            },
            checkpoint=checkpoint,
            progress=progress,
        )
        load_seconds = getattr(render, "load_seconds", 0.0)
    seconds = time.perf_counter() - t0
    work_seconds = seconds - load_seconds  # the rate excludes loading the model
    facts = {
        "made_now": made,
        "seconds": round(seconds, 3),
        "model_load_seconds": round(load_seconds, 3),
        "images_per_second": round(made / work_seconds, 3) if made and work_seconds > 0 else None,
    }
    log_run_facts("generate", facts)
    summary: dict[str, Any] = {"source": g.source, "model": model_id(cfg), "images": len(rows)}
    if count is not None or start > 0:
        summary.update(facts)
        checkpoint(rows)
        log.info(
            "generated range %d..%d: %d images now; run without --start/--count to write the manifest",
            start,
            start + len(rows) - 1,
            made,
        )
        return summary

    df = rows_to_frame(rows)
    reports = reports_root(cfg) / "validation" / "generate"
    validate_manifest(df, "generate", reports, source=out_dir / MANIFEST_NAME, name="manifest")
    write_manifest(df, out_dir / MANIFEST_NAME, kind="generate")
    rejected_df = pd.DataFrame(rejected, columns=["path", "reason", "sha256"])
    validate_manifest(rejected_df, "rejected", reports, source=out_dir / REJECTED_NAME, name="rejected")
    write_manifest(rejected_df, out_dir / REJECTED_NAME, kind="rejected")
    remove_progress(out_dir)
    summary["rejected"] = len(rejected)
    summary["rejected_by_reason"] = dict(Counter(re.split(r" \(|:| of ", r["reason"])[0] for r in rejected))
    summary["note"] = (
        "tiny random-weight model: plumbing only, not quality"
        if cfg.model.base == "tiny" and g.source == FLUX
        else ""
    )
    write_bytes_atomic(
        reports_root(cfg) / "generate" / "summary.json", (json.dumps(summary, indent=2) + "\n").encode()
    )
    summary.update(facts)
    log.info(
        "generate: %d images in %s (%d made now, %.2f img/s), %d files rejected",
        len(rows), out_dir, made, summary["images_per_second"] or 0.0, len(rejected),
    )  # fmt: skip
    for r in rejected:
        log.info("rejected %s: %s", r["path"], r["reason"])
    return summary


# ----------------------------------------------------------------------------------------------
# Entry points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--start", type=int, default=0, help="first image index of a partial run (for workers)"
    )
    parser.add_argument(
        "--count", type=int, default=None, help="images in a partial run; no manifest is written"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--restart-on-change",
        action="store_true",
        help="if out_dir holds images made with other settings or another model, remove them and start over "
        "(dvc.yaml passes it: DVC keeps this output between runs so that a killed run resumes)",
    )


def run(args: argparse.Namespace) -> int:
    if args.start < 0 or (args.count is not None and args.count < 1):
        raise ConfigError(f"--start={args.start} --count={args.count}: need start >= 0 and count >= 1")
    with tracked_stage("generate", args) as cfg:
        run_generate(
            cfg,
            start=args.start,
            count=args.count,
            progress=not args.no_progress,
            restart_on_change=args.restart_on_change,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage("generate", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
