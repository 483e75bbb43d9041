"""Files written whole or not at all, and content hashes.

Every file the project writes goes through :func:`write_bytes_atomic` (or one of its typed wrappers,
or :func:`atomic_path` for a writer that wants a file name: a download, safetensors): the bytes go to a
temp file in the destination folder, are flushed to disk, then ``os.replace`` moves the file into place.
A killed process leaves the old file, the new file, or a stray temp file named
``.<name>.<random>.fluxir-tmp``, which :func:`remove_partial_writes` deletes; never a half-written file
under the real name. The temp suffix is the project's own (not a plain ``.tmp``, which editors and
other tools use too), so cleanup never touches a user's files. A folder built beside its destination is moved into place by :func:`replace_dir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

TMP_SUFFIX = ".fluxir-tmp"
"""Suffix of in-flight temp files (``.<name>.<random>.fluxir-tmp``); only such files are ever cleaned up."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """A temp file beside ``path`` for a writer that needs a file name (a download, safetensors).

    When the block ends without an error the file is flushed to disk, given ``mode`` (default: what a
    plain ``open()`` would give, the umask's) and moved onto ``path``; otherwise it is deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename must not land before the bytes (power loss, not SIGKILL)
        finally:
            os.close(fd)
        if mode is None:  # mkstemp creates 0600
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, mode: int | None = None) -> Path:
    """UTF-8 text, atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2, mode: int | None = None) -> Path:
    """JSON with sorted keys and a trailing newline (stable bytes for DVC), atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n"
    return write_text_atomic(path, text, mode)


def write_csv_atomic(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """A DataFrame as CSV without the index, atomically."""
    return write_text_atomic(path, frame.to_csv(index=False))


def write_parquet_atomic(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """A DataFrame as Parquet without the index, atomically."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return write_bytes_atomic(path, buf.getvalue())


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move the finished folder ``src`` onto ``dst`` (same file system).

    An existing ``dst`` is renamed aside first and deleted after, so ``dst`` is always the old folder
    whole or the new one whole, never a mix.
    """
    src, dst = Path(src), Path(dst)
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst


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


def remove_partial_writes(folder: str | os.PathLike, subfolders: Sequence[str] | None = None) -> int:
    """Delete temp files an interrupted atomic write left under ``folder``; return how many.

    Only this project's temp files (``.*`` + :data:`TMP_SUFFIX`, plain files, not links) are removed.
    With ``subfolders`` (glob patterns such as ``"shard_*"``) only ``folder`` itself and the trees of
    the matching subfolders are searched: the folders the stage writes, not whatever else a user keeps
    in an ``out_dir`` they pointed at an existing folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    pattern = f".*{TMP_SUFFIX}"
    if subfolders is None:
        found = list(folder.rglob(pattern))
    else:
        found = list(folder.glob(pattern))
        for sub in subfolders:
            found += [
                p for d in folder.glob(sub) if d.is_dir() and not d.is_symlink() for p in d.rglob(pattern)
            ]
    removed = 0
    for tmp in found:
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink()
            removed += 1
    return removed
