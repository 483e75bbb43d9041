"""What ``fluxir restore --adapter`` accepts, resolved to a local adapter folder.

  a folder            the ``save_pretrained`` output of training (config.json, weights, and maybe
                      prompt.safetensors, ema.safetensors), or a downloaded MLflow model folder (MLmodel)
  models:/NAME/VER    an MLflow registered model version (or ``models:/NAME@alias``), ``runs:/RUN/PATH``
                      a logged model or folder of a run: downloaded with ``mlflow.artifacts.download_artifacts``
                      into a temporary folder that lives as long as the restore
  OWNER/NAME          a Hugging Face repo already in the local cache (``snapshot_download(...,
                      local_files_only=True)``): restore never downloads

Each miss is one line naming what was looked for and the fix. A model logged by the train stage
(:mod:`fluxir.restoration.pyfunc`) keeps the adapter folder, the stored prompt and (small bases only) the
base folder as artefacts; they are read from its MLmodel file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fluxir.errors import UserError
from fluxir.models.flux import is_hub_id

MLFLOW_SCHEMES = ("models:/", "runs:/")
ADAPTER_ARTIFACT = "adapter"  # the artefact names of fluxir.restoration.pyfunc
PROMPT_ARTIFACT = "prompt"
BASE_ARTIFACT = "base"
HINT = "pass the train output folder, models:/NAME/VERSION, runs:/RUN_ID/adapter or a Hugging Face repo id"


class AdapterSourceError(UserError, LookupError):
    """An --adapter that names nothing usable; one line saying what was tried."""


@dataclass(frozen=True)
class AdapterSource:
    """A resolved adapter: its folder, a prompt file kept outside it, a base that came with it."""

    folder: Path
    prompt_file: Path | None = None
    base: Path | None = None


@contextmanager
def adapter_source(ref: str, tracking_uri: str | None = None) -> Iterator[AdapterSource]:
    """Resolve ``ref`` (see the module docstring); downloads live until the ``with`` block ends."""
    if ref.startswith(MLFLOW_SCHEMES):
        with tempfile.TemporaryDirectory(prefix="fluxir-adapter-") as tmp:
            yield _from_download(ref, _download(ref, tracking_uri, Path(tmp)))
        return
    path = Path(ref).expanduser()
    if path.is_dir():
        yield _from_download(ref, path) if (path / "MLmodel").is_file() else _folder(ref, path)
        return
    if path.exists():
        raise AdapterSourceError(f"--adapter {ref} is a file, not an adapter folder; {HINT}")
    if is_hub_id(ref):
        yield _folder(ref, _hub_snapshot(ref))
        return
    raise AdapterSourceError(f"{ref} is not an adapter folder (it does not exist); {HINT}")


def _folder(ref: str, folder: Path) -> AdapterSource:
    if not (folder / "config.json").is_file():
        raise AdapterSourceError(f"{ref} is not an adapter folder (no config.json); {HINT}")
    return AdapterSource(folder)


def _download(ref: str, tracking_uri: str | None, dst: Path) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException

    from fluxir.tracking.lineage import resolve_uri

    uri = resolve_uri(tracking_uri or "sqlite:///mlruns.db")
    mlflow.set_tracking_uri(uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(dst)))
    except MlflowException as exc:
        reason = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()[0]
        raise AdapterSourceError(
            f"MLflow has no {ref} at {uri} ({reason}); check the name and version"
        ) from exc


def _from_download(ref: str, folder: Path) -> AdapterSource:
    """An MLflow model folder (MLmodel + artifacts/), or an adapter folder logged as plain artefacts."""
    if not (folder / "MLmodel").is_file():
        return _folder(ref, folder)
    import yaml

    flavor = yaml.safe_load((folder / "MLmodel").read_text()).get("flavors", {}).get("python_function", {})
    artifacts = {k: folder / v["path"] for k, v in (flavor.get("artifacts") or {}).items()}
    if ADAPTER_ARTIFACT not in artifacts:
        raise AdapterSourceError(f"{ref} is an MLflow model without an '{ADAPTER_ARTIFACT}' artefact; {HINT}")
    source = _folder(ref, artifacts[ADAPTER_ARTIFACT])
    prompt = artifacts.get(PROMPT_ARTIFACT)
    base = artifacts.get(BASE_ARTIFACT)
    return AdapterSource(
        source.folder,
        prompt if prompt is not None and prompt.is_file() else None,
        base if base is not None and base.is_dir() else None,
    )


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, or an invalid id: both mean "not here"
        raise AdapterSourceError(
            f"{repo_id} is neither a folder nor a Hugging Face repo in the local cache; run "
            f"`huggingface-cli download {repo_id}` where the hub is reachable, or {HINT}"
        ) from exc
