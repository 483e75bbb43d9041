"""One training run per output folder: an exclusive lock beside ``train.out_dir``, held for the whole run.

Two runs in one folder would interleave their rows in ``loss.csv`` and overwrite each other's checkpoints.
So the first process of a run (the launcher's rank 0; the other ranks share its folder) takes a
non-blocking ``flock`` on ``<parent>/.<name>.fluxir-lock`` and the second run stops at once with one line
naming the folder and the first run's pid (exit 2).

- Beside the folder, not in it: the folder's contents are DVC outputs, and a stray file in them would
  change their hash. The name starts with a dot and never ends in ``.fluxir-tmp``, so the project's
  cleanup of partial writes (:func:`fluxir.io.remove_partial_writes`) never removes a held lock.
- The kernel releases a ``flock`` when its process ends, however it ends (``kill -9`` included), so a
  crashed run never blocks the next one. The file itself stays, holding the pid of the last run that took
  it: removing it on exit would let a third run lock a new file while a second still waits on the old one.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fluxir.errors import UserError, printable

LOCK_SUFFIX = ".fluxir-lock"


class OutDirBusy(UserError):
    """Another training run holds ``train.out_dir``; one line naming the folder and its pid (exit 2)."""


def lock_path(out_dir: str | os.PathLike) -> Path:
    """``<parent>/.<name>.fluxir-lock`` for the folder ``out_dir`` (resolved: two spellings of one folder,
    through a link or ``..``, share one lock)."""
    folder = Path(out_dir).resolve()
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


@contextmanager
def hold_out_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``out_dir`` for the block; :class:`OutDirBusy` at once if another run holds it."""
    path = lock_path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise OutDirBusy(
                f"train.out_dir={printable(out_dir)}: another training run (pid {_holder(fd)}) is using "
                f"this folder (lock {printable(path)}); wait for it to end, or set another train.out_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """The pid the holder wrote into the lock file ('unknown' in the instant before it writes it)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"
