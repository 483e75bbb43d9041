"""Fingerprints of a stage's inputs, for the run records that decide whether a rerun may resume.

Resumable outputs are kept by DVC between runs (``persist: true``), so a stage cannot rely on DVC
deleting them when an input changes: it compares these fingerprints with those its earlier run recorded.
A setting alone is not enough: a base model retrained in place keeps its path, and new training pairs
keep their manifest's name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

WHOLE_FILE_BYTES = 64 << 20
"""Files up to this size are hashed whole (configs, tokenizers, a mini model's weights)."""
SAMPLE_BYTES = 1 << 20
"""Of larger files (a 24 GB transformer), the size and the first and last MiB: retrained or swapped
weights change them, and hashing FLUX.1-dev whole would cost minutes per stage start."""


def file_fingerprint(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        if size <= WHOLE_FILE_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        else:
            digest.update(f.read(SAMPLE_BYTES))
            f.seek(size - SAMPLE_BYTES)
            digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """sha256 over every file's relative path and :func:`file_fingerprint`, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(file_fingerprint(path).encode())
    return digest.hexdigest()


def source_fingerprint(source: str | os.PathLike) -> str:
    """A local file or folder by content; anything else (a Hugging Face id) by its name."""
    path = Path(source)
    if path.is_dir():
        return folder_fingerprint(path)
    if path.is_file():
        return file_fingerprint(path)
    return f"id:{source}"
