"""The MLflow model registry of trained adapters: versions, their lineage tags, and aliases moved by command.

A trained adapter is logged by the train stage as an ``mlflow.pyfunc`` model and registered as a version of
``tracking.registered_model`` (``fluxir-adapter``); :func:`register` tags the version and points the alias
``candidate`` at it. ``champion`` moves only through :func:`promote` (``fluxir models promote VERSION``),
never as a side effect of training or benchmarking.

A version is found from an adapter folder by the digest of its weights and config (:func:`adapter_digest`,
the tag ``adapter.sha256``): the benchmark stage scores a folder, and :func:`link_benchmark` ties its
run to the version that folder is.

MLflow is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxir.errors import UserError
from fluxir.io import sha256_file

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from fluxir.config import Config

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
"""Alias set on every new version: the newest trained adapter, not yet judged."""
CHAMPION = "champion"
"""Alias moved only by an explicit promote: the adapter people should use."""
DIGEST_TAG = "adapter.sha256"
BENCHMARK_RUN_TAG = "benchmark.run_id"
# Tags the benchmark run gets; the MLflow UI shows them beside the metrics.
RUN_MODEL_TAGS = ("fluxir.model.name", "fluxir.model.version", "fluxir.model.id")
# Files that decide what an adapter computes; README.md (the model card) is left out, so rewriting the
# card never makes the same weights look like another model.
_DIGEST_GLOBS = ("config.json", "*.safetensors")
_REF = re.compile(r"^(?:v(?:ersion)?\s*)?(\d+)$", re.IGNORECASE)


class RegistryError(UserError, LookupError):
    """A registered model, version or alias that does not exist; one line naming it."""


def adapter_digest(folder: str | Path) -> str:
    """sha256 over the names and hashes of an adapter folder's config.json and safetensors files."""
    folder = Path(folder)
    files = sorted({p for pattern in _DIGEST_GLOBS for p in folder.glob(pattern) if p.is_file()})
    if not files:
        raise RegistryError(f"{folder} holds no adapter (config.json, *.safetensors)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def version_uri(name: str, ref: str) -> str:
    """``models:/name/3`` for a version number (``3``, ``v3``), else ``models:/name@alias``."""
    match = _REF.match(ref.strip())
    return f"models:/{name}/{match.group(1)}" if match else f"models:/{name}@{ref.strip()}"


def _client(uri: str | None) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri) if uri else MlflowClient()


def register(
    source: str,
    name: str,
    tags: Mapping[str, Any],
    alias: str = CANDIDATE,
    uri: str | None = None,
) -> ModelVersion:
    """Register the logged model at ``source`` (``models:/<model id>``) as a new version of ``name``
    with ``tags``; point ``alias`` at it."""
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)
    version = mlflow.register_model(source, name, tags={k: str(v) for k, v in tags.items()})
    if not alias:
        return version
    client = _client(uri)
    client.set_registered_model_alias(name, alias, version.version)
    return client.get_model_version(name, version.version)  # now with its alias


def get_version(name: str, ref: str, uri: str | None = None) -> ModelVersion:
    """The version ``ref`` (a number, or an alias) of ``name``; RegistryError when there is none."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    match = _REF.match(ref.strip())
    try:
        if match:
            return client.get_model_version(name, match.group(1))
        return client.get_model_version_by_alias(name, ref.strip())
    except MlflowException as exc:
        what = f"version {match.group(1)}" if match else f"alias {ref.strip()!r}"
        raise RegistryError(f"registered model {name!r} has no {what} ({_first_line(exc)})") from exc


def promote(name: str, ref: str, alias: str = CHAMPION, uri: str | None = None) -> tuple[str, str | None]:
    """Point ``alias`` at version ``ref`` of ``name``; returns (new version, version it pointed at before)."""
    from mlflow.exceptions import MlflowException

    target = get_version(name, ref, uri)
    client = _client(uri)
    try:
        before: str | None = client.get_model_version_by_alias(name, alias).version
    except MlflowException:  # the alias is new
        before = None
    client.set_registered_model_alias(name, alias, target.version)
    return target.version, before


def find_by_digest(name: str, digest: str, uri: str | None = None) -> ModelVersion | None:
    """The newest version of ``name`` tagged with this adapter digest, or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = _client(uri).search_model_versions(f"name = '{name}' and tags.`{DIGEST_TAG}` = '{digest}'")
    except MlflowException:  # no such registered model yet
        return None
    return max(found, key=lambda v: int(v.version), default=None)


def link_benchmark(
    name: str, adapter: str | Path, run_id: str, uri: str | None = None
) -> ModelVersion | None:
    """Tie benchmark run ``run_id`` to the registered version of the adapter folder it scored.

    The run gets the tags of :data:`RUN_MODEL_TAGS` and the version the tag ``benchmark.run_id``. Returns
    the version, or None when the folder was never registered (trained without tracking, say).
    """
    if not name or not Path(adapter).is_dir():
        return None
    version = find_by_digest(name, adapter_digest(adapter), uri)
    if version is None:
        return None
    client = _client(uri)
    values = (name, version.version, logged_model_id(version) or "")
    for key, value in zip(RUN_MODEL_TAGS, values, strict=True):
        client.set_tag(run_id, key, value)
    client.set_model_version_tag(name, version.version, BENCHMARK_RUN_TAG, run_id)
    return version


def logged_model_id(version: ModelVersion) -> str | None:
    """The id of the MLflow logged model a version was registered from (``models:/<id>`` sources).

    The SQL store leaves ``ModelVersion.model_id`` empty on versions registered by URI; the id is the source.
    """
    model_id = getattr(version, "model_id", None)
    if model_id:
        return model_id
    source = version.source or ""
    rest = source.removeprefix("models:/")
    return rest if rest != source and rest.startswith("m-") and "/" not in rest else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def scored_model(cfg: Config, run_id: str) -> Iterator[ModelVersion | None]:
    """Around a benchmark run's logging: link run ``run_id`` to the registered version of
    ``benchmark.adapter`` (:func:`link_benchmark`) and make that version's logged model MLflow's active
    model, so the metrics logged inside are recorded against it. Yields the version (None: not linked).

    A benchmark without the fluxir method, or of an adapter never registered, is not linked; a tracking
    error is a warning, never a failed benchmark.
    """
    import mlflow

    version = None
    if "fluxir" in cfg.benchmark.methods:
        try:
            version = link_benchmark(cfg.tracking.registered_model, cfg.benchmark.adapter, run_id)
        except Exception as exc:  # noqa: BLE001 - tracking must not stop the benchmark
            from fluxir.tracking import policy

            # a warning, and a note in the benchmark's tracking.json
            what = "to link the benchmark to its model version"
            policy.lost("benchmark", str(mlflow.get_tracking_uri()), exc, what=what)
    model_id = logged_model_id(version) if version is not None else None
    if model_id is None:
        yield version
        return
    mlflow.set_active_model(model_id=model_id)
    try:
        yield version
    finally:
        mlflow.clear_active_model()
