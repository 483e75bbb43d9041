"""Stage manifests: one pandas DataFrame per stage output, stored as Parquet.

A manifest has one row per image. Its ``path`` column is absolute in memory and stored relative to
the manifest's own folder on disk, so a data folder can move (or be checked out by DVC elsewhere)
without rewriting manifests. Reading checks every row (:mod:`fluxir.data.paths`): ids are plain names and
every path lies inside the data root, the folder holding the stage folders (the manifest folder's parent
unless the caller names another), so a hostile manifest can neither read nor write elsewhere.
``DataFrame.attrs`` round-trip through the Parquet metadata; stages use
them for facts about the whole table (``kind``, the metrics and their directions).

Writes are atomic (temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd

from fluxir.data.paths import UnsafePathError, check_id, check_inside
from fluxir.errors import UserError
from fluxir.io import write_bytes_atomic

MANIFEST_NAME = "manifest.parquet"
PATH_COLUMN = "path"
FILE_COLUMNS = (PATH_COLUMN, "hq_path", "lq_path")
"""Columns holding files of the stage's own output (a pair has two), stored relative to the manifest.
Other path-like columns (e.g. ``origin_path``, relative to an ingested folder) are kept as they are."""


REJECTED_KIND = "rejected"
"""Manifest kind of the files a stage skipped, with the reason."""


def path_columns(df: pd.DataFrame) -> list[str]:
    """The columns of ``df`` that hold stage files (see FILE_COLUMNS)."""
    return [c for c in FILE_COLUMNS if c in df.columns]


def shard_relpath(index: int, shard_size: int, image_format: str = "png") -> str:
    """Where image ``index`` lives inside a stage's folder, e.g. ``shard_002/0000017.png``."""
    return f"shard_{index // shard_size:03d}/{index:07d}.{image_format}"


class ManifestError(UserError, ValueError):
    """A manifest that is missing, unreadable or invalid; the message is one line."""


def _absolute(path: str | os.PathLike) -> Path:
    # absolute() rather than resolve(): keep symlinked data folders as the user named them.
    return Path(os.path.normpath(Path(path).absolute()))


def read_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read a Parquet manifest; its path columns come back as absolute paths (str).

    Ids must be plain names and every path must lie inside ``root`` (default: the folder above the
    manifest's own, where the stages' folders are siblings); else UnsafePathError naming the row.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; run the stage that writes it first")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise ManifestError(f"{path}: not a readable Parquet manifest ({type(exc).__name__}: {exc})") from exc
    df = df.reset_index(drop=True)
    base = _absolute(path).parent
    data_root = _absolute(root) if root is not None else base.parent
    if "id" in df.columns:
        for i, value in enumerate(df["id"]):
            check_id(value, f"{path} row {i}")
    if df.attrs.get("kind") == REJECTED_KIND:
        # a record of the source files a stage skipped (a user's photo folder, anywhere): never read as
        # an input, so its paths are made absolute for the reader but not confined to the data folder
        for column in path_columns(df):
            df[column] = [None if p is None else os.path.normpath(base / p) for p in df[column]]
        return df
    for column in path_columns(df):
        df[column] = [
            _inside(data_root, base, p, f"{path} row {i} {column}") for i, p in enumerate(df[column])
        ]
    return df


def _inside(data_root: Path, base: Path, stored: object, where: str) -> str | None:
    if stored is None or (not isinstance(stored, str) and pd.isna(stored)):
        return None
    if not isinstance(stored, str) or not stored or Path(stored).is_absolute():
        raise UnsafePathError(f"{where}: {stored!r} must be a path relative to the manifest's folder")
    return str(check_inside(data_root, base / stored, where))


def write_manifest(df: pd.DataFrame, path: str | os.PathLike, kind: str | None = None) -> Path:
    """Write ``df`` to ``path`` atomically; path columns are stored relative to the manifest's folder.

    ``kind`` (e.g. 'generate') is recorded in ``df.attrs['kind']``; other attrs are kept as they are.
    """
    path = Path(path)
    out = df.reset_index(drop=True).copy()
    out.attrs = dict(df.attrs)
    if kind is not None:
        out.attrs["kind"] = kind
    base = _absolute(path).parent
    for column in path_columns(out):
        out[column] = [None if pd.isna(p) else os.path.relpath(_absolute(p), base) for p in out[column]]
    buf = io.BytesIO()
    out.to_parquet(buf, index=False)
    return write_bytes_atomic(path, buf.getvalue())
