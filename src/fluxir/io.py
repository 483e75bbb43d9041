"""Files written whole or not at all, and content hashes.

Every file the project writes goes through :func:`write_bytes_atomic` (or one of its typed wrappers):
the bytes go to a temp file in the destination folder, are flushed to disk, then ``os.replace`` moves
the file into place. A killed process leaves the old file, the new file, or a stray temp file named
``.<name>.<random>.tmp``, which :func:`remove_partial_writes` deletes; never a half-written file
under the real name. The temp prefix and suffix are the project's own, so cleanup never touches a
user's files.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

TMP_SUFFIX = ".tmp"
"""Suffix of in-flight temp files; only files ending in it are ever cleaned up."""


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the bytes (power loss, not SIGKILL)
        # mkstemp creates 0600; give the file the mode a plain open() would (the umask's)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text, atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """JSON with sorted keys and a trailing newline (stable bytes for DVC), atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


def write_csv_atomic(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """A DataFrame as CSV without the index, atomically."""
    return write_text_atomic(path, frame.to_csv(index=False))


def write_parquet_atomic(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """A DataFrame as Parquet without the index, atomically."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return write_bytes_atomic(path, buf.getvalue())


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def remove_partial_writes(folder: str | os.PathLike) -> int:
    """Delete temp files an interrupted atomic write left under ``folder``; return how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for tmp in folder.rglob(f".*{TMP_SUFFIX}"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink()
            removed += 1
    return removed
