"""Scale-out of the generate and score stages: index-range shards run anywhere, then gathered.

A shard runs the stage's own code on a slice of the work, in a scratch folder of its own:
  generate  ``python -m fluxir.stages.generate --start S --count C`` with ``generate.out_dir`` = scratch
            (images only; the stage writes no manifest for a range);
  score     ``python -m fluxir.stages.score`` on a slice folder (the slice's manifest plus its images).
With a shared-storage URL (``s3://bucket/prefix``) a shard uploads its scratch folder, and the gatherer
downloads it, so shards can run on other machines (:mod:`fluxir.orchestration.storage`).

Gathering puts the results where the stage itself looks for finished work, then the plain stage runs
under DVC and does only what is left: generate finds every image on disk (no model is loaded) and writes
the manifest; score finds every score in ``<out_dir>/.progress.parquet`` and writes the scored manifest.
The orchestrator runs that last step itself and then ``dvc commit``s the stage (``dvc repro`` would
delete the gathered work before running it); see :func:`fluxir.orchestration.dvc.run_and_commit`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fluxir.orchestration.dvc import run_command, set_option

PROGRESS_NAME = ".progress.parquet"
SLICE_MANIFEST = "manifest.parquet"
RUN_RECORD = "run.json"


class ShardError(RuntimeError):
    """Shard results that cannot be gathered (other settings, a missing part)."""


def split_range(total: int, shards: int, align: int = 1) -> list[tuple[int, int]]:
    """``(start, count)`` of up to ``shards`` contiguous ranges covering ``0 .. total-1``.

    Boundaries fall on multiples of ``align`` (generate's batch size: a batch is rendered whole, so a
    boundary inside one would render it twice). Empty ranges are dropped.
    """
    if total < 0 or shards < 1 or align < 1:
        raise ValueError(f"split_range({total}, {shards}, {align}): need total >= 0, shards >= 1, align >= 1")
    blocks = math.ceil(total / align)
    per, extra = divmod(blocks, shards)
    ranges, block = [], 0
    for i in range(shards):
        n = per + (1 if i < extra else 0)
        start, stop = block * align, min(total, (block + n) * align)
        if stop > start:
            ranges.append((start, stop - start))
        block += n
    return ranges


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""What sets a process's thread pools: OpenMP (torch's intra-op threads follow it), MKL and OpenBLAS."""


def gpu_count() -> int:
    """GPUs this process may use, without importing torch: ``CUDA_VISIBLE_DEVICES`` when set, else the
    driver's list (Linux ``/proc/driver/nvidia/gpus``); 0 without an NVIDIA driver."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def shard_env(index: int, shards: int, cores: int | None = None, gpus: int | None = None) -> dict[str, str]:
    """Environment of local shard ``index`` of ``shards`` running at once on one machine.

    Each gets ``cores // shards`` threads (at least one): N processes each using every core slowed torch
    10-30x. On a GPU machine shard i is pinned to GPU ``i mod gpus`` (its ``CUDA_VISIBLE_DEVICES``), so
    shards spread over the GPUs instead of all landing on the first.
    """
    cores = (os.cpu_count() or 1) if cores is None else cores
    gpus = gpu_count() if gpus is None else gpus
    threads = str(max(1, cores // max(1, shards)))
    env = dict.fromkeys(THREAD_VARIABLES, threads)
    if gpus > 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(gpus)]
        env["CUDA_VISIBLE_DEVICES"] = ids[index % len(ids)]
    return env


def shard_name(start: int, count: int) -> str:
    return f"{start:07d}-{count}"


def _stage_cmd(module: str, params: Path, options: Mapping[str, Any], *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", f"fluxir.stages.{module}", "--params", str(params), "--no-progress", *extra]
    for key, value in options.items():
        cmd += ["--set", set_option(key, value)]
    return cmd


def _absolute_paths(project: Path, overrides: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Path settings made absolute against the project, for a shard running in another folder."""
    from fluxir.config import load_config, to_dict

    cfg = to_dict(load_config(project / "params.yaml", dict(overrides)))
    out = {}
    for key in keys:
        section, name = key.split(".")
        value = cfg[section][name]
        if isinstance(value, str) and value and not os.path.isabs(value):
            out[key] = str(project / value)
    return out


# ----------------------------------------------------------------------------------------------
# generate


def generate_shard(
    project: str | os.PathLike,
    start: int,
    count: int,
    scratch: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Render images ``start .. start+count-1`` into ``scratch`` (the stage's layout); returns a record."""
    project, scratch = Path(project).resolve(), Path(scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    options = {
        **(overrides or {}),
        **_absolute_paths(project, overrides or {}, ["model.tiny_dir", "generate.prompts_file"]),
        "generate.out_dir": str(scratch),
    }
    cmd = _stage_cmd(
        "generate", project / "params.yaml", options, "--start", str(start), "--count", str(count)
    )
    # The scratch folder is the working folder, so nothing the stage writes lands in the project.
    run_command(cmd, scratch, env, on_line)
    images = sorted(p.relative_to(scratch).as_posix() for p in scratch.glob("shard_*/*") if p.is_file())
    return {"start": start, "count": count, "dir": str(scratch), "images": images, "pid": os.getpid()}


def gather_generate(parts: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> int:
    """Move the images of shard folders into the stage's ``out_dir``; returns how many were moved.

    Every part must have been made with the settings already recorded in ``out_dir/run.json`` (if any)
    and with the same settings as each other; an image already in ``out_dir`` is kept.
    """
    out = Path(out_dir)
    records = {str(p): _read_record(Path(p)) for p in parts}
    known = _read_record(out) if (out / RUN_RECORD).is_file() else None
    for part, rec in records.items():
        reference = known if known is not None else next(iter(records.values()))
        if rec != reference:
            diff = sorted(k for k in set(rec) | set(reference) if rec.get(k) != reference.get(k))
            raise ShardError(
                f"shard {part} was made with other settings than {out} ({', '.join(diff)}); "
                f"delete {out} or rerun the shards"
            )
    moved = 0
    for part in parts:
        root = Path(part)
        for src in sorted(root.glob("shard_*/*")):
            if src.is_symlink():  # a shard folder holds rendered files only; a link could point anywhere
                raise ShardError(f"{src}: a link in a shard folder; delete the shard folder and rerun it")
            if not src.is_file() or src.name.startswith("."):
                continue
            dst = out / src.relative_to(root)
            if dst.is_file():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst) if _same_device(src, dst.parent) else shutil.copy2(src, dst)
            moved += 1
    return moved


def _read_record(folder: Path) -> dict[str, Any]:
    path = folder / RUN_RECORD
    if not path.is_file():
        raise ShardError(f"{folder}: no {RUN_RECORD}; the shard did not run")
    return json.loads(path.read_text())


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


# ----------------------------------------------------------------------------------------------
# score


def count_rows(manifest: str | os.PathLike) -> int:
    """Rows of a Parquet manifest, read from its footer."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(manifest).metadata.num_rows


def make_score_slice(manifest: str | os.PathLike, start: int, count: int, folder: str | os.PathLike) -> Path:
    """A self-contained slice: rows ``start .. start+count-1`` of ``manifest`` with their image files.

    Images are hard-linked (copied across file systems) under ``folder`` with their layout relative to
    the manifest's folder, and ``folder/manifest.parquet`` points at them; returns that manifest's path.
    """
    from fluxir.data.manifest import PATH_COLUMN, read_manifest, write_manifest
    from fluxir.data.paths import check_inside

    src_root = Path(manifest).resolve().parent
    df = read_manifest(manifest)
    df = df.sort_values("index", kind="stable").iloc[start : start + count].reset_index(drop=True)
    folder = Path(folder)
    paths = []
    for p in df[PATH_COLUMN]:
        dst = folder / check_inside(src_root, p, f"{manifest}: {p}").resolve().relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            try:
                os.link(p, dst)
            except OSError:
                shutil.copy2(p, dst)
        paths.append(str(dst))
    df[PATH_COLUMN] = paths
    return write_manifest(df, folder / SLICE_MANIFEST, kind=df.attrs.get("kind", "generate"))


def score_shard(
    project: str | os.PathLike,
    slice_dir: str | os.PathLike,
    workdir: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = print,
) -> Path:
    """Score the slice in ``slice_dir`` into ``workdir/out/manifest.parquet``; returns that path."""
    project, workdir = Path(project).resolve(), Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    options = {
        **(overrides or {}),
        **_absolute_paths(project, overrides or {}, ["score.torch_home"]),
        "score.in_manifest": str(Path(slice_dir).resolve() / SLICE_MANIFEST),
        "score.out_dir": str(workdir / "out"),
    }
    run_command(_stage_cmd("score", project / "params.yaml", options), workdir, env, on_line)
    return workdir / "out" / SLICE_MANIFEST


def gather_scores(parts: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> Path:
    """Write the scores of the parts where the score stage resumes from: ``out_dir/.progress.parquet``.

    Rows are keyed by (id, sha256), so the stage reuses a score only for the very same image.
    """
    import pandas as pd

    from fluxir.data.manifest import read_manifest, write_manifest
    from fluxir.data.validate import SCORE_PREFIX

    frames = []
    for part in parts:
        df = read_manifest(part)
        cols = [c for c in df.columns if c.startswith(SCORE_PREFIX)]
        if not cols:
            raise ShardError(f"{part}: no score columns; the score shard did not finish")
        frames.append(df[["id", "sha256", *cols]])
    if not frames:
        raise ShardError("no score shards to gather")
    scores = pd.concat(frames, ignore_index=True).drop_duplicates(["id", "sha256"], keep="last")
    return write_manifest(scores, Path(out_dir) / PROGRESS_NAME, kind="score-progress")
