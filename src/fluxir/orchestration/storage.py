"""S3 object storage (boto3) for outputs shared between machines: shard results, gathered stage inputs.

Any S3 service works: AWS, MinIO, SeaweedFS (``make services`` starts one on 127.0.0.1). The endpoint comes
from ``endpoint_url`` or the environment (``FLUXIR_S3_ENDPOINT_URL``, then boto3's own
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``); credentials come from boto3's usual chain (environment,
``~/.aws``, instance role) and never from the repository. Downloads are atomic (temp file in the target
folder, then ``os.replace``), so an interrupted transfer never leaves a half-written file under its name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

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

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_url(url: str) -> S3Url:
    """``s3://bucket/some/prefix`` -> S3Url('bucket', 'some/prefix'); anything else raises StorageError."""
    if not url.startswith("s3://"):
        raise StorageError(f"{url!r}: not an S3 URL (expected s3://bucket/prefix)")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"{url!r}: no bucket name")
    return S3Url(bucket, prefix.strip("/"))


def endpoint_url(explicit: str | None = None) -> str | None:
    """The S3 endpoint: ``explicit``, else ``$FLUXIR_S3_ENDPOINT_URL``, else None (boto3 decides)."""
    return explicit or os.environ.get(ENDPOINT_ENV) or None


def client(endpoint: str | None = None) -> Any:
    """A boto3 S3 client; a custom endpoint (SeaweedFS, MinIO) gets path-style addressing."""
    import boto3
    from botocore.config import Config

    url = endpoint_url(endpoint)
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"} if url else {},
        retries={"max_attempts": 5, "mode": "standard"},
    )
    # A new session reads the credentials now; boto3's default session would keep the first ones it saw.
    return boto3.session.Session().client("s3", endpoint_url=url, config=config)


def ensure_bucket(url: str, s3: Any = None) -> None:
    """Create the bucket of ``url`` unless it exists."""
    from botocore.exceptions import ClientError

    s3 = s3 or client()
    bucket = parse_url(url).bucket
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"s3://{bucket}: {exc}") from exc
        s3.create_bucket(Bucket=bucket)


def iter_objects(url: str, s3: Any = None) -> Iterator[tuple[str, int]]:
    """``(key relative to the prefix, size)`` of every object under ``url``."""
    s3 = s3 or client()
    loc = parse_url(url)
    prefix = f"{loc.prefix}/" if loc.prefix else ""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield obj["Key"][len(prefix) :], int(obj["Size"])


def upload_file(path: str | os.PathLike, url: str, s3: Any = None) -> str:
    """Upload one file to the object ``url`` (the full key); returns the URL."""
    s3 = s3 or client()
    loc = parse_url(url)
    s3.upload_file(str(path), loc.bucket, loc.prefix)
    return url


def download_file(url: str, path: str | os.PathLike, s3: Any = None) -> Path:
    """Download the object ``url`` to ``path`` atomically; returns ``path``."""
    s3 = s3 or client()
    loc, path = parse_url(url), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        s3.download_file(loc.bucket, loc.prefix, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def upload_dir(folder: str | os.PathLike, url: str, s3: Any = None, skip_existing: bool = True) -> list[str]:
    """Upload every file under ``folder`` to ``url/<relative path>``; returns the relative paths sent.

    With ``skip_existing`` an object already there with the same size is not sent again (a retried
    shard re-sends only what is missing). Hidden temp files of interrupted writes are never sent.
    """
    s3 = s3 or client()
    loc, root = parse_url(url), Path(folder)
    have = dict(iter_objects(url, s3)) if skip_existing else {}
    sent = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if _is_temp(rel) or have.get(rel) == path.stat().st_size:
            continue
        s3.upload_file(str(path), loc.bucket, loc.key(rel))
        sent.append(rel)
    return sent


def download_prefix(
    url: str, folder: str | os.PathLike, s3: Any = None, skip_existing: bool = True
) -> list[str]:
    """Download every object under ``url`` into ``folder`` (same relative layout); returns what was fetched.

    A local file of the same size is kept (``skip_existing``). Keys that would escape ``folder``
    ('..' parts, absolute keys) raise StorageError.
    """
    s3 = s3 or client()
    loc, root = parse_url(url), Path(folder)
    fetched = []
    for rel, size in iter_objects(url, s3):
        parts = PurePosixPath(rel).parts
        if not rel or rel.startswith("/") or ".." in parts:
            raise StorageError(f"{loc}/{rel}: key escapes the target folder {root}")
        target = root.joinpath(*parts)
        if skip_existing and target.is_file() and target.stat().st_size == size:
            continue
        download_file(str(loc.child(rel)), target, s3)
        fetched.append(rel)
    return fetched


def _is_temp(rel: str) -> bool:
    name = PurePosixPath(rel).name
    return name.startswith(".") and name.endswith((".tmp", ".part"))
