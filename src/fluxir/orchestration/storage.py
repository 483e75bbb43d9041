"""S3 object storage (s3fs) for outputs shared between machines: shard results, gathered stage inputs.

Any S3 service works: AWS, MinIO, SeaweedFS (``make services`` starts one on 127.0.0.1). The endpoint comes
from ``endpoint_url`` or the environment (``FLUXIR_S3_ENDPOINT_URL``, then botocore's own
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``); credentials come from botocore's usual chain (environment,
``~/.aws``, instance role) and never from the repository. Transfers go through s3fs (the fsspec file
system DVC's S3 remote uses too). Downloads are atomic (:func:`fluxir.io.atomic_path`: a temp file in the
target folder, then ``os.replace``), so an interrupted transfer never leaves a half-written file under its
name; uploads skip the temp files of interrupted writes; a key that would land outside the target folder
is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fluxir.data.paths import UnsafePathError, resolve_inside
from fluxir.io import TMP_SUFFIX, atomic_path

ENDPOINT_ENV = "FLUXIR_S3_ENDPOINT_URL"


class StorageError(RuntimeError):
    """An S3 URL or transfer problem, with the URL in the message."""


@dataclass(frozen=True)
class S3Url:
    """``s3://bucket/prefix`` split into its bucket and key prefix (no leading or trailing slash)."""

    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        """The key of ``parts`` under this prefix, joined with '/'."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    def child(self, *parts: str) -> S3Url:
        return S3Url(self.bucket, self.key(*parts))

    @property
    def path(self) -> str:
        """``bucket/prefix``: the object's (or folder's) path in the s3fs file system."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def __str__(self) -> str:
        return f"s3://{self.path}"


def parse_url(url: str) -> S3Url:
    """``s3://bucket/some/prefix`` -> S3Url('bucket', 'some/prefix'); anything else raises StorageError."""
    if not url.startswith("s3://"):
        raise StorageError(f"{url!r}: not an S3 URL (expected s3://bucket/prefix)")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"{url!r}: no bucket name")
    return S3Url(bucket, prefix.strip("/"))


CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30
"""Per attempt; the committed DVC remote (.dvc/config) uses the same values."""


def endpoint_url(explicit: str | None = None) -> str | None:
    """The S3 endpoint: ``explicit``, else ``$FLUXIR_S3_ENDPOINT_URL``, else None (botocore decides)."""
    return explicit or os.environ.get(ENDPOINT_ENV) or None


def filesystem(endpoint: str | None = None) -> Any:
    """An s3fs file system; a custom endpoint (SeaweedFS, MinIO) gets path-style addressing."""
    import s3fs

    url = endpoint_url(endpoint)
    return s3fs.S3FileSystem(
        endpoint_url=url,
        config_kwargs={
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"} if url else {},
            "retries": {"max_attempts": 5, "mode": "standard"},
            # A dead or hung server fails the transfer in seconds, not botocore's 60 s per attempt.
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": READ_TIMEOUT_SECONDS,
        },
        # A new instance reads the credentials now (a cached one would keep the first it saw), and
        # listings are never cached: another machine's uploads must show at once.
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def ensure_bucket(url: str, fs: Any = None) -> None:
    """Create the bucket of ``url`` unless it exists."""
    fs = fs or filesystem()
    bucket = parse_url(url).bucket
    try:
        fs.makedirs(bucket, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"s3://{bucket}: {exc}") from exc


def iter_objects(url: str, fs: Any = None) -> Iterator[tuple[str, int]]:
    """``(key relative to the prefix, size)`` of every object under ``url`` (folder markers left out)."""
    fs = fs or filesystem()
    root = parse_url(url).path + "/"
    for name, info in fs.find(root.rstrip("/"), detail=True).items():
        if name.startswith(root) and not name.endswith("/"):
            yield name[len(root) :], int(info["size"])


def upload_file(path: str | os.PathLike, url: str, fs: Any = None) -> str:
    """Upload one file to the object ``url`` (the full key); returns the URL."""
    fs = fs or filesystem()
    fs.put_file(str(path), parse_url(url).path)
    return url


def download_file(url: str, path: str | os.PathLike, fs: Any = None) -> Path:
    """Download the object ``url`` to ``path`` atomically; returns ``path``."""
    fs = fs or filesystem()
    with atomic_path(path) as tmp:
        fs.get_file(parse_url(url).path, str(tmp))
    return Path(path)


def upload_dir(folder: str | os.PathLike, url: str, fs: Any = None, skip_existing: bool = True) -> list[str]:
    """Upload every file under ``folder`` to ``url/<relative path>``; returns the relative paths sent.

    With ``skip_existing`` an object already there with the same size is not sent again (a retried
    shard re-sends only what is missing). Hidden temp files of interrupted writes are never sent.
    """
    fs = fs or filesystem()
    loc, root = parse_url(url), Path(folder)
    have = dict(iter_objects(url, fs)) if skip_existing else {}
    sent = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if _is_temp(rel) or have.get(rel) == path.stat().st_size:
            continue
        fs.put_file(str(path), loc.child(rel).path)
        sent.append(rel)
    return sent


def download_prefix(
    url: str, folder: str | os.PathLike, fs: Any = None, skip_existing: bool = True
) -> list[str]:
    """Download every object under ``url`` into ``folder`` (same relative layout); returns what was fetched.

    A local file of the same size is kept (``skip_existing``). A key that would land outside ``folder``
    ('..' parts, an absolute key, a link inside ``folder`` pointing out) raises StorageError.
    """
    fs = fs or filesystem()
    loc, root = parse_url(url), Path(folder)
    fetched = []
    for rel, size in iter_objects(url, fs):
        target = _inside(root, rel, loc)
        if skip_existing and target.is_file() and target.stat().st_size == size:
            continue
        download_file(str(loc.child(rel)), target, fs)
        fetched.append(rel)
    return fetched


def _inside(root: Path, rel: str, loc: S3Url) -> Path:
    """Where the key ``rel`` goes under ``root``; StorageError if that is not inside ``root``."""
    try:
        return resolve_inside(root, rel, f"{loc}/{rel}")  # the one containment rule of every data path
    except UnsafePathError:
        raise StorageError(f"{loc}/{rel}: key escapes the target folder {root}") from None


def _is_temp(rel: str) -> bool:
    """A temp file of an interrupted atomic write (:mod:`fluxir.io`): never worth sending."""
    name = PurePosixPath(rel).name
    return name.startswith(".") and name.endswith(TMP_SUFFIX)
