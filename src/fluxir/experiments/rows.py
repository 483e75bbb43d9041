"""What every ablation table shares: the errors a row may fail on, the generator cache check, row logging."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fluxir.config import Config

ROW_ERRORS = (ValueError, OSError, ImportError)
"""What a row can fail on without it being a bug: params, missing files/weights/models, absent stages."""
STATUS_LENGTH = 5000
"""MLflow tags hold at most this many characters of a row's status."""


def not_cached(cfg: Config) -> str | None:
    """Why a hub generator cannot load offline (None when it is local, cached, or downloads are allowed)."""
    from fluxir.models.flux import is_hub_id
    from fluxir.models.text_to_image import FLUX, model_id

    if cfg.ablate.allow_download or cfg.generate.source == FLUX:
        return None
    repo = model_id(cfg)
    if not is_hub_id(repo):
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo, "model_index.json"), str):
        return None
    return (
        f"{repo} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}); run `huggingface-cli download "
        f"{repo}` where the hub is reachable, or set ablate.allow_download: true"
    )


def log_row(metrics: Mapping[str, float], status_tag: str, status: Any) -> None:
    """Log a row's metrics to the active MLflow run and its status as the tag ``status_tag``."""
    import mlflow

    if metrics:
        mlflow.log_metrics(dict(metrics))
    mlflow.set_tag(status_tag, str(status)[:STATUS_LENGTH])
