"""After training: the adapter becomes an MLflow model and a version of the registered model (process 0).

:func:`publish_adapter` logs the adapter folder as a pyfunc model (:mod:`fluxir.restoration.pyfunc`) into
the run the trainer logged to, with the trained empty-prompt embeddings as an artefact, then registers it
as a new version of ``tracking.registered_model`` tagged with the git SHA, the dvc.lock hash, the profile
and the adapter digest, and points the alias ``candidate`` at it (:mod:`fluxir.tracking.registry`).
``champion`` is never moved here: ``fluxir models promote VERSION`` does that.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fluxir.config import Config, to_dict
from fluxir.models.adapter_files import PROMPT_FILE

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from fluxir.train.trainer import Prompt

log = logging.getLogger(__name__)


def _save_prompt(prompt: Prompt, folder: Path) -> Path:
    from safetensors.torch import save_file

    from fluxir.models.adapter_files import PROMPT_KEYS

    tensors = (prompt.embeds, prompt.pooled, prompt.text_ids)
    path = folder / PROMPT_FILE
    save_file(
        {k: t.detach().cpu().contiguous() for k, t in zip(PROMPT_KEYS, tensors, strict=True)}, str(path)
    )
    return path


def publish_adapter(
    config: Config, adapter: str | Path, prompt: Prompt | None, run_id: str | None = None
) -> ModelVersion | None:
    """Log ``adapter`` as a pyfunc model into run ``run_id`` (default: the last run this process logged to)
    and register it; returns the new version, or None when ``tracking.registered_model`` is ''."""
    import mlflow

    from fluxir.models.flux import resolve_base
    from fluxir.restoration.pyfunc import log_adapter_model
    from fluxir.tracking.lineage import profile_of, resolve_uri
    from fluxir.tracking.registry import CANDIDATE, DIGEST_TAG, register
    from fluxir.tracking.runs import lineage_tags

    uri = resolve_uri(config.tracking.uri)
    mlflow.set_tracking_uri(uri)
    if run_id is None:
        last = mlflow.last_active_run()
        if last is None:
            raise RuntimeError("no MLflow run to log the adapter into (train.track is off?)")
        run_id = last.info.run_id
    restore = to_dict(config)["restore"]
    with tempfile.TemporaryDirectory(prefix="fluxir-publish-") as tmp:
        prompt_file = _save_prompt(prompt, Path(tmp)) if prompt is not None else None
        with mlflow.start_run(run_id=run_id):
            info = log_adapter_model(
                adapter,
                config.model.base,
                resolve_base(config.model.base, config.model.tiny_dir),
                restore,
                prompt_file=prompt_file,
                dtype=config.model.dtype,
                metadata={"profile": profile_of(config)},
            )
    name = config.tracking.registered_model
    if not name:
        log.info("adapter logged as %s (tracking.registered_model is '': not registered)", info.model_uri)
        return None
    lineage = lineage_tags(".")
    tags = {
        "git.sha": lineage["git.sha"],
        "git.dirty": lineage["git.dirty"],
        "dvc.lock.sha256": lineage.get("dvc.lock.sha256", "absent"),
        "profile": profile_of(config),
        DIGEST_TAG: info.metadata["adapter_sha256"],
        "train.run_id": run_id,
    }
    version = register(info.model_uri, name, tags, alias=CANDIDATE)
    log.info("adapter registered as %s version %s (alias %s)", name, version.version, CANDIDATE)
    return version
