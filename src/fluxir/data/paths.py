"""Ids and paths from data files (manifests, records, shard folders, S3 keys) stay inside their root.

A manifest is input like any other: a row id becomes a file name (``hq/<id>.png``) and a row path is
opened, so a hostile or broken manifest could otherwise write or read anywhere the user can. Ids must be
plain names (:data:`ID_PATTERN`); a path must resolve inside its declared root: no absolute path, and,
after ``..`` parts and symbolic links are followed, still under the root. A violation is one
:class:`UnsafePathError` line naming the row and the fix, which stops the stage.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePath

from fluxir.errors import UserError

ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")
"""A row id: a plain file-name stem (letters, digits, ``_ . -``; not starting with ``.`` or ``-``; at most 200
characters), never ``..``: benchmark ids flattened from nested names (``Canon__Canon_001``) fit."""


class UnsafePathError(UserError, ValueError):
    """An id or path from a data file that would reach outside its root; the message is one line."""


def check_id(value: object, where: str) -> str:
    """``value`` if it is a plain id (see :data:`ID_PATTERN`); UnsafePathError naming ``where`` if not."""
    text = str(value)
    if not ID_PATTERN.fullmatch(text) or ".." in text:
        raise UnsafePathError(
            f"{where}: id {text!r} is not a plain name (letters, digits, _ . -, no '..', at most 200 "
            "characters); fix or remove the row"
        )
    return text


def _normalised(path: Path) -> Path:
    # absolute() + normpath rather than resolve(): keep symlinked data folders as the user named them
    return Path(os.path.normpath(path.absolute()))


def check_inside(root: str | os.PathLike, path: str | os.PathLike, where: str) -> Path:
    """``path`` (absolute, or relative to the working folder) if it lies inside ``root``, links followed.

    For paths already joined with their base (a manifest's absolute paths in memory): both the path as
    written and the file it resolves to (a symbolic link is followed) must be under ``root``.
    """
    base, target = _normalised(Path(root)), _normalised(Path(path))
    if not target.is_relative_to(base) or not target.resolve().is_relative_to(base.resolve()):
        raise UnsafePathError(
            f"{where}: {os.fspath(path)!r} lies outside {os.fspath(root)} (an absolute path, '..' or a "
            "link out); data files may only name files inside their own data folder"
        )
    return target


def resolve_inside(root: str | os.PathLike, relpath: str | os.PathLike, where: str) -> Path:
    """``root / relpath`` if ``relpath`` is relative, has no ``..`` and does not leave ``root`` by a link."""
    rel = PurePath(relpath)
    if rel.is_absolute() or str(relpath).startswith(("/", "\\")) or ".." in rel.parts or not rel.parts:
        raise UnsafePathError(
            f"{where}: {os.fspath(relpath)!r} must be a path relative to {os.fspath(root)} without '..'; "
            "fix or remove the row"
        )
    return check_inside(root, Path(root) / rel, where)
