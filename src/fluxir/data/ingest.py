"""Ingest a folder of real photos (DIV2K, LSDIR, ...) as RGB images in the shard layout.

Every regular file under the folder is considered (recursively, hidden files skipped, symlinked
folders not followed), in sorted path order. Files with the same bytes are kept once (the first by
path). Each file is decoded by :func:`fluxir.data.images.decode_image`, which converts what can be
converted (grayscale, 16-bit, CMYK, RGBA, palette, EXIF rotation); files that are empty, not images,
truncated, corrupt, of an unsupported mode or smaller than the minimum size are listed in a rejected
table with the reason, and never stop the ingest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fluxir.data.images import ImageDecodeError, decode_image, encode_image
from fluxir.data.manifest import shard_relpath
from fluxir.io import sha256_bytes, write_bytes_atomic

FILE_FORMATS = {"png": "PNG", "jpg": "JPEG"}


@dataclass
class _Candidate:
    path: Path
    rel: str
    sha: str
    data: bytes


def _list_files(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Every regular file under ``folder``, sorted, skipping hidden files and folders (no symlink loops)
    and ``exclude`` (the output folder, should it sit inside the input)."""
    files = []
    skip = os.path.abspath(exclude) if exclude is not None else None
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and os.path.abspath(os.path.join(root, d)) != skip
        )
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
    return sorted(f for f in files if f.is_file())


def _read(path: Path) -> tuple[bytes | None, str | None]:
    try:
        return path.read_bytes(), None
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"


def _decode_and_encode(data: bytes, fmt: str, min_short: int, min_long: int) -> tuple[Any, ...]:
    """(bytes to write, width, height, note) or (None, reason)."""
    try:
        decoded = decode_image(data)
    except ImageDecodeError as exc:
        return None, str(exc)
    except Exception as exc:  # a malformed file can trip any decoder bug; one file never stops the ingest
        return None, f"undecodable ({type(exc).__name__}: {str(exc)[:200]})"
    h, w = decoded.rgb.shape[:2]
    if min(h, w) < min_short or max(h, w) < min_long:
        return None, f"too small: {w}x{h} (needs sides of at least {min_short} and {min_long})"
    return encode_image(decoded.rgb, fmt), w, h, decoded.note


def ingest_folder(
    input_dir: Path,
    out_dir: Path,
    *,
    shard_size: int,
    image_format: str = "png",
    min_short_side: int = 1,
    min_long_side: int = 1,
    workers: int = 1,
    known: dict[str, dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
    checkpoint: Callable[[list[dict[str, Any]]], None] | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Convert every usable photo under ``input_dir`` to an RGB image in ``out_dir``; never fails on one file.

    Returns ``(rows, rejected)``: one manifest row per accepted photo, and one ``{path, reason, sha256}``
    per skipped file (empty, not an image, truncated or corrupt, unsupported mode, too small, duplicate
    content). ``known`` maps a source file's sha256 to its row from an earlier run: such photos are
    not decoded again. New photos get indices after the largest known one, in sorted path order.
    """
    known = dict(known or {})
    meta = meta or {}
    fmt = FILE_FORMATS[image_format]
    files = _list_files(input_dir, exclude=out_dir)
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    first_seen: dict[str, str] = {}
    next_index = max((r["index"] for r in known.values()), default=-1) + 1
    since_checkpoint = 0
    chunk = 4 * workers  # bounds memory: at most this many encoded photos in flight
    bar = tqdm(total=len(files), unit="file", desc="ingest", disable=not progress)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for lo in range(0, len(files), chunk):
            paths = files[lo : lo + chunk]
            candidates: list[_Candidate] = []
            for path, (data, error) in zip(paths, pool.map(_read, paths), strict=True):
                rel = path.relative_to(input_dir).as_posix()
                if data is None:
                    rejected.append({"path": str(path), "reason": error, "sha256": None})
                    continue
                sha = sha256_bytes(data)
                if sha in first_seen:
                    reason = f"duplicate of {first_seen[sha]}"
                    rejected.append({"path": str(path), "reason": reason, "sha256": sha})
                    continue
                first_seen[sha] = rel
                if sha in known:
                    rows.append(known[sha])
                elif not data:
                    rejected.append({"path": str(path), "reason": "empty file (0 bytes)", "sha256": sha})
                else:
                    candidates.append(_Candidate(path, rel, sha, data))
            results = pool.map(
                lambda c: _decode_and_encode(c.data, fmt, min_short_side, min_long_side), candidates
            )
            for cand, result in zip(candidates, results, strict=True):
                if result[0] is None:
                    rejected.append({"path": str(cand.path), "reason": result[1], "sha256": cand.sha})
                    continue
                encoded, w, h, note = result
                k, next_index = next_index, next_index + 1
                dst = out_dir / shard_relpath(k, shard_size, image_format)
                write_bytes_atomic(dst, encoded)
                rows.append(
                    {
                        "id": f"{k:07d}",
                        "index": k,
                        "path": str(dst),
                        "seed": None,
                        "prompt": "",
                        "width": w,
                        "height": h,
                        "sha256": sha256_bytes(encoded),
                        "origin_path": cand.rel,
                        "origin_sha256": cand.sha,
                        "note": note,
                        **meta,
                    }
                )
                since_checkpoint += 1
            bar.update(len(paths))
            if checkpoint is not None and since_checkpoint >= shard_size:
                checkpoint(rows)
                since_checkpoint = 0
    bar.close()
    return rows, rejected
